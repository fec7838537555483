//! The built-in writer: a process that dirties memory at a known rate, working set and
//! pattern, and can say exactly what it did. `demo`, the end-to-end tests and the benchmark
//! run it as `migtrace writer ...`.
//!
//! It prints JSON lines on stdout: `{"type":"ready",...}` once its memory is mapped (and,
//! unless `--no-prefault`, resident), and `{"type":"done",...}` with the true counts when it
//! stops (`--duration` elapsed, or SIGTERM/SIGINT). With `--wait-go` it waits for a line on
//! stdin before writing, so a watcher can attach first.
use std::{
    io::{BufRead, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;

use crate::{target::page_size, units::parse_duration};

/// Write pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Cycle through the working set in order.
    Seq,
    /// Uniformly random pages of the working set.
    Random,
    /// `--hot-share` of the writes go to the first `--hot-frac` of the pages, the rest
    /// uniformly to all pages.
    Hotcold,
    /// Touch every page of a fresh mapping exactly once, then idle (first-touch faults).
    Once,
    /// Fault-heavy loop for benchmarks: map the working set, write one byte per page,
    /// unmap, repeat, as fast as possible. Every write is a first-touch fault.
    Churn,
}

#[derive(Clone, Debug, Args)]
pub struct WriterArgs {
    /// Write pattern.
    #[arg(long, value_enum, default_value = "seq")]
    pub pattern: Pattern,
    /// Working set in MiB.
    #[arg(long, default_value_t = 64)]
    pub wss_mib: u64,
    /// Page writes per second, in MiB/s of 4 KiB pages (0 = as fast as possible).
    #[arg(long, default_value_t = 16.0)]
    pub rate_mib: f64,
    /// Stop after this long (e.g. 10s); default: until SIGTERM/SIGINT.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Do not write the working set once before reporting ready.
    #[arg(long)]
    pub no_prefault: bool,
    /// Wait for a line on stdin before writing.
    #[arg(long)]
    pub wait_go: bool,
    /// Hot-set share of the pages (hotcold).
    #[arg(long, default_value_t = 0.1)]
    pub hot_frac: f64,
    /// Share of writes that go to the hot set (hotcold).
    #[arg(long, default_value_t = 0.9)]
    pub hot_share: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Back the working set with transparent huge pages (MADV_HUGEPAGE, 2 MiB aligned)
    /// instead of forbidding them.
    #[arg(long)]
    pub thp: bool,
    /// Where the working set lives, as real targets allocate it.
    #[arg(long, value_enum, default_value = "anon")]
    pub memory: Memory,
    /// Writer threads sharing the rate (seq: each its own slice; random, hotcold: each
    /// over the whole working set).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// Extra threads that only sleep (a target with many idle threads).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub idle_threads: u32,
    /// Set the process name (prctl PR_SET_NAME), e.g. to test how names are shown.
    #[arg(long)]
    pub name: Option<String>,
}

/// Where the writer's working set lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Memory {
    /// A private anonymous mmap (MAP_PRIVATE | MAP_ANONYMOUS).
    Anon,
    /// malloc(3): glibc serves a large request with its own private mmap.
    Malloc,
    /// A shared anonymous mapping (MAP_SHARED | MAP_ANONYMOUS), shown as /dev/zero.
    SharedAnon,
    /// A memfd mapped MAP_SHARED, as QEMU's memory-backend-memfd,share=on does.
    Memfd,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Serialize)]
struct Ready {
    r#type: &'static str,
    pid: u32,
    addr: u64,
    len: u64,
    pages: u64,
    page_size: u64,
}

#[derive(Serialize)]
struct Done {
    r#type: &'static str,
    page_writes: u64,
    elapsed_s: f64,
    pages_per_sec: f64,
}

fn emit<T: Serialize>(v: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Runs the writer until done.
pub fn run(a: WriterArgs) -> Result<()> {
    install_signals();
    if let Some(name) = &a.name {
        set_name(name);
    }
    let _idle = IdleThreads::start(a.idle_threads);
    let page = page_size() as usize;
    let pages = ((a.wss_mib << 20) as usize / page).max(1);
    let ws = WorkingSet::map(pages, page, a.thp, a.memory)?;
    let mut counter: u64 = 1;
    if !a.no_prefault && !matches!(a.pattern, Pattern::Once | Pattern::Churn) {
        for i in 0..pages {
            ws.write(i, &mut counter);
        }
    }
    emit(&Ready {
        r#type: "ready",
        pid: std::process::id(),
        addr: ws.base as u64,
        len: ws.len as u64,
        pages: pages as u64,
        page_size: page as u64,
    });
    if a.wait_go {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let start = Instant::now();
    let writes = match a.pattern {
        Pattern::Once => return run_once(&a, &ws, &mut counter, start),
        Pattern::Churn => {
            // The working set mapping is not used by churn: give it back first.
            drop(ws);
            run_churn(&a, pages, page, start)?
        }
        Pattern::Seq | Pattern::Random | Pattern::Hotcold => run_threads(&a, &ws, counter, start),
    };
    emit(&done(writes, start));
    Ok(())
}

/// Names the process (the first 15 bytes, as the kernel keeps them).
fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Threads that sleep until the writer stops.
struct IdleThreads(Vec<std::thread::JoinHandle<()>>);

impl IdleThreads {
    fn start(n: u32) -> IdleThreads {
        IdleThreads(
            (0..n)
                .map(|_| {
                    std::thread::spawn(|| {
                        while !STOP.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect(),
        )
    }
}

impl Drop for IdleThreads {
    fn drop(&mut self) {
        STOP.store(true, Ordering::Relaxed);
        for t in self.0.drain(..) {
            let _ = t.join();
        }
    }
}

/// `seq`, `random`, `hotcold` on `--threads` threads; returns page writes of all of them.
/// `counter` is the next value to write: every write stores a value never stored before,
/// so every write changes the page's content (the prefault's values included).
fn run_threads(a: &WriterArgs, ws: &WorkingSet, counter: u64, start: Instant) -> u64 {
    let n = a.threads.max(1) as usize;
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let lane = Lane { k, n, counter };
                sc.spawn(move || run_steady(a, ws, lane, start))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// One writer thread's part: thread `k` of `n`.
#[derive(Clone, Copy)]
struct Lane {
    k: usize,
    n: usize,
    /// The first value this run may write (after the prefault's).
    counter: u64,
}

fn install_signals() {
    // SAFETY: installing async-signal-safe handlers that store to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// True until a signal asks to stop or `duration` has passed since `start`.
fn running(duration: Option<Duration>, start: Instant) -> bool {
    !STOP.load(Ordering::Relaxed) && duration.is_none_or(|d| start.elapsed() < d)
}

/// The writer's working set; unmapped (or freed) on drop.
struct WorkingSet {
    /// The allocation as returned by mmap or malloc (what munmap or free takes).
    map: *mut libc::c_void,
    map_len: usize,
    memory: Memory,
    /// The first page written (2 MiB aligned with THP, page aligned otherwise).
    base: *mut u8,
    len: usize,
    page: usize,
}

// SAFETY: the working set is plain memory that lives as long as the struct; threads only
// store to it through atomics (see `write`).
unsafe impl Sync for WorkingSet {}

impl WorkingSet {
    /// Allocates `pages` pages of `memory`, with room to align the first page (to 2 MiB
    /// with `thp`, advised MADV_HUGEPAGE; without, huge pages are forbidden where we map the
    /// memory ourselves, so one fault is one 4 KiB page).
    fn map(pages: usize, page: usize, thp: bool, memory: Memory) -> Result<WorkingSet> {
        const HUGE: usize = 2 << 20;
        let len = pages * page;
        let align = if thp { HUGE } else { page };
        let map_len = len + align;
        let map = allocate(map_len, memory)?;
        let base = (map as usize).next_multiple_of(align) as *mut libc::c_void;
        let advice = if thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: advising our own memory, inside its bounds (malloc'd memory too: glibc
        // serves requests this large with a private mmap of their own).
        unsafe { libc::madvise(base, len, advice) };
        Ok(WorkingSet {
            map,
            map_len,
            memory,
            base: base as *mut u8,
            len,
            page,
        })
    }

    /// Writes a new value into page `i`, so its content hash changes.
    fn write(&self, i: usize, counter: &mut u64) {
        assert!(i * self.page < self.len, "page {i} outside the working set");
        // SAFETY: inside the allocation (checked above) and 8-byte aligned (page aligned);
        // an atomic store, so threads writing the same page do not race.
        let cell =
            unsafe { &*(self.base.add(i * self.page) as *const std::sync::atomic::AtomicU64) };
        cell.store(*counter, Ordering::Relaxed);
        *counter += 1;
    }
}

/// `len` bytes of `memory`, zeroed.
fn allocate(len: usize, memory: Memory) -> Result<*mut libc::c_void> {
    let (flags, fd) = match memory {
        Memory::Malloc => {
            // SAFETY: plain allocation, checked for failure.
            let p = unsafe { libc::malloc(len) };
            return if p.is_null() {
                Err(anyhow::anyhow!("malloc of {len} bytes failed"))
            } else {
                Ok(p)
            };
        }
        Memory::Anon => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        Memory::SharedAnon => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        Memory::Memfd => (libc::MAP_SHARED, memfd(len)?),
    };
    // SAFETY: a fresh mapping, checked for failure below; the memfd stays referenced by
    // the mapping after we close it.
    let map = unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        );
        if fd >= 0 {
            libc::close(fd);
        }
        m
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mmap of the working set");
    }
    Ok(map)
}

/// A memfd of `len` bytes (named like QEMU's RAM backend).
fn memfd(len: usize) -> Result<i32> {
    // SAFETY: a NUL-terminated name; the fd is checked and sized below.
    let fd = unsafe { libc::memfd_create(c"migtrace-writer-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: sizing our own fd.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(e).context("ftruncate of the memfd");
    }
    Ok(fd)
}

impl Drop for WorkingSet {
    fn drop(&mut self) {
        // SAFETY: releasing our own allocation, which nothing uses after this.
        unsafe {
            if self.memory == Memory::Malloc {
                libc::free(self.map);
            } else {
                libc::munmap(self.map, self.map_len);
            }
        }
    }
}

/// `once`: touch every page, report, then idle with the memory mapped until told to stop,
/// so a watcher sees a quiet target.
fn run_once(a: &WriterArgs, ws: &WorkingSet, counter: &mut u64, start: Instant) -> Result<()> {
    let pages = ws.len / ws.page;
    for i in 0..pages {
        ws.write(i, counter);
    }
    emit(&done(pages as u64, start));
    while running(a.duration, start) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `churn`: map, write one byte per page, unmap, as fast as possible. Returns page writes.
fn run_churn(a: &WriterArgs, pages: usize, page: usize, start: Instant) -> Result<u64> {
    let mut writes = 0u64;
    while running(a.duration, start) {
        let ws = WorkingSet::map(pages, page, false, Memory::Anon)?;
        for i in 0..pages {
            // SAFETY: inside the fresh mapping.
            unsafe { std::ptr::write_volatile(ws.base.add(i * page), 1) };
        }
        writes += pages as u64;
    }
    Ok(writes)
}

/// One thread of `seq`, `random`, `hotcold`: paced by wall-clock time, every millisecond
/// writing what is due of its share of the rate. Returns its page writes.
fn run_steady(a: &WriterArgs, ws: &WorkingSet, lane: Lane, start: Instant) -> u64 {
    let pages = ws.len / ws.page;
    // seq: each thread cycles through its own slice; the others pick from all pages.
    let (lo, hi) = match a.pattern {
        Pattern::Seq => (
            pages * lane.k / lane.n,
            (pages * (lane.k + 1) / lane.n).max(pages * lane.k / lane.n + 1),
        ),
        _ => (0, pages),
    };
    let mut rng = SmallRng::seed_from_u64(a.seed.wrapping_add(lane.k as u64));
    let rate = a.rate_mib * (1u64 << 20) as f64 / ws.page as f64 / lane.n as f64; // pages/s
    let hot = ((pages as f64 * a.hot_frac) as usize).clamp(1, pages);
    let mut seq = lo;
    let mut next = |rng: &mut SmallRng| -> usize {
        match a.pattern {
            Pattern::Random => rng.gen_range(0..pages),
            Pattern::Hotcold if rng.gen_bool(a.hot_share.clamp(0.0, 1.0)) => rng.gen_range(0..hot),
            Pattern::Hotcold => rng.gen_range(0..pages),
            _ => {
                let i = seq;
                seq = if seq + 1 >= hi { lo } else { seq + 1 };
                i
            }
        }
    };
    // Content changes with every write; threads count in disjoint ranges above the
    // prefault's values.
    let mut counter = lane.counter + ((lane.k as u64) << 48);
    let mut writes: u64 = 0;
    while running(a.duration, start) {
        let t = start.elapsed();
        let due = if rate > 0.0 {
            (rate * t.as_secs_f64()) as u64
        } else {
            writes + 4096
        };
        while writes < due {
            ws.write(next(&mut rng).min(pages - 1), &mut counter);
            writes += 1;
        }
        if rate > 0.0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writes
}

fn done(writes: u64, start: Instant) -> Done {
    let el = start.elapsed().as_secs_f64();
    Done {
        r#type: "done",
        page_writes: writes,
        elapsed_s: el,
        pages_per_sec: if el > 0.0 { writes as f64 / el } else { 0.0 },
    }
}

/// Expected unique pages dirtied in a window of `window_s` seconds by a writer of `rate`
/// page writes per second over `pages` pages (the truth `demo` and the tests compare with).
pub fn expected_unique(
    pattern: Pattern,
    rate: f64,
    pages: f64,
    window_s: f64,
    hot_frac: f64,
    hot_share: f64,
) -> f64 {
    let w = rate * window_s;
    match pattern {
        Pattern::Seq => w.min(pages),
        // Each page is missed by all w writes with probability (1 - 1/N)^w.
        Pattern::Random => pages * (1.0 - (-w / pages).exp()),
        Pattern::Hotcold => {
            let hot = (pages * hot_frac).max(1.0);
            let cold = pages - hot;
            // A hot page receives writes at rate share/hot + (1-share)/pages per write.
            let ph = hot_share / hot + (1.0 - hot_share) / pages;
            let pc = (1.0 - hot_share) / pages;
            hot * (1.0 - (-w * ph).exp()) + cold * (1.0 - (-w * pc).exp())
        }
        Pattern::Once | Pattern::Churn => pages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_unique_limits() {
        assert_eq!(
            expected_unique(Pattern::Seq, 100.0, 1000.0, 2.0, 0.0, 0.0),
            200.0
        );
        assert_eq!(
            expected_unique(Pattern::Seq, 100.0, 1000.0, 20.0, 0.0, 0.0),
            1000.0
        );
        let r = expected_unique(Pattern::Random, 100.0, 1000.0, 1000.0, 0.0, 0.0);
        assert!((r - 1000.0).abs() < 1e-3);
        let small = expected_unique(Pattern::Random, 1.0, 1e6, 1.0, 0.0, 0.0);
        assert!((small - 1.0).abs() < 1e-3);
        // hot/cold with all writes hot saturates at the hot set first.
        let h = expected_unique(Pattern::Hotcold, 1000.0, 10_000.0, 10.0, 0.1, 1.0);
        assert!((h - 1000.0).abs() < 1.0, "{h}");
    }
}
