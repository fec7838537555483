//! Reading another process's page tables from `/proc/PID/pagemap`, for only the pages a
//! backend needs.
//!
//! Two ways, chosen at run time:
//! - the `PAGEMAP_SCAN` ioctl (Linux 6.7+): one call returns the runs of pages of a range
//!   that match some categories (present, swapped, soft-dirty, huge), without copying an
//!   entry per page and without looking at each page's `struct page` (which plain reads do,
//!   for the exclusive-mapping and file bits);
//! - plain reads of the 8-byte entries (any kernel): the fallback, and what the VM tests'
//!   Debian 6.1 kernel uses.
//!
//! Both answer the same questions ([`Pagemap::residency`], [`Pagemap::runs`]); the tests
//! below check them against each other on this process's own memory.
//!
//! Cost (measured on the project's machine, docs/benchmarks.md): one call of either kind
//! costs about 1.2 µs; then a plain read costs about 35 ns per 4 KiB page and a scan about
//! 11 ns (far less on a transparent huge page, one entry per 2 MiB). So the pages a sampler
//! asks about are read one call per run of nearby pages: pages closer than
//! [`PagemapMethod::gap`] share a call, farther ones get their own.
use std::{fs::File, io, os::fd::AsRawFd, os::unix::fs::FileExt};

use crate::{record::PagemapMethod, target::page_size};

/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAPPED: u64 = 1 << 62;
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Frame number of a present page (0 without CAP_SYS_ADMIN).
pub const PM_PFN: u64 = (1 << 55) - 1;

/// `PAGEMAP_SCAN` page categories (include/uapi/linux/fs.h).
pub mod category {
    pub const PRESENT: u64 = 1 << 3;
    pub const SWAPPED: u64 = 1 << 4;
    pub const PFNZERO: u64 = 1 << 5;
    /// A PMD-mapped transparent huge page, or hugetlbfs.
    pub const HUGE: u64 = 1 << 6;
    pub const SOFT_DIRTY: u64 = 1 << 7;
}

/// `struct page_region`: pages `[start, end)` that share `categories`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 16;

/// Regions asked for per ioctl call.
const REGIONS: usize = 1024;
/// Entries per plain read (64 KiB).
const ENTRIES: usize = 8192;
/// A scan of a long range is cut into pieces this long (256 MiB), so that the target's
/// memory-map lock is never held for long at a time (a plain read takes it per 2 MiB).
const SCAN_PIECE: u64 = 256 << 20;

/// Whether a page is in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Never touched, or freed: reading it would map a page into the target.
    Absent,
    Present,
    /// In swap: reading it would swap it in.
    Swapped,
    /// pagemap could not be read (the process exited, its memory map changed).
    Unknown,
}

impl Residency {
    fn of_entry(e: u64) -> Residency {
        if e & PM_PRESENT != 0 {
            Residency::Present
        } else if e & PM_SWAPPED != 0 {
            Residency::Swapped
        } else {
            Residency::Absent
        }
    }
}

/// What a scan matches and reports (`PAGEMAP_SCAN`'s masks): a page matches when it has
/// every category of `all` and, unless `any` is 0, at least one of `any`. Reported regions
/// carry the page's categories masked by `report`; neighbouring matched pages with equal
/// reported categories come as one region.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub all: u64,
    pub any: u64,
    pub report: u64,
}

/// `/proc/PID/pagemap` of one process.
pub struct Pagemap {
    file: File,
    method: PagemapMethod,
    page: u64,
    entries: Vec<u64>,
    regions: Vec<PageRegion>,
}

impl Pagemap {
    /// Opens the pagemap of `pid` and finds out whether this kernel has `PAGEMAP_SCAN`.
    pub fn open(pid: u32) -> io::Result<Pagemap> {
        Ok(Pagemap::from_file(File::open(format!(
            "/proc/{pid}/pagemap"
        ))?))
    }

    /// The same for an open pagemap file.
    pub fn from_file(file: File) -> Pagemap {
        let mut p = Pagemap {
            file,
            method: PagemapMethod::Read,
            page: page_size(),
            entries: Vec::new(),
            regions: vec![PageRegion::default(); REGIONS],
        };
        // An empty range at address 0: a kernel with the ioctl answers 0 regions, one
        // without it ENOTTY.
        let probe = Query {
            all: category::PRESENT,
            any: 0,
            report: category::PRESENT,
        };
        if p.scan_call(0, p.page, probe, 1).is_ok() {
            p.method = PagemapMethod::Scan;
        }
        p
    }

    /// Reads with plain reads even where the kernel has `PAGEMAP_SCAN` (tests compare the two).
    pub fn force_read(mut self) -> Pagemap {
        self.method = PagemapMethod::Read;
        self
    }

    pub fn method(&self) -> PagemapMethod {
        self.method
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The entries of the pages from `start` on, one per element of `out`.
    pub fn read_entries(&self, start: u64, out: &mut [u64]) -> io::Result<()> {
        // SAFETY: u64 has no invalid bit patterns; the byte view covers exactly `out`.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, std::mem::size_of_val(out))
        };
        self.file.read_exact_at(bytes, start / self.page * 8)?;
        for e in out.iter_mut() {
            *e = u64::from_le(*e);
        }
        Ok(())
    }

    /// Calls `f(page address, entry)` for every page of `regions`, reading 8,192 entries at a
    /// time, until `f` returns false.
    pub fn walk(
        &self,
        regions: &[crate::target::Region],
        mut f: impl FnMut(u64, u64) -> bool,
    ) -> io::Result<()> {
        let mut buf = vec![0u64; 8192];
        for r in regions {
            let mut a = r.start;
            while a < r.end {
                let n = (((r.end - a) / self.page) as usize).min(buf.len());
                self.read_entries(a, &mut buf[..n])?;
                for (i, &e) in buf[..n].iter().enumerate() {
                    if !f(a + i as u64 * self.page, e) {
                        return Ok(());
                    }
                }
                a += n as u64 * self.page;
            }
        }
        Ok(())
    }

    /// One `PAGEMAP_SCAN` call over `[start, end)`: the regions it filled, and where it
    /// stopped (`end` when it got through).
    fn scan_call(
        &mut self,
        start: u64,
        end: u64,
        q: Query,
        cap: usize,
    ) -> io::Result<(usize, u64)> {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start,
            end,
            vec: self.regions.as_mut_ptr() as u64,
            vec_len: cap.clamp(1, self.regions.len()) as u64,
            category_mask: q.all,
            category_anyof_mask: q.any,
            return_mask: q.report,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `regions`, which
        // holds `vec_len` elements; the kernel writes at most that many and `walk_end`.
        let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, arg.walk_end))
    }

    /// Calls `f` with every region of `[start, end)` matching `q`, in address order
    /// (`PAGEMAP_SCAN` only: callers check [`Pagemap::method`]).
    pub fn runs(
        &mut self,
        start: u64,
        end: u64,
        q: Query,
        f: impl FnMut(PageRegion),
    ) -> io::Result<()> {
        self.runs_capped(start, end, q, REGIONS, f)
    }

    /// [`Pagemap::runs`] asking for at most `cap` regions per call (the kernel allocates
    /// room for them on every call: a look-up of a few pages asks for few).
    fn runs_capped(
        &mut self,
        start: u64,
        end: u64,
        q: Query,
        cap: usize,
        mut f: impl FnMut(PageRegion),
    ) -> io::Result<()> {
        let cap = cap.clamp(1, REGIONS);
        let mut at = start;
        while at < end {
            // Pieces end 2 MiB-aligned, so a huge page is never cut in two by them.
            let piece = end.min(((at + SCAN_PIECE) & !((2 << 20) - 1)).max(at + self.page));
            let (n, walk_end) = loop {
                match self.scan_call(at, piece, q, cap) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            for r in &self.regions[..n] {
                f(*r);
            }
            // It stops early only when the regions run out: go on from where it stopped.
            // After a walk the kernel did in several rounds of its own, `walk_end` can be
            // left at an earlier round's stop even though the walk got further: never
            // resume before the last region reported.
            let reported = self.regions[..n].last().map_or(at, |r| r.end);
            let stop = walk_end.max(reported);
            at = if n == cap && stop > at && stop < piece {
                stop
            } else {
                piece
            };
        }
        Ok(())
    }

    /// The residency of each page of `addrs` (sorted, page-aligned) into `out`, one call
    /// per run of pages closer than [`PagemapMethod::gap`]. A call that fails leaves its pages
    /// [`Residency::Unknown`].
    pub fn residency(&mut self, addrs: &[u64], out: &mut [Residency]) {
        debug_assert_eq!(addrs.len(), out.len());
        let (page, gap) = (self.page, self.method.gap());
        let mut i = 0;
        while i < addrs.len() {
            let mut j = i + 1;
            while j < addrs.len()
                && addrs[j].saturating_sub(addrs[j - 1]) / page <= gap
                && (addrs[j] - addrs[i]) / page < ENTRIES as u64
            {
                j += 1;
            }
            let ok = match self.method {
                PagemapMethod::Read => self.residency_read(&addrs[i..j], &mut out[i..j]),
                PagemapMethod::Scan => self.residency_scan(&addrs[i..j], &mut out[i..j]),
            };
            if ok.is_err() {
                out[i..j].fill(Residency::Unknown);
            }
            i = j;
        }
    }

    /// The pages `addrs` (sorted, page-aligned, not empty) lie in: from the first to the end
    /// of the last.
    fn span(&self, addrs: &[u64]) -> (u64, u64) {
        (addrs[0], addrs[addrs.len() - 1] + self.page)
    }

    fn residency_read(&mut self, addrs: &[u64], out: &mut [Residency]) -> io::Result<()> {
        let (start, end) = self.span(addrs);
        let n = ((end - start) / self.page) as usize;
        let mut buf = std::mem::take(&mut self.entries);
        buf.resize(n, 0);
        let r = self.read_entries(start, &mut buf);
        if r.is_ok() {
            for (a, o) in addrs.iter().zip(out.iter_mut()) {
                *o = Residency::of_entry(buf[((a - start) / self.page) as usize]);
            }
        }
        self.entries = buf;
        r
    }

    fn residency_scan(&mut self, addrs: &[u64], out: &mut [Residency]) -> io::Result<()> {
        let (start, end) = self.span(addrs);
        out.fill(Residency::Absent);
        let q = Query {
            all: 0,
            any: category::PRESENT | category::SWAPPED,
            report: category::PRESENT | category::SWAPPED,
        };
        let mut k = 0;
        // Present and absent pages alternate at most once per wanted page in between.
        self.runs_capped(start, end, q, 2 * addrs.len() + 1, |r| {
            while k < addrs.len() && addrs[k] < r.start {
                k += 1;
            }
            while k < addrs.len() && addrs[k] < r.end {
                out[k] = if r.categories & category::PRESENT != 0 {
                    Residency::Present
                } else {
                    Residency::Swapped
                };
                k += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of our own: some written (present), some never touched (absent).
    struct Own {
        map: *mut libc::c_void,
        map_len: usize,
        base: *mut u8,
    }

    impl Own {
        fn new(pages: usize, huge: bool) -> Own {
            let page = page_size() as usize;
            let align = if huge { 2 << 20 } else { page };
            let len = pages * page;
            // SAFETY: a fresh private anonymous mapping, unmapped in Drop.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len + align,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(m, libc::MAP_FAILED);
            let base = (m as usize).next_multiple_of(align) as *mut u8;
            // SAFETY: advising our own mapping.
            unsafe {
                libc::madvise(
                    base as *mut libc::c_void,
                    len,
                    if huge {
                        libc::MADV_HUGEPAGE
                    } else {
                        libc::MADV_NOHUGEPAGE
                    },
                )
            };
            Own {
                map: m,
                map_len: len + align,
                base,
            }
        }
        fn addr(&self, i: usize) -> u64 {
            self.base as u64 + (i as u64) * page_size()
        }
        fn touch(&self, i: usize) {
            // SAFETY: inside the mapping.
            unsafe { std::ptr::write_volatile(self.base.add(i * page_size() as usize), 1) };
        }
    }

    impl Drop for Own {
        fn drop(&mut self) {
            // SAFETY: our own mapping, whole (parts a test unmapped already are no error).
            unsafe { libc::munmap(self.map, self.map_len) };
        }
    }

    fn own_pagemap() -> Pagemap {
        Pagemap::open(std::process::id()).unwrap()
    }

    #[test]
    fn the_ioctl_number_is_the_kernels() {
        assert_eq!(std::mem::size_of::<PmScanArg>(), 96);
        assert_eq!(std::mem::size_of::<PageRegion>(), 24);
        assert_eq!(PAGEMAP_SCAN, 0xc060_6610);
    }

    #[test]
    fn residency_matches_plain_reads_and_the_truth() {
        let m = Own::new(4096, false);
        // A pattern of present pages: runs, singles, gaps wider and narrower than the
        // batching gap.
        let touched: Vec<usize> = (0..4096)
            .filter(|i| i % 7 == 0 || (100..300).contains(i) || (i % 500) < 3)
            .collect();
        for &i in &touched {
            m.touch(i);
        }
        // Ask about every 3rd page and a few far apart.
        let addrs: Vec<u64> = (0..4096)
            .filter(|i| i % 3 == 0 || i % 1000 == 1)
            .map(|i| m.addr(i))
            .collect();
        let truth: Vec<Residency> = addrs
            .iter()
            .map(|&a| {
                let i = ((a - m.addr(0)) / page_size()) as usize;
                if touched.contains(&i) {
                    Residency::Present
                } else {
                    Residency::Absent
                }
            })
            .collect();
        let mut fallback = own_pagemap().force_read();
        let mut a = vec![Residency::Unknown; addrs.len()];
        fallback.residency(&addrs, &mut a);
        assert_eq!(a, truth, "plain reads");
        let mut native = own_pagemap();
        eprintln!("pagemap method on this kernel: {:?}", native.method());
        let mut b = vec![Residency::Unknown; addrs.len()];
        native.residency(&addrs, &mut b);
        assert_eq!(b, truth, "{:?}", native.method());
        // Sparse: every page its own call.
        let sparse: Vec<u64> = addrs.iter().step_by(50).copied().collect();
        let mut c = vec![Residency::Unknown; sparse.len()];
        native.residency(&sparse, &mut c);
        let want: Vec<Residency> = truth.iter().step_by(50).copied().collect();
        assert_eq!(c, want);
    }

    #[test]
    fn unmapped_addresses_are_absent_not_errors() {
        let m = Own::new(16, false);
        m.touch(0);
        let a0 = m.addr(0);
        // SAFETY: unmapping the second half of our own mapping.
        unsafe { libc::munmap(m.addr(8) as *mut libc::c_void, 8 * page_size() as usize) };
        let addrs = [a0, m.addr(9), m.addr(15)];
        for mut pm in [own_pagemap(), own_pagemap().force_read()] {
            let mut out = [Residency::Unknown; 3];
            pm.residency(&addrs, &mut out);
            assert_eq!(
                out,
                [Residency::Present, Residency::Absent, Residency::Absent],
                "{:?}",
                pm.method()
            );
        }
    }

    /// The scan's runs say what the plain entries say, page by page (present, huge), on a
    /// mapping with 4 KiB pages and, where this machine gives one, a transparent huge page.
    #[test]
    fn scan_runs_agree_with_plain_entries() {
        let mut pm = own_pagemap();
        if pm.method() != PagemapMethod::Scan {
            eprintln!("no PAGEMAP_SCAN on this kernel: the plain reads are all there is");
            return;
        }
        let m = Own::new(2048, true);
        for i in (0..512).chain((600..2048).filter(|i| i % 5 != 0)) {
            m.touch(i);
        }
        let (start, end) = (m.addr(0), m.addr(2048));
        let mut entries = vec![0u64; 2048];
        pm.read_entries(start, &mut entries).unwrap();
        let q = Query {
            all: 0,
            any: category::PRESENT | category::SWAPPED,
            report: category::PRESENT | category::SWAPPED | category::HUGE,
        };
        let mut cats = vec![0u64; 2048];
        pm.runs(start, end, q, |r| {
            for a in (r.start..r.end).step_by(page_size() as usize) {
                cats[((a - start) / page_size()) as usize] = r.categories;
            }
        })
        .unwrap();
        for (i, (&e, &c)) in entries.iter().zip(&cats).enumerate() {
            assert_eq!(
                e & PM_PRESENT != 0,
                c & category::PRESENT != 0,
                "page {i}: entry {e:x}, categories {c:x}"
            );
        }
        let huge = cats.iter().filter(|&&c| c & category::HUGE != 0).count();
        eprintln!("{huge} of 2048 pages on a huge page");
        // A huge page is 512 pages, all present.
        assert_eq!(huge % 512, 0);
        assert!(cats
            .iter()
            .all(|&c| c & category::HUGE == 0 || c & category::PRESENT != 0));
    }

    /// Many alternating runs: more regions than one call returns, so the scan goes on
    /// from where the kernel stopped.
    #[test]
    fn scans_longer_than_one_call_are_continued() {
        let mut pm = own_pagemap();
        if pm.method() != PagemapMethod::Scan {
            return;
        }
        let m = Own::new(8192, false);
        for i in (0..8192).step_by(2) {
            m.touch(i);
        }
        let q = Query {
            all: 0,
            any: category::PRESENT,
            report: category::PRESENT,
        };
        let mut n = 0;
        pm.runs(m.addr(0), m.addr(8192), q, |r| {
            assert_eq!(r.end - r.start, page_size());
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 4096);
    }
}
