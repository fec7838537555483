//! 4 KiB truth on transparent huge pages, for the `softdirty` backend.
//!
//! A migration tracks dirty memory per 4 KiB page, but on a PMD-mapped transparent huge page
//! the kernel keeps one soft-dirty bit for all 2 MiB: the first write in an epoch faults once
//! and pagemap then shows all 512 subpages soft-dirty. Counting those as 512 dirty pages
//! overstated a random writer by +350 %.
//!
//! So soft-dirty only narrows the search to the dirty huge pages, and content sampling
//! resolves them:
//! - **Detection.** A 2 MiB-aligned block is a sampled huge page when all 512 subpages are
//!   present and soft-dirty and the block is THP-backed: `/proc/kpageflags` bit 22 (`THP`) of
//!   its first frame (root), else 512 contiguous, aligned frame numbers, else (no frame numbers
//!   visible) the soft-dirty pattern alone. A THP whose PMD was split has one bit per 4 KiB
//!   page again and shows a partial set: it stays exact.
//! - **Sampling.** Each huge page has a fixed stratified sample of [`K`] subpages: one at a
//!   pseudo-random offset in each run of 8 (a hash of the block address picks it, so a
//!   window's union of epochs compares the same subpages). When the block is dirty, the
//!   sampled subpages are read with `process_vm_readv` (never written; present, as pagemap
//!   just said) and hashed with xxh3, after the re-arm, and compared with their hashes at
//!   the block's previous resolution, or with zeros when the block was not mapped at the
//!   previous scan (a fresh huge page is zero-filled). Bit `j` of the block's mask says the
//!   subpage of stratum `j` changed.
//! - **Estimate.** For a block with `E` subpages known written from fault events, the other
//!   `N = 512 - E` are estimated as `N * c / k`, with `c` of the `k` sampled subpages outside
//!   `E` changed. Variance `N^2 p(1-p)/k * (N-k)/(N-1)` with `p = (c+0.5)/(k+1)` (the simple
//!   random sampling bound; stratification only lowers it). Blocks draw independent samples,
//!   so variances add across blocks.
//! - **Unresolved.** A dirty huge page with no earlier hashes (it became huge while clean, or
//!   khugepaged collapsed it) or an unreadable subpage is known only at 2 MiB. It is kept
//!   apart: left out of the estimate, counted in the stats, and added to the upper end of the
//!   95 % interval only.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use xxhash_rust::xxh3::xxh3_64;

use super::{
    growth::PageSet,
    pagemap::{category, PageRegion, Pagemap, Query},
};
use crate::{
    record::{PagemapMethod, ThpDetect},
    target::Region,
};

/// Bytes of a PMD-mapped huge page.
pub const HUGE: u64 = 2 << 20;
/// 4 KiB subpages of a huge page.
pub const SUBPAGES: usize = 512;
/// Sampled subpages per huge page: one in each stratum of `SUBPAGES / K`.
pub const K: usize = 64;
const STRATUM: usize = SUBPAGES / K;
const PAGE: u64 = 4096;
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_SOFT_DIRTY: u64 = 1 << 55;
const PM_PFN: u64 = (1 << 55) - 1;
const KPF_THP: u64 = 1 << 22;
/// Pages per `process_vm_readv` call (IOV_MAX is 1024).
const BATCH: usize = 256;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Subpage index (0..512) sampled in stratum `j` of the huge page at `block`.
pub fn subpage(block: u64, j: usize) -> usize {
    let w = splitmix(block ^ (j / 21) as u64);
    j * STRATUM + ((w >> (3 * (j % 21))) & 7) as usize
}

/// A dirty set in 4 KiB truth: exact pages, huge pages resolved by sampling, and huge pages
/// known only at 2 MiB.
#[derive(Clone, Debug, Default)]
pub struct DirtySet {
    /// Page addresses known dirty one by one (pagemap on 4 KiB mappings, fault events).
    pub exact: HashSet<u64>,
    /// Huge page address -> mask of its sampled subpages that changed.
    pub huge: HashMap<u64, u64>,
    /// Dirty huge pages that sampling could not resolve.
    pub unresolved: HashSet<u64>,
}

/// What a [`DirtySet`] amounts to in 4 KiB pages.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Estimated unique 4 KiB pages (exact pages plus the sampled huge pages' estimates).
    pub pages: f64,
    /// Sampling variance of `pages`.
    pub var: f64,
    /// Pages counted exactly outside sampled huge pages.
    pub exact_pages: u64,
    /// Huge pages resolved by sampling, and the 4 KiB pages estimated in them.
    pub huge_pages: u64,
    pub huge_estimated: f64,
    /// Huge pages known only at 2 MiB (not in `pages`).
    pub unresolved: u64,
}

impl Estimate {
    /// The 95 % interval: sampling error, plus every unresolved huge page at its full 512
    /// subpages on the upper side. `None` for an exact count.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        if self.huge_pages == 0 && self.unresolved == 0 {
            return None;
        }
        let half = 1.96 * self.var.sqrt();
        let lo = (self.pages - half).max(self.exact_pages as f64);
        let hi = self.pages + half + (self.unresolved * SUBPAGES as u64) as f64;
        Some((lo, hi))
    }
}

/// One huge page's estimate: (pages, variance) from the mask and the pages `known` written.
fn block_estimate(block: u64, mask: u64, known: &[u64]) -> (f64, f64) {
    let idx: HashSet<usize> = known
        .iter()
        .map(|&p| ((p - block) / PAGE) as usize)
        .collect();
    let (mut k, mut c) = (0usize, 0usize);
    for j in 0..K {
        if !idx.contains(&subpage(block, j)) {
            k += 1;
            c += ((mask >> j) & 1) as usize;
        }
    }
    let n = (SUBPAGES - idx.len().min(SUBPAGES)) as f64;
    if k == 0 || n == 0.0 {
        return (idx.len() as f64, 0.0);
    }
    let share = c as f64 / k as f64;
    let p = (c as f64 + 0.5) / (k as f64 + 1.0);
    let fpc = if n > 1.0 {
        ((n - k as f64) / (n - 1.0)).max(0.0)
    } else {
        0.0
    };
    (
        idx.len() as f64 + n * share,
        n * n * p * (1.0 - p) / k as f64 * fpc,
    )
}

impl DirtySet {
    /// The set's 4 KiB estimate; `per_block(block, standard deviation)` for each sampled
    /// huge page.
    pub fn estimate_with(&self, mut per_block: impl FnMut(u64, f64)) -> Estimate {
        let mut known: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut e = Estimate::default();
        for &p in &self.exact {
            let b = p & !(HUGE - 1);
            if self.huge.contains_key(&b) {
                known.entry(b).or_default().push(p);
            } else {
                e.exact_pages += 1;
            }
        }
        for (&b, &mask) in &self.huge {
            let (est, var) = block_estimate(b, mask, known.get(&b).map_or(&[], |v| v));
            e.huge_pages += 1;
            e.huge_estimated += est;
            e.var += var;
            per_block(b, var.sqrt());
        }
        e.unresolved = self.unresolved.len() as u64;
        e.pages = e.exact_pages as f64 + e.huge_estimated;
        e
    }

    pub fn estimate(&self) -> Estimate {
        self.estimate_with(|_, _| {})
    }
}

impl PageSet for DirtySet {
    fn unite(&mut self, other: &Self) {
        self.exact.extend(other.exact.iter().copied());
        for (&b, &m) in &other.huge {
            *self.huge.entry(b).or_default() |= m;
        }
        self.unresolved.extend(other.unresolved.iter().copied());
    }
    fn count(&self) -> f64 {
        self.estimate().pages
    }
}

/// What one pagemap scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Present soft-dirty pages outside the dirty huge pages.
    pub dirty: HashSet<u64>,
    /// THP-backed huge pages with all 512 subpages soft-dirty.
    pub huge: Vec<u64>,
    /// THP-backed huge pages with clear bits (collected for the baseline only).
    pub clean_huge: Vec<u64>,
    /// Huge pages only partly scanned (cut by `--range`), all of that part soft-dirty.
    pub clipped_huge: Vec<u64>,
    /// 2 MiB blocks with any present or swapped page.
    pub mapped: HashSet<u64>,
}

/// The pagemap entries of one 2 MiB block, in address order.
#[derive(Default)]
struct Block {
    base: u64,
    next: u64,
    /// The entries started at the block's first page.
    whole: bool,
    n: usize,
    present: usize,
    mapped: bool,
    first_pfn: u64,
    pfn_run: bool,
    dirty: Vec<u64>,
}

impl Block {
    fn start(&mut self, addr: u64) {
        self.base = addr & !(HUGE - 1);
        self.next = addr;
        self.whole = addr == self.base;
        self.n = 0;
        self.present = 0;
        self.mapped = false;
        self.pfn_run = true;
        self.dirty.clear();
    }

    /// Adds the entry of `addr`; false when it does not continue this block.
    fn push(&mut self, addr: u64, e: u64) -> bool {
        if addr != self.next || addr & !(HUGE - 1) != self.base {
            return false;
        }
        self.next = addr + PAGE;
        self.mapped |= e & (PM_PRESENT | PM_SWAPPED) != 0;
        if e & PM_PRESENT != 0 {
            let pfn = e & PM_PFN;
            if self.n == 0 {
                self.first_pfn = pfn;
            }
            self.pfn_run &= pfn == self.first_pfn + self.n as u64;
            self.present += 1;
            if e & PM_SOFT_DIRTY != 0 {
                self.dirty.push(addr);
            }
        }
        self.n += 1;
        true
    }

    /// Whether all 512 subpages are present (in this order).
    fn full(&self) -> bool {
        self.whole && self.n == SUBPAGES && self.present == SUBPAGES
    }
}

/// What a soft-dirty scan asks `PAGEMAP_SCAN` for: every present or swapped page, with its
/// present, swapped, soft-dirty and huge bits.
const SCAN_QUERY: Query = Query {
    all: 0,
    any: category::PRESENT | category::SWAPPED,
    report: category::PRESENT | category::SWAPPED | category::SOFT_DIRTY | category::HUGE,
};

/// Adds one run of a `PAGEMAP_SCAN` to a scan, by the rules of [`Block`]'s flush: mapped
/// blocks; present soft-dirty 4 KiB pages; dirty huge pages (clipped when the run covers
/// only part of the block, as `--range` can); clean huge pages when asked.
fn take_run(x: &PageRegion, out: &mut Scan, want_clean: bool) {
    let first = x.start & !(HUGE - 1);
    for b in (first..x.end).step_by(HUGE as usize) {
        out.mapped.insert(b);
    }
    if x.categories & category::PRESENT == 0 {
        return;
    }
    let dirty = x.categories & category::SOFT_DIRTY != 0;
    if x.categories & category::HUGE == 0 {
        if dirty {
            out.dirty.extend((x.start..x.end).step_by(PAGE as usize));
        }
        return;
    }
    for b in (first..x.end).step_by(HUGE as usize) {
        let whole = b >= x.start && b + HUGE <= x.end;
        match (dirty, whole) {
            (true, true) => out.huge.push(b),
            (true, false) => out.clipped_huge.push(b),
            (false, true) if want_clean => out.clean_huge.push(b),
            _ => {}
        }
    }
}

/// What the THP resolution did and cost, for the backend's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThpCounters {
    /// Dirty huge pages (per epoch) resolved by sampling.
    pub resolved: u64,
    /// Dirty huge pages (per epoch) known only at 2 MiB.
    pub unresolved: u64,
    /// Subpages read and hashed, and the time it took.
    pub hashed_pages: u64,
    pub hash_time: Duration,
    /// Of which for the baselines at start and after an exec.
    pub baseline_pages: u64,
    pub detect: ThpDetect,
}

/// Resolves dirty huge pages of one target by content sampling.
pub struct ThpTracker {
    pid: u32,
    kpageflags: Option<File>,
    /// Hashes of each huge page's sampled subpages at its last resolution.
    baseline: HashMap<u64, [u64; K]>,
    /// Blocks mapped at the previous scan (others compare with zeros).
    mapped_prev: HashSet<u64>,
    zero: u64,
    buf: Vec<u8>,
    /// When each huge page resolved at the last epoch's end was read (CLOCK_MONOTONIC).
    hashed_at: HashMap<u64, u64>,
    pub counters: ThpCounters,
}

impl ThpTracker {
    pub fn new(pid: u32) -> ThpTracker {
        ThpTracker {
            pid,
            kpageflags: File::open("/proc/kpageflags").ok(),
            baseline: HashMap::new(),
            mapped_prev: HashSet::new(),
            zero: xxh3_64(&[0u8; PAGE as usize]),
            buf: vec![0u8; BATCH * PAGE as usize],
            hashed_at: HashMap::new(),
            counters: ThpCounters::default(),
        }
    }

    /// Forgets the old address space (after an exec).
    pub fn reset(&mut self) {
        self.baseline.clear();
        self.mapped_prev.clear();
        self.hashed_at.clear();
    }

    /// Whether the block's memory is a transparent huge page.
    fn thp_backed(&mut self, b: &Block) -> bool {
        if b.first_pfn == 0 {
            self.counters.detect = ThpDetect::Pattern;
            return b.dirty.len() == SUBPAGES;
        }
        if let Some(f) = &self.kpageflags {
            let mut x = [0u8; 8];
            if f.read_exact_at(&mut x, b.first_pfn * 8).is_ok() {
                self.counters.detect = ThpDetect::Kpageflags;
                return u64::from_le_bytes(x) & KPF_THP != 0;
            }
        }
        self.counters.detect = ThpDetect::PfnRun;
        b.pfn_run && b.first_pfn.is_multiple_of(SUBPAGES as u64)
    }

    fn flush(&mut self, b: &Block, out: &mut Scan, want_clean: bool) {
        if b.mapped {
            out.mapped.insert(b.base);
        }
        let all_dirty = b.dirty.len() == SUBPAGES;
        if b.full() && (all_dirty || (want_clean && b.dirty.is_empty())) && self.thp_backed(b) {
            if all_dirty {
                out.huge.push(b.base);
            } else {
                out.clean_huge.push(b.base);
            }
            return;
        }
        // A huge page cut by `--range` (or by a region edge): its visible entries all
        // soft-dirty and its frames THP say nothing per 4 KiB page, and a part cannot be
        // sampled against the whole's strata. It is known only at 2 MiB.
        if !b.full() && b.n > 1 && b.dirty.len() == b.n && self.kpageflags_thp(b.first_pfn) {
            out.clipped_huge.push(b.base);
            return;
        }
        out.dirty.extend(b.dirty.iter().copied());
    }

    /// Whether the block at `base` is a whole THP-backed huge page now (for a fault event
    /// that raced with the scan: the block was not soft-dirty, or not yet mapped, when read).
    pub fn huge_now(&mut self, pm: &mut Pagemap, base: u64) -> bool {
        if pm.method() == PagemapMethod::Scan {
            let mut huge = false;
            let _ = pm.runs(base, base + HUGE, SCAN_QUERY, |x| {
                huge |=
                    x.categories & category::HUGE != 0 && x.start <= base && x.end >= base + HUGE
            });
            return huge;
        }
        let mut buf = vec![0u8; SUBPAGES * 8];
        if pm.file().read_exact_at(&mut buf, base / PAGE * 8).is_err() {
            return false;
        }
        let mut b = Block::default();
        b.start(base);
        for (i, c) in buf.chunks_exact(8).enumerate() {
            b.push(
                base + i as u64 * PAGE,
                u64::from_le_bytes(c.try_into().unwrap()),
            );
        }
        b.full() && b.first_pfn != 0 && self.thp_backed(&b)
    }

    /// Whether kpageflags says the frame is part of a transparent huge page (false when it
    /// cannot be read).
    fn kpageflags_thp(&self, pfn: u64) -> bool {
        let mut x = [0u8; 8];
        pfn != 0
            && self
                .kpageflags
                .as_ref()
                .is_some_and(|f| f.read_exact_at(&mut x, pfn * 8).is_ok())
            && u64::from_le_bytes(x) & KPF_THP != 0
    }

    /// Reads pagemap for `regions`: 4 KiB soft-dirty pages, dirty huge pages, mapped blocks.
    /// `want_clean` also lists the THP-backed huge pages whose bits are clear.
    pub fn scan(
        &mut self,
        pm: &mut Pagemap,
        regions: &[Region],
        want_clean: bool,
    ) -> std::io::Result<Scan> {
        match pm.method() {
            PagemapMethod::Scan => self.scan_runs(pm, regions, want_clean),
            PagemapMethod::Read => self.scan_entries(pm, regions, want_clean),
        }
    }

    /// [`ThpTracker::scan`] with `PAGEMAP_SCAN`: the kernel hands back runs of present or
    /// swapped pages with their soft-dirty and huge bits, so nothing is read per clean page
    /// and a PMD-mapped huge page is one entry. A block is a huge page when the kernel says
    /// it is PMD-mapped (a THP mapped by 4 KiB entries has a bit per page: it stays exact).
    fn scan_runs(
        &mut self,
        pm: &mut Pagemap,
        regions: &[Region],
        want_clean: bool,
    ) -> std::io::Result<Scan> {
        let mut out = Scan::default();
        for r in regions {
            let mut runs: Vec<PageRegion> = Vec::new();
            pm.runs(r.start, r.end, SCAN_QUERY, |x| match runs.last_mut() {
                // A run the scan cut in two (one call's end) is one run again.
                Some(l) if l.end == x.start && l.categories == x.categories => l.end = x.end,
                _ => runs.push(x),
            })?;
            for x in &runs {
                if x.categories & category::HUGE != 0 && x.categories & category::PRESENT != 0 {
                    self.counters.detect = ThpDetect::PagemapScan;
                }
                take_run(x, &mut out, want_clean);
            }
        }
        Ok(out)
    }

    /// [`ThpTracker::scan`] with plain reads: every entry of every page.
    fn scan_entries(
        &mut self,
        pagemap: &Pagemap,
        regions: &[Region],
        want_clean: bool,
    ) -> std::io::Result<Scan> {
        let mut out = Scan::default();
        let mut b = Block::default();
        let mut started = false;
        pagemap.walk(regions, |addr, e| {
            if !started || !b.push(addr, e) {
                if started {
                    self.flush(&b, &mut out, want_clean);
                }
                b.start(addr);
                started = true;
                b.push(addr, e);
            }
            true
        })?;
        if started {
            self.flush(&b, &mut out, want_clean);
        }
        Ok(out)
    }

    /// Hashes every huge page of the target (at start, after an exec), so later epochs have
    /// something to compare with; returns the 4 KiB scan it made.
    pub fn take_baseline(&mut self, pm: &mut Pagemap, regions: &[Region]) -> std::io::Result<()> {
        let scan = self.scan(pm, regions, true)?;
        let t = Instant::now();
        let blocks: Vec<u64> = scan.huge.iter().chain(&scan.clean_huge).copied().collect();
        for chunk in blocks.chunks(BATCH / K) {
            let hashes = self.read_blocks(chunk);
            for (&b, h) in chunk.iter().zip(hashes) {
                if let Some(h) = h {
                    self.baseline.insert(b, h);
                }
            }
        }
        self.counters.baseline_pages += (blocks.len() * K) as u64;
        self.counters.hashed_pages += (blocks.len() * K) as u64;
        self.counters.hash_time += t.elapsed();
        self.mapped_prev = scan.mapped;
        Ok(())
    }

    /// Resolves the dirty huge pages of a scan into `out` (call after the re-arm), and
    /// remembers which blocks were mapped.
    pub fn resolve(
        &mut self,
        scan_huge: (&[u64], &[u64]),
        mapped: HashSet<u64>,
        out: &mut DirtySet,
    ) {
        let (huge, clipped) = scan_huge;
        self.counters.unresolved += clipped.len() as u64;
        out.unresolved.extend(clipped.iter().copied());
        let t = Instant::now();
        self.hashed_at.clear();
        for chunk in huge.chunks(BATCH / K) {
            let read_ns = super::softdirty::monotonic_ns();
            let hashes = self.read_blocks(chunk);
            for (&b, now) in chunk.iter().zip(hashes) {
                self.hashed_at.insert(b, read_ns);
                let Some(now) = now else {
                    self.counters.unresolved += 1;
                    out.unresolved.insert(b);
                    continue;
                };
                let before = if self.mapped_prev.contains(&b) {
                    self.baseline.get(&b).copied()
                } else {
                    Some([self.zero; K])
                };
                self.baseline.insert(b, now);
                let Some(before) = before else {
                    self.counters.unresolved += 1;
                    out.unresolved.insert(b);
                    continue;
                };
                let mask = (0..K).fold(0u64, |m, j| m | (u64::from(now[j] != before[j]) << j));
                *out.huge.entry(b).or_default() |= mask;
                self.counters.resolved += 1;
            }
        }
        self.counters.hashed_pages += (huge.len() * K) as u64;
        self.counters.hash_time += t.elapsed();
        self.baseline.retain(|b, _| mapped.contains(b));
        self.mapped_prev = mapped;
    }

    /// Whether a write to `page` at `time_ns` belongs to the last resolution: its huge page
    /// was hashed after that time. The write faulted after the re-arm, so its event comes in
    /// the next epoch, but the resolution's estimate already took it in: the hashes compare
    /// the subpages up to the read, and the estimate counts a write to any subpage once in
    /// expectation (a sampled one as 512/64 with chance 64/512). Dropping only writes to
    /// sampled subpages, as this did first, still counted the other 7 in 8 twice: about one
    /// page per hot huge page per epoch, +3.6 % at U(0.1 s) on the THP hot/cold writer and
    /// +6.5 to +7.9 % with the guest loaded (hashing later after the arm).
    pub fn seen_by_hash(&self, page: u64, time_ns: u64) -> bool {
        let b = page & !(HUGE - 1);
        self.hashed_at.get(&b).is_some_and(|&h| time_ns < h)
    }

    /// Hashes of the sampled subpages of `blocks` (at most `BATCH / K`); `None` for a
    /// block with any subpage unreadable.
    fn read_blocks(&mut self, blocks: &[u64]) -> Vec<Option<[u64; K]>> {
        let addrs: Vec<u64> = blocks
            .iter()
            .flat_map(|&b| (0..K).map(move |j| b + subpage(b, j) as u64 * PAGE))
            .collect();
        let hashes = self.read_hashes(&addrs);
        hashes
            .chunks(K)
            .map(|c| {
                let mut h = [0u64; K];
                for (d, s) in h.iter_mut().zip(c) {
                    *d = (*s)?;
                }
                Some(h)
            })
            .collect()
    }
}

impl ThpTracker {
    /// Reads and hashes the pages at `addrs` (at most `BATCH`) from the target, never
    /// writing to it; `None` for a page that could not be read.
    fn read_hashes(&mut self, addrs: &[u64]) -> Vec<Option<u64>> {
        let page = PAGE as usize;
        let mut out = vec![None; addrs.len()];
        let mut start = 0;
        while start < addrs.len() {
            let part = &addrs[start..];
            let local = [libc::iovec {
                iov_base: self.buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: part.len() * page,
            }];
            let remote: Vec<libc::iovec> = part
                .iter()
                .map(|&a| libc::iovec {
                    iov_base: a as *mut libc::c_void,
                    iov_len: page,
                })
                .collect();
            // SAFETY: `local` is our buffer of BATCH pages; the remote addresses are only
            // read, by the kernel, on the target's behalf.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    1,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 {
                // The first page failed (or the target is gone): it stays unread.
                start += 1;
                continue;
            }
            let full = n as usize / page;
            for k in 0..full {
                out[start + k] = Some(xxh3_64(&self.buf[k * page..(k + 1) * page]));
            }
            start += full + usize::from(full < part.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sampled_subpage_per_stratum() {
        for b in [0u64, HUGE, 0x7f12_3460_0000] {
            for j in 0..K {
                let s = subpage(b, j);
                assert_eq!(s / STRATUM, j, "block {b:x} stratum {j}");
            }
        }
        // Offsets differ between blocks.
        let a: Vec<usize> = (0..K).map(|j| subpage(0, j)).collect();
        let b: Vec<usize> = (0..K).map(|j| subpage(HUGE, j)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn estimate_scales_the_changed_share() {
        let mut s = DirtySet::default();
        s.exact.insert(0x10_0000_0000 + 5 * PAGE); // a 4 KiB page elsewhere
                                                   // Half the strata changed: 256 of 512.
        s.huge.insert(0, 0x5555_5555_5555_5555);
        let e = s.estimate();
        assert_eq!(e.exact_pages, 1);
        assert_eq!(e.huge_pages, 1);
        assert!((e.pages - 257.0).abs() < 1e-9, "{e:?}");
        // sd about 512 * sqrt(.25/64 * 448/511) = 29.7
        assert!((e.var.sqrt() - 29.7).abs() < 1.0, "{e:?}");
        let (lo, hi) = e.ci95().unwrap();
        assert!(lo < 257.0 && hi > 257.0);
    }

    #[test]
    fn known_pages_are_not_counted_twice() {
        let mut s = DirtySet::default();
        let b = 4 * HUGE;
        // Every sampled subpage changed, and one of them is also known from an event.
        s.huge.insert(b, u64::MAX);
        s.exact.insert(b + subpage(b, 3) as u64 * PAGE);
        let e = s.estimate();
        assert_eq!(e.exact_pages, 0);
        assert!((e.pages - 512.0).abs() < 1e-9, "{e:?}");
        // No change at all: only the known page.
        s.huge.insert(b, 0);
        assert!((s.estimate().pages - 1.0).abs() < 1e-9);
    }

    #[test]
    fn union_ors_the_masks_and_keeps_unresolved_apart() {
        let mut a = DirtySet::default();
        a.huge.insert(0, 0b01);
        let mut b = DirtySet::default();
        b.huge.insert(0, 0b10);
        b.unresolved.insert(HUGE);
        a.unite(&b);
        assert_eq!(a.huge[&0], 0b11);
        let e = a.estimate();
        assert!((e.pages - 16.0).abs() < 1e-9, "{e:?}");
        assert_eq!(e.unresolved, 1);
        let (_, hi) = e.ci95().unwrap();
        assert!(hi > 16.0 + 512.0);
    }

    /// The documented bound: 32 huge pages each with 22 % of their subpages changed (a
    /// random writer at 16 MiB/s over 64 MiB, per second) are estimated without bias, with
    /// a 95 % half-width near ±8 %, and the interval covers the truth about 95 % of the time.
    #[test]
    fn random_changes_are_estimated_within_the_stated_bound() {
        let (trials, blocks) = (400u64, 32u64);
        let (mut err_sum, mut covered, mut half_sum) = (0.0, 0, 0.0);
        for t in 0..trials {
            let mut s = DirtySet::default();
            let mut truth = 0u64;
            for k in 0..blocks {
                let b = (t * blocks + k) * HUGE;
                let changed = |i: usize| splitmix(b ^ ((i as u64) << 32) ^ 0xabc) % 100 < 22;
                truth += (0..SUBPAGES).filter(|&i| changed(i)).count() as u64;
                let mask = (0..K).fold(0u64, |m, j| m | (u64::from(changed(subpage(b, j))) << j));
                s.huge.insert(b, mask);
            }
            let e = s.estimate();
            let (lo, hi) = e.ci95().unwrap();
            err_sum += (e.pages - truth as f64) / truth as f64;
            half_sum += (hi - lo) / 2.0 / truth as f64;
            covered += u64::from(lo <= truth as f64 && truth as f64 <= hi);
        }
        let (bias, half) = (err_sum / trials as f64, half_sum / trials as f64);
        let coverage = covered as f64 / trials as f64;
        assert!(bias.abs() < 0.01, "bias {bias}");
        assert!((0.06..0.09).contains(&half), "half-width {half}");
        assert!((0.90..=1.0).contains(&coverage), "coverage {coverage}");
    }

    /// The `PAGEMAP_SCAN` path and the plain-read path make the same scan of a real
    /// process: this test's own memory, one mapping with transparent huge pages and one
    /// without, partly touched. (This kernel may lack soft-dirty: then every block is clean
    /// and the comparison is of the mapped blocks and the clean huge pages.)
    #[test]
    fn scan_paths_agree_on_our_own_memory() {
        use crate::source::pagemap::Pagemap;
        let pid = std::process::id();
        let native = Pagemap::open(pid).unwrap();
        if native.method() != PagemapMethod::Scan {
            eprintln!("no PAGEMAP_SCAN on this kernel: only the plain-read path exists here");
            return;
        }
        let len = 16 * HUGE as usize;
        let map = |advice| {
            // SAFETY: a fresh private anonymous mapping of our own, unmapped below.
            unsafe {
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    len + HUGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(m, libc::MAP_FAILED);
                let base = (m as usize).next_multiple_of(HUGE as usize) as *mut u8;
                libc::madvise(base as *mut libc::c_void, len, advice);
                for i in (0..len).step_by(PAGE as usize) {
                    if (i / HUGE as usize) % 3 != 2 && (i / PAGE as usize) % 5 != 1 {
                        std::ptr::write_volatile(base.add(i), 1);
                    }
                }
                (m, base as u64)
            }
        };
        let (m1, huge) = map(libc::MADV_HUGEPAGE);
        let (m2, small) = map(libc::MADV_NOHUGEPAGE);
        let region = |start: u64| Region {
            start,
            end: start + len as u64,
            name: String::new(),
            shared: false,
        };
        let regions = [region(huge), region(small)];
        let mut read = Pagemap::open(pid).unwrap().force_read();
        let mut t = ThpTracker::new(pid);
        let mut first = vec![0u64; 1];
        read.read_entries(huge, &mut first).unwrap();
        let pfns = first[0] & crate::source::pagemap::PM_PFN != 0;
        let a = t.scan(&mut read, &regions, true).unwrap();
        let mut native = native;
        let b = t.scan(&mut native, &regions, true).unwrap();
        // SAFETY: unmapping our own mappings.
        unsafe {
            libc::munmap(m1, len + HUGE as usize);
            libc::munmap(m2, len + HUGE as usize);
        }
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(a.mapped, b.mapped);
        assert_eq!(a.dirty, b.dirty);
        assert_eq!(sorted(&a.huge), sorted(&b.huge));
        assert_eq!(sorted(&a.clipped_huge), sorted(&b.clipped_huge));
        eprintln!(
            "{} mapped blocks, {} huge pages (plain reads: {}), frame numbers visible: {pfns}",
            b.mapped.len(),
            b.clean_huge.len() + b.huge.len(),
            a.clean_huge.len() + a.huge.len()
        );
        if pfns {
            // Without frame numbers the plain reads cannot tell a clean huge page.
            assert_eq!(sorted(&a.clean_huge), sorted(&b.clean_huge));
        }
    }

    /// The rules for runs on synthetic soft-dirty states: a dirty huge page, a clean one, a
    /// huge page cut by the range, 4 KiB soft-dirty pages, a swapped run.
    #[test]
    fn runs_make_the_scan_blocks_do() {
        let sd = category::PRESENT | category::SOFT_DIRTY;
        let runs = [
            PageRegion {
                start: 0,
                end: HUGE,
                categories: sd | category::HUGE,
            },
            PageRegion {
                start: HUGE,
                end: 2 * HUGE,
                categories: category::PRESENT | category::HUGE,
            },
            PageRegion {
                start: 2 * HUGE,
                end: 2 * HUGE + 3 * PAGE,
                categories: sd,
            },
            PageRegion {
                start: 2 * HUGE + 9 * PAGE,
                end: 2 * HUGE + 10 * PAGE,
                categories: category::SWAPPED,
            },
            PageRegion {
                start: 3 * HUGE + HUGE / 2,
                end: 4 * HUGE,
                categories: sd | category::HUGE,
            },
        ];
        let mut out = Scan::default();
        for r in &runs {
            take_run(r, &mut out, true);
        }
        assert_eq!(out.huge, vec![0]);
        assert_eq!(out.clean_huge, vec![HUGE]);
        assert_eq!(out.clipped_huge, vec![3 * HUGE]);
        let mut dirty: Vec<u64> = out.dirty.iter().copied().collect();
        dirty.sort_unstable();
        assert_eq!(dirty, vec![2 * HUGE, 2 * HUGE + PAGE, 2 * HUGE + 2 * PAGE]);
        let mut mapped: Vec<u64> = out.mapped.iter().copied().collect();
        mapped.sort_unstable();
        assert_eq!(mapped, vec![0, HUGE, 2 * HUGE, 3 * HUGE]);
    }

    #[test]
    fn scan_blocks() {
        let sd = PM_PRESENT | PM_SOFT_DIRTY;
        let mut t = ThpTracker::new(0);
        t.kpageflags = None;
        let mut out = Scan::default();
        let mut b = Block::default();
        // A PMD-mapped huge page: 512 contiguous aligned frames, all soft-dirty.
        b.start(0);
        for i in 0..512u64 {
            assert!(b.push(i * PAGE, sd | (1024 + i)));
        }
        assert!(!b.push(HUGE, sd));
        t.flush(&b, &mut out, false);
        assert_eq!(out.huge, vec![0]);
        // 4 KiB pages with all bits set but scattered frames: exact.
        b.start(HUGE);
        for i in 0..512u64 {
            b.push(HUGE + i * PAGE, sd | (7000 + 3 * i));
        }
        t.flush(&b, &mut out, false);
        assert_eq!(out.huge, vec![0]);
        assert_eq!(out.dirty.len(), 512);
        assert_eq!(t.counters.detect, ThpDetect::PfnRun);
    }
}
