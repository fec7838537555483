//! Which mappings of a QEMU process are guest RAM, and why the others are not.
//!
//! QEMU 7.2 maps each RAM block with one `mmap` of exactly the block's size followed by a
//! 4 KiB `---p` guard page (seen for `-m`, `memory-backend-ram`, `-memfd` and `-file`):
//! - default `-m N` and `memory-backend-ram`: anonymous private `rw-p`, 2 MiB aligned;
//! - `memory-backend-memfd`: `rw-s` of `/memfd:memory-backend-memfd (deleted)`;
//! - `memory-backend-file`: `rw-s` (or `rw-p` with share=off) of the `mem-path` file.
//!
//! The finder lists the RAM blocks the command line (or QMP's `query-memdev`) declares,
//! and for each picks the unused mapping of that kind and size; several equal anonymous
//! blocks (NUMA nodes) are assigned in creation order, highest address first, because QEMU
//! creates backends in command-line order and the kernel hands out addresses top-down.
//! Everything else is listed in [`GuestRam::excluded`] with a reason: the TCG translation
//! buffer (`rwxp`, 1 GiB), the heap, ROM/firmware/ACPI blocks, stacks, libraries.
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::cmdline::{BackendKind, QemuCmdline};
use super::qmp::Memdev;
use crate::error::Error;

const GUARD: u64 = 4096;
const MIB: u64 = 1 << 20;

/// One line of `/proc/PID/maps` (or several adjacent ones merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRegion {
    pub start: u64,
    pub end: u64,
    /// `rw-p`, `rw-s`, `rwxp`, `---p`, ...
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// The path column: a file, `[heap]`, `/memfd:NAME (deleted)`; `None` when anonymous.
    pub path: Option<String>,
}

impl MapRegion {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// MAP_SHARED (`s` in the fourth permission column).
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }
}

impl fmt::Display for MapRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:x}-{:x} {} {:.1} MiB {}",
            self.start,
            self.end,
            self.perms,
            self.len() as f64 / MIB as f64,
            self.path.as_deref().unwrap_or("(anonymous)")
        )
    }
}

/// Parses the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapRegion>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_maps_line(line).with_context(|| format!("maps line {}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn parse_maps_line(line: &str) -> Result<MapRegion> {
    let mut f = line.splitn(6, ' ');
    let mut next = || f.next().context("too few columns");
    let (range, perms, offset, _dev, inode) = (next()?, next()?, next()?, next()?, next()?);
    let path = f.next().map(str::trim).filter(|p| !p.is_empty());
    let (start, end) = range.split_once('-').context("no address range")?;
    let hex = |s: &str| u64::from_str_radix(s, 16).with_context(|| format!("bad hex {s:?}"));
    let region = MapRegion {
        start: hex(start)?,
        end: hex(end)?,
        perms: perms.to_string(),
        offset: hex(offset)?,
        inode: inode.parse().context("bad inode")?,
        path: path.map(str::to_string),
    };
    if region.end < region.start || perms.len() != 4 {
        bail!("not a maps line");
    }
    Ok(region)
}

/// Merges adjacent regions that are one mapping split by the kernel (same permissions and
/// path, contiguous file offsets), e.g. after an madvise on part of guest RAM.
pub fn merge_adjacent(regions: &[MapRegion]) -> Vec<MapRegion> {
    let mut out: Vec<MapRegion> = Vec::with_capacity(regions.len());
    for r in regions {
        if let Some(last) = out.last_mut() {
            let contiguous_file = last.path.is_none() || last.offset + last.len() == r.offset;
            if last.end == r.start
                && last.perms == r.perms
                && last.path == r.path
                && last.inode == r.inode
                && contiguous_file
                && !r.perms.starts_with("---")
            {
                last.end = r.end;
                continue;
            }
        }
        out.push(r.clone());
    }
    out
}

/// A RAM block QEMU should have, from the command line or from QMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedBlock {
    /// Backend id, or `pc.ram` for plain `-m`.
    pub name: String,
    pub size_bytes: u64,
    pub shared: bool,
    pub kind: BackendKind,
    pub mem_path: Option<PathBuf>,
    pub hugetlb: bool,
}

/// The RAM blocks of guest memory: every `memory-backend-*` object, plus the implicit
/// `pc.ram` of `-m` when no backend is the machine's or a NUMA node's memory. With
/// `memdevs` (QMP `query-memdev`, which lists the implicit `pc.ram` too) QMP's ids, sizes and
/// sharing win, and the command line only adds the kind and path.
pub fn expected_blocks(c: &QemuCmdline, memdevs: Option<&[Memdev]>) -> Vec<ExpectedBlock> {
    let from_backend = |b: &super::cmdline::MemoryBackend| ExpectedBlock {
        name: b.id.clone(),
        size_bytes: b.size_bytes,
        shared: b.share,
        kind: b.kind,
        mem_path: b.mem_path.clone(),
        hugetlb: b.hugetlb,
    };
    let implicit = || ExpectedBlock {
        name: "pc.ram".into(),
        size_bytes: c.ram_bytes(),
        shared: false,
        kind: if c.mem_path.is_some() {
            BackendKind::File
        } else {
            BackendKind::Ram
        },
        mem_path: c.mem_path.clone(),
        hugetlb: false,
    };
    if let Some(devs) = memdevs {
        let mut out: Vec<ExpectedBlock> = devs
            .iter()
            .map(|d| {
                let id = d.id.clone().unwrap_or_else(|| "pc.ram".into());
                let mut b = c.backend(&id).map(from_backend).unwrap_or_else(implicit);
                (b.name, b.size_bytes, b.shared) = (id, d.size, d.share);
                b
            })
            .collect();
        // QMP lists backends newest first; creation order is what addresses follow.
        out.sort_by_key(|b| c.backends.iter().position(|x| x.id == b.name));
        return out;
    }
    let used_by_machine =
        c.machine_memory_backend.is_some() || c.numa.iter().any(|n| n.memdev.is_some());
    let mut out: Vec<ExpectedBlock> = c.backends.iter().map(from_backend).collect();
    if !used_by_machine {
        out.insert(0, implicit());
    }
    out
}

/// A guest-RAM mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBlock {
    pub start: u64,
    pub end: u64,
    /// The RAM block's name: the backend id, or `pc.ram`.
    pub name: String,
    /// MAP_SHARED (memfd, file, share=on): writes reach a file or another process.
    pub shared: bool,
    /// The `memory-backend-*` id, if the block comes from one (always, in QEMU 7.2:
    /// `-m` alone makes an implicit backend `pc.ram`).
    pub backend_id: Option<String>,
    pub kind: BackendKind,
}

impl RamBlock {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Why a mapping is not guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Anonymous `rwx` memory: TCG's translation buffer (code QEMU generates).
    TcgCodeBuffer,
    /// `[heap]`: QEMU's malloc heap.
    Heap,
    /// A small block mapped like RAM (guard page after it): ROM, firmware, ACPI tables.
    /// Migrated as well, but not the guest's memory.
    SmallRamBlock,
    /// `---p`: no access; guard pages and reserved address space (malloc arenas).
    NoAccess,
    /// `[stack]`, or an 8 MiB anonymous region: a thread stack.
    Stack,
    /// A file mapping: QEMU's binary, libraries, locale files.
    File,
    /// `[vdso]`, `[vvar]`, `[vsyscall]`.
    Kernel,
    /// Other anonymous memory of QEMU itself (malloc arenas, buffers).
    OtherAnonymous,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::TcgCodeBuffer => {
                "TCG translation buffer (anonymous rwx): code QEMU generates"
            }
            Exclusion::Heap => "QEMU's malloc heap",
            Exclusion::SmallRamBlock => {
                "small RAM block with a guard page: ROM, firmware or ACPI tables"
            }
            Exclusion::NoAccess => "no access (guard page or reserved address space)",
            Exclusion::Stack => "a thread stack",
            Exclusion::File => "a mapped file (QEMU's binary, a library)",
            Exclusion::Kernel => "kernel-provided (vdso, vvar)",
            Exclusion::OtherAnonymous => "QEMU's own anonymous memory (malloc arenas, buffers)",
        })
    }
}

/// A mapping that is not guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub region: MapRegion,
    pub reason: Exclusion,
}

/// The guest RAM of one QEMU process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRam {
    /// In the order of [`expected_blocks`].
    pub blocks: Vec<RamBlock>,
    pub size_bytes: u64,
    pub excluded: Vec<Excluded>,
    /// How ambiguous choices were made, for a reader.
    pub notes: Vec<String>,
}

impl GuestRam {
    /// The block holding address `addr`, if any.
    pub fn block_at(&self, addr: u64) -> Option<&RamBlock> {
        self.blocks.iter().find(|b| b.start <= addr && addr < b.end)
    }

    /// Bytes excluded for `reason`.
    pub fn excluded_bytes(&self, reason: Exclusion) -> u64 {
        self.excluded
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.region.len())
            .sum()
    }
}

/// Finds guest RAM in `maps` (the text of `/proc/PID/maps`) for the blocks that `cmdline`
/// (or `memdevs`, from QMP) declares. A block with no fitting mapping is an
/// [`Error::Unsupported`] naming it.
pub fn find_guest_ram(
    cmdline: &QemuCmdline,
    maps: &str,
    memdevs: Option<&[Memdev]>,
) -> Result<GuestRam> {
    let regions = parse_maps(maps)?;
    let expected = expected_blocks(cmdline, memdevs);
    let mut taken = vec![false; regions.len()];
    let mut blocks = Vec::new();
    let mut notes = Vec::new();
    for want in &expected {
        let fits = candidates(want, &regions, &taken);
        let Some(&(i, j)) = fits.first() else {
            return Err(Error::Unsupported(format!(
                "no mapping fits guest RAM block {} ({} bytes, {:?}{}); \
                 is this QEMU's command line stale, or its RAM mapped another way?",
                want.name,
                want.size_bytes,
                want.kind,
                if want.shared { ", shared" } else { ", private" }
            ))
            .into());
        };
        if fits.len() > 1 {
            notes.push(format!(
                "{} mappings fit {} ({} MiB): took the one at {:x} (creation order, top-down)",
                fits.len(),
                want.name,
                want.size_bytes / MIB,
                regions[i].start
            ));
        }
        if j > i {
            notes.push(format!("{} spans {} adjacent VMAs", want.name, j - i + 1));
        }
        taken[i..=j].iter_mut().for_each(|t| *t = true);
        blocks.push(RamBlock {
            start: regions[i].start,
            end: regions[j].end,
            name: want.name.clone(),
            shared: regions[i].shared(),
            backend_id: Some(want.name.clone()),
            kind: want.kind,
        });
    }
    let smallest = expected.iter().map(|b| b.size_bytes).min().unwrap_or(0);
    let excluded = (0..regions.len())
        .filter(|&i| !taken[i])
        .map(|i| Excluded {
            region: regions[i].clone(),
            reason: classify(&regions, i, smallest),
        })
        .collect();
    Ok(GuestRam {
        size_bytes: blocks.iter().map(RamBlock::len).sum(),
        blocks,
        excluded,
        notes,
    })
}

/// Runs of regions `(first, last)` that together fit `want`, best first: one VMA before a
/// run of adjacent VMAs (the kernel splits a mapping when part of it gets other flags, and
/// keeps two mappings apart when their flags differ, so merging blindly would glue guest
/// RAM to a neighbour), then with QEMU's guard page after it, then the highest address.
fn candidates(want: &ExpectedBlock, regions: &[MapRegion], taken: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in (0..regions.len()).filter(|&i| !taken[i]) {
        let mut run = regions[i].clone();
        let mut j = i;
        loop {
            if fits(want, &run) {
                out.push((i, j));
                break;
            }
            let Some(next) = regions.get(j + 1) else {
                break;
            };
            let continues = !taken[j + 1]
                && next.start == run.end
                && next.perms == run.perms
                && next.path == run.path
                && next.inode == run.inode
                && (run.path.is_none() || run.offset + run.len() == next.offset);
            if !continues || run.len() >= want.size_bytes {
                break;
            }
            run.end = next.end;
            j += 1;
        }
    }
    out.sort_by_key(|&(i, j)| {
        (
            j > i,
            !has_guard_after(regions, j),
            std::cmp::Reverse(regions[i].start),
        )
    });
    out
}

/// Does `r` look like the mapping of block `want`?
fn fits(want: &ExpectedBlock, r: &MapRegion) -> bool {
    let perms = if want.shared { "rw-s" } else { "rw-p" };
    if r.perms != perms || !size_fits(want, r.len()) {
        return false;
    }
    let path = r.path.as_deref();
    match want.kind {
        BackendKind::Ram => path.is_none() || path.is_some_and(|p| p.starts_with("/dev/zero")),
        BackendKind::Memfd => path.is_some_and(|p| p.starts_with("/memfd:")),
        BackendKind::File => match (&want.mem_path, path) {
            (Some(mp), Some(p)) => {
                let mp = mp.to_string_lossy();
                let p = p.trim_end_matches(" (deleted)");
                p == mp || p.starts_with(&format!("{}/", mp.trim_end_matches('/')))
            }
            _ => false,
        },
    }
}

/// Exact, or rounded up to the huge page size (2 MiB or 1 GiB) on hugetlbfs.
fn size_fits(want: &ExpectedBlock, len: u64) -> bool {
    if len == want.size_bytes {
        return true;
    }
    want.hugetlb
        && [2 * MIB, 1 << 30]
            .iter()
            .any(|&page| len == want.size_bytes.div_ceil(page) * page)
}

fn has_guard_after(regions: &[MapRegion], i: usize) -> bool {
    regions.get(i + 1).is_some_and(|g| {
        g.start == regions[i].end && g.perms == "---p" && g.len() == GUARD && g.path.is_none()
    })
}

/// Why region `i` is not guest RAM.
fn classify(regions: &[MapRegion], i: usize, smallest_block: u64) -> Exclusion {
    let r = &regions[i];
    match r.path.as_deref() {
        Some("[heap]") => return Exclusion::Heap,
        Some(p) if p.starts_with("[stack") => return Exclusion::Stack,
        Some(p) if p.starts_with("[v") => return Exclusion::Kernel,
        Some(p) if !p.starts_with("/memfd:") && !p.starts_with("/dev/zero") => {
            return Exclusion::File
        }
        _ => {}
    }
    if r.perms.starts_with("---") {
        Exclusion::NoAccess
    } else if r.perms.as_bytes().get(2) == Some(&b'x') {
        Exclusion::TcgCodeBuffer
    } else if r.len() == 8 * MIB {
        Exclusion::Stack
    } else if has_guard_after(regions, i)
        && r.start.is_multiple_of(2 * MIB)
        && r.len() < smallest_block
    {
        Exclusion::SmallRamBlock
    } else {
        Exclusion::OtherAnonymous
    }
}

/// A `kB` field (e.g. `AnonHugePages`, `Rss`) of the smaps entry that starts at `start`,
/// in bytes. `None` when there is no such entry or field.
pub fn smaps_field(smaps: &str, start: u64, field: &str) -> Option<u64> {
    let head = format!("{start:x}-");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.starts_with(&head);
            continue;
        }
        if let (true, Some(rest)) = (inside, line.strip_prefix(field)) {
            let kb = rest.trim_start_matches(':').split_whitespace().next()?;
            return kb.parse::<u64>().ok().map(|v| v * 1024);
        }
    }
    None
}

#[cfg(test)]
mod tests;
