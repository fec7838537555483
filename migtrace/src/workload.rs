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
    let page = page_size() as usize;
    let pages = ((a.wss_mib << 20) as usize / page).max(1);
    let ws = WorkingSet::map(pages, page, a.thp)?;
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
        Pattern::Seq | Pattern::Random | Pattern::Hotcold => {
            run_steady(&a, &ws, &mut counter, start)
        }
    };
    emit(&done(writes, start));
    Ok(())
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

/// The writer's anonymous working set; unmapped on drop.
struct WorkingSet {
    /// The mapping as returned by mmap (what munmap takes).
    map: *mut libc::c_void,
    map_len: usize,
    /// The first page written (2 MiB aligned with THP).
    base: *mut u8,
    len: usize,
    page: usize,
}

impl WorkingSet {
    /// Maps `pages` pages; with `thp`, 2 MiB more so that whole huge pages fit from a 2 MiB
    /// boundary, advised MADV_HUGEPAGE. Without, huge pages are forbidden, so one fault is
    /// one 4 KiB page.
    fn map(pages: usize, page: usize, thp: bool) -> Result<WorkingSet> {
        const HUGE: usize = 2 << 20;
        let len = pages * page;
        let map_len = if thp { len + HUGE } else { len };
        // SAFETY: anonymous private mapping, checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of the working set");
        }
        let (base, advice) = if thp {
            let aligned = (map as usize).next_multiple_of(HUGE) as *mut libc::c_void;
            (aligned, libc::MADV_HUGEPAGE)
        } else {
            (map, libc::MADV_NOHUGEPAGE)
        };
        // SAFETY: advising our own mapping, inside its bounds.
        unsafe { libc::madvise(base, len, advice) };
        Ok(WorkingSet {
            map,
            map_len,
            base: base as *mut u8,
            len,
            page,
        })
    }

    /// Writes a new value into page `i`, so its content hash changes.
    fn write(&self, i: usize, counter: &mut u64) {
        assert!(i * self.page < self.len, "page {i} outside the working set");
        // SAFETY: inside the mapping (checked above). Volatile so the compiler keeps every
        // store.
        unsafe { std::ptr::write_volatile(self.base.add(i * self.page) as *mut u64, *counter) };
        *counter += 1;
    }
}

impl Drop for WorkingSet {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing uses after this.
        unsafe { libc::munmap(self.map, self.map_len) };
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
        let ws = WorkingSet::map(pages, page, false)?;
        for i in 0..pages {
            // SAFETY: inside the fresh mapping.
            unsafe { std::ptr::write_volatile(ws.base.add(i * page), 1) };
        }
        writes += pages as u64;
    }
    Ok(writes)
}

/// `seq`, `random`, `hotcold`: paced by wall-clock time, every millisecond writing what is
/// due. Returns page writes.
fn run_steady(a: &WriterArgs, ws: &WorkingSet, counter: &mut u64, start: Instant) -> u64 {
    let pages = ws.len / ws.page;
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let rate = a.rate_mib * (1u64 << 20) as f64 / ws.page as f64; // pages per second
    let hot = ((pages as f64 * a.hot_frac) as usize).clamp(1, pages);
    let mut seq = 0usize;
    let mut next = |rng: &mut SmallRng| -> usize {
        match a.pattern {
            Pattern::Random => rng.gen_range(0..pages),
            Pattern::Hotcold if rng.gen_bool(a.hot_share.clamp(0.0, 1.0)) => rng.gen_range(0..hot),
            Pattern::Hotcold => rng.gen_range(0..pages),
            _ => {
                let i = seq;
                seq = (seq + 1) % pages;
                i
            }
        }
    };
    let mut writes: u64 = 0;
    while running(a.duration, start) {
        let t = start.elapsed();
        let due = if rate > 0.0 {
            (rate * t.as_secs_f64()) as u64
        } else {
            writes + 4096
        };
        while writes < due {
            ws.write(next(&mut rng), counter);
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
