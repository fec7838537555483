//! The `sample` backend: content-hash sampling of the target's private writable memory, the
//! method of QEMU's `calc-dirty-rate` page-sampling mode.
//!
//! A fixed random sample of virtual pages is hashed (xxh3) at every interval boundary; the
//! share of sampled pages whose content changed, times the number of pages sampled from, is
//! the estimate of unique pages dirtied in the interval, with a Wilson 95 % interval.
//! Comparing against older snapshots (1, 2, 4 ... 64 intervals back) gives the dirty-set
//! growth curve for windows of whole intervals.
//!
//! The sample stays fixed between redraws, so its errors repeat from interval to interval.
//! The run's confidence interval therefore comes from the per-page counts of changed
//! intervals (cluster sampling: the variance of those counts over the sampled pages), not
//! from the per-interval intervals added as if independent. The sample is redrawn when the
//! memory map changes by more than 5 % of its pages (new or removed mappings), and during the
//! first intervals to reach the requested precision.
//!
//! Reading never disturbs the target: `/proc/PID/pagemap` is consulted first, and pages that
//! are not present are not read (reading them would map the zero page into the target and
//! turn its next write into a different kind of fault), nor are swapped-out pages (reading
//! would swap them in). pagemap is read only for the sampled pages, one call per run of nearby
//! ones, with `PAGEMAP_SCAN` where the kernel has it ([`super::pagemap`]).
//!
//! Cost. The work per interval is per sampled page (about 2 µs here: a pagemap look-up, a
//! 4 KiB copy, a hash), never per page of the target. The sample size starts at 4096 pages
//! and, unless fixed with `--sample-pages`, is resized during the first intervals so that
//! the 95 % half-width is about `--sample-error` of the estimate, but no larger than the
//! watch's CPU budget (`--sample-cpu`, 1 % of a core) affords, at the cost per page the
//! snapshots measure and after what the rest of the watch takes. The share of changed pages
//! falls as the target grows at a given rate, so ±5 % on a large target can need more pages
//! than the budget allows: then the sample is capped, every interval shows the wider 95 %
//! interval it leaves, and a caveat says so (docs/benchmarks.md has the figures).
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use rand::{rngs::SmallRng, SeedableRng};
use xxhash_rust::xxh3::xxh3_64;

use super::{
    pagemap::{Pagemap, Residency},
    DirtySource, SourceOptions,
};
use crate::{
    error::Error,
    estimate::{sample_size_for, wilson, Mean},
    model::summary::FULL_SHARE,
    record::{Drops, FinalReport, GrowthPoint, IntervalReport, SampleInfo},
    target::{page_size, Region, Target},
};

const ABSENT: u64 = 0;
const SWAPPED: u64 = 1;
const MISS: u64 = 2;
const MIN_PAGES: u64 = 1024;
const MAX_PAGES: u64 = 65_536;
const FIRST_PAGES: u64 = 4096;
/// The watch's default CPU budget when sampling, percent of one core (`--sample-cpu`).
pub const DEFAULT_CPU_PCT: f64 = 1.0;

/// Pages read once to measure the zero share for backends that never read page contents:
/// ±1.5 points at 95 % whatever the target's size (QEMU's page sampling reads 512 per GiB).
pub const ZERO_SHARE_PAGES: u64 = 4096;

/// The share of the target's measured memory that a migration sends as a header only (pages
/// absent or all zero), from one read of [`ZERO_SHARE_PAGES`] random pages. For `softdirty`
/// and `fault`, which see writes but not contents: without it `predict` falls back to
/// 1 − resident/writable, which is near 0 for a guest on transparent huge pages (resident
/// in 2 MiB units, zero or not). `None` when no page could be read.
pub fn zero_share_once(opts: &SourceOptions) -> Option<f64> {
    let mut o = opts.clone();
    o.sample_pages = Some(ZERO_SHARE_PAGES);
    SampleSource::new(&o).ok().and_then(|s| s.zero_share)
}
/// Intervals during which the sample size may still adapt.
const ADAPT_INTERVALS: u32 = 3;
/// Lags kept for the growth curve: 1, 2, 4, ..., 64 intervals.
const MAX_LAG: usize = 64;
/// Pages per `process_vm_readv` call (IOV_MAX is 1024).
const BATCH: usize = 256;

pub struct SampleSource {
    target: Target,
    pagemap: Pagemap,
    page: u64,
    rng: SmallRng,
    interval: Duration,
    fixed_n: Option<u64>,
    rel_error: f64,
    /// Sorted sampled page addresses.
    addrs: Vec<u64>,
    /// Writable pages sampled from.
    population: u64,
    /// The mappings the sample was drawn from.
    regions: Vec<Region>,
    /// Per sampled page: intervals in which it changed (since the last redraw).
    changes: Vec<u32>,
    /// Variance of the summed unique-page estimates of earlier sample generations.
    done_var: f64,
    /// The same for the warm-up intervals (before the sample last had to grow).
    warm_var: f64,
    /// Midpoint of the last snapshot (the start of the next interval's window).
    last_mid: Instant,
    /// Recent snapshots of the current sample, each with its midpoint time.
    history: VecDeque<(Vec<u64>, Instant)>,
    hzero: u64,
    intervals: u32,
    /// Per lag 2^j: unique pages between snapshots that far apart, and the measured
    /// length of those windows (never the asked interval times 2^j).
    lags: Vec<(Mean, Mean)>,
    zero_share: Option<f64>,
    buf: Vec<u8>,
    /// What reading the sample costs, and the budget it is sized within.
    cost: Cost,
}

/// The sampler's CPU: what one sampled page costs to read, what the rest of the watch
/// costs, and the budget (`--sample-cpu`) that caps the sample.
#[derive(Debug, Default)]
struct Cost {
    /// The whole watch's CPU budget in steady state, share of one core.
    budget: f64,
    /// Thread CPU of the last snapshot per page read, seconds.
    per_page: Option<f64>,
    /// Thread CPU of the snapshots since the last interval end, and the process CPU and
    /// time at that end: the rest of the watch's CPU is the difference.
    snapshots: Duration,
    mark: Option<(Duration, Instant)>,
    /// Share of a core the rest of the watch (ticks, /proc reads, eBPF maps) took in the
    /// last interval, from the second on (the first holds the watch's start-up).
    other: Option<f64>,
    ends: u32,
    /// Set when the budget capped the sample: (pages needed for --sample-error, share of
    /// changed pages the need was computed at).
    capped: Option<(u64, f64)>,
}

/// CPU time of this thread or process (`CLOCK_THREAD_CPUTIME_ID`, `CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Cost {
    /// Ends an interval: what the rest of the watch took since the last end. A watch runs
    /// on one thread (a current-thread runtime: its ticks, eBPF reads and QMP task), so this
    /// thread's CPU is the watch's; the process clock would charge each watch of an
    /// `exporter` with every other target's sampling and starve them all.
    fn end_interval(&mut self) {
        let (proc_now, now) = (cpu_time(libc::CLOCK_THREAD_CPUTIME_ID), Instant::now());
        self.ends += 1;
        if let Some((proc_then, then)) = self.mark.filter(|_| self.ends > 2) {
            let wall = now.duration_since(then).as_secs_f64();
            let rest = proc_now
                .saturating_sub(proc_then)
                .saturating_sub(self.snapshots);
            if wall > 0.0 {
                self.other = Some(rest.as_secs_f64() / wall);
            }
        }
        self.mark = Some((proc_now, now));
        self.snapshots = Duration::ZERO;
    }

    /// The most pages a snapshot per `interval` may read within the budget (`None` until
    /// a snapshot was timed).
    fn affordable(&self, interval: Duration) -> Option<u64> {
        let per_page = self.per_page?;
        let left = (self.budget - self.other.unwrap_or(0.0)).max(0.0);
        Some((left * interval.as_secs_f64() / per_page) as u64)
    }
}

/// Opens the target's pagemap: a missing privilege if refused.
fn open_pagemap(pid: u32) -> Result<Pagemap> {
    Pagemap::open(pid).map_err(|e| {
        Error::Privilege(format!(
            "cannot open /proc/{pid}/pagemap: {e} (sampling needs ptrace rights on the target: {})",
            crate::target::ptrace_hint()
        ))
        .into()
    })
}

/// Whether a page changed between two snapshot states; `None` when either read failed.
fn changed(prev: u64, cur: u64, hzero: u64) -> Option<bool> {
    if prev == MISS || cur == MISS {
        return None;
    }
    if prev == cur {
        return Some(false);
    }
    let zeroish = |s: u64| s == ABSENT || s == hzero;
    if (zeroish(prev) && zeroish(cur)) || prev == SWAPPED || cur == SWAPPED {
        return Some(false);
    }
    Some(true)
}

impl SampleSource {
    pub fn new(opts: &SourceOptions) -> Result<SampleSource> {
        let target = Target::open(opts.pid)?.with_ranges(opts.scope());
        let pagemap = open_pagemap(opts.pid)?;
        let page = page_size();
        let mut s = SampleSource {
            target,
            pagemap,
            page,
            rng: SmallRng::from_entropy(),
            interval: opts.interval,
            fixed_n: opts.sample_pages,
            rel_error: opts.sample_error,
            addrs: Vec::new(),
            population: 0,
            regions: Vec::new(),
            changes: Vec::new(),
            done_var: 0.0,
            warm_var: 0.0,
            last_mid: Instant::now(),
            history: VecDeque::new(),
            hzero: Self::state_of_hash(xxh3_64(&vec![0u8; page as usize])),
            intervals: 0,
            lags: vec![Default::default(); MAX_LAG.trailing_zeros() as usize + 1],
            zero_share: None,
            buf: vec![0u8; BATCH * page as usize],
            cost: Cost {
                budget: opts.sample_cpu_pct / 100.0,
                ..Default::default()
            },
        };
        let n = s.fixed_n.unwrap_or(FIRST_PAGES);
        s.draw(n)?;
        let base = s.snapshot()?;
        if base.1 == s.addrs.len() as u64 && !s.addrs.is_empty() {
            return Err(anyhow!(
                "could not read any sampled page of pid {}",
                opts.pid
            ));
        }
        s.history.push_back((base.0, s.last_mid));
        s.cost.end_interval();
        Ok(s)
    }

    /// Variance of the current generation's summed estimate: pop^2 var(c) / n, where c is
    /// each sampled page's count of changed intervals.
    fn generation_var(&self) -> f64 {
        let n = self.changes.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.changes.iter().map(|&c| c as f64).sum::<f64>() / n as f64;
        let var = self
            .changes
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        let pop = self.population as f64;
        pop * pop * var / n as f64
    }

    fn state_of_hash(h: u64) -> u64 {
        if h <= MISS {
            h + MISS + 1
        } else {
            h
        }
    }

    /// Draws a new sample of `n` distinct pages from the current writable memory.
    fn draw(&mut self, n: u64) -> Result<()> {
        let regions = self.target.writable_regions()?;
        let page = self.page;
        let population: u64 = regions.iter().map(|r| r.len() / page).sum();
        self.done_var += self.generation_var();
        self.population = population;
        self.history.clear();
        let n = n.min(population);
        let mut idx: Vec<u64> = if n == population {
            (0..population).collect()
        } else {
            rand::seq::index::sample(&mut self.rng, population as usize, n as usize)
                .into_iter()
                .map(|i| i as u64)
                .collect()
        };
        idx.sort_unstable();
        self.addrs = index_to_addrs(&regions, &idx, page);
        self.changes = vec![0; self.addrs.len()];
        self.regions = regions;
        Ok(())
    }

    /// Reads the state of every sampled page: a content hash, or ABSENT/SWAPPED/MISS.
    /// Returns the states and the number of misses.
    fn snapshot(&mut self) -> Result<(Vec<u64>, u64)> {
        let t0 = Instant::now();
        let cpu0 = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
        let r = self.snapshot_inner();
        self.last_mid = t0 + t0.elapsed() / 2;
        let cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu0);
        self.cost.snapshots += cpu;
        if !self.addrs.is_empty() {
            self.cost.per_page = Some(cpu.as_secs_f64() / self.addrs.len() as f64);
        }
        r
    }

    fn snapshot_inner(&mut self) -> Result<(Vec<u64>, u64)> {
        let mut states = vec![MISS; self.addrs.len()];
        let mut to_read: Vec<usize> = Vec::with_capacity(self.addrs.len());
        let mut res = vec![Residency::Unknown; self.addrs.len()];
        self.pagemap.residency(&self.addrs, &mut res);
        for (i, r) in res.into_iter().enumerate() {
            match r {
                Residency::Present => to_read.push(i),
                Residency::Swapped => states[i] = SWAPPED,
                Residency::Absent => states[i] = ABSENT,
                Residency::Unknown => states[i] = MISS,
            }
        }
        let mut misses = 0;
        for chunk in to_read.chunks(BATCH) {
            self.read_batch(chunk, &mut states)?;
        }
        for s in &states {
            if *s == MISS {
                misses += 1;
            }
        }
        let zeroish = states
            .iter()
            .filter(|&&s| s == ABSENT || s == self.hzero)
            .count();
        if !states.is_empty() {
            self.zero_share = Some(zeroish as f64 / states.len() as f64);
        }
        Ok((states, misses))
    }

    /// Reads and hashes the pages `which` (indexes into `addrs`), skipping over pages that
    /// fail (the call stops at the first unreadable page).
    fn read_batch(&mut self, which: &[usize], states: &mut [u64]) -> Result<()> {
        let page = self.page as usize;
        let mut start = 0;
        while start < which.len() {
            let part = &which[start..];
            let local = [libc::iovec {
                iov_base: self.buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: part.len() * page,
            }];
            let remote: Vec<libc::iovec> = part
                .iter()
                .map(|&i| libc::iovec {
                    iov_base: self.addrs[i] as *mut libc::c_void,
                    iov_len: page,
                })
                .collect();
            // SAFETY: local points at our buffer of sufficient size; remote addresses are
            // only read by the kernel on the target's behalf.
            let n = unsafe {
                libc::process_vm_readv(
                    self.target.pid as libc::pid_t,
                    local.as_ptr(),
                    1,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        return Err(Error::Privilege(format!(
                            "process_vm_readv on pid {} was refused ({err}): sampling needs ptrace rights ({})",
                            self.target.pid,
                            crate::target::ptrace_hint()
                        ))
                        .into())
                    }
                    Some(libc::ESRCH) => return Err(anyhow!("pid {} exited", self.target.pid)),
                    // The first page failed: count it as a miss and go on after it.
                    _ => {
                        start += 1;
                        continue;
                    }
                }
            }
            let full = n as usize / page;
            for (k, &i) in part[..full].iter().enumerate() {
                states[i] = Self::state_of_hash(xxh3_64(&self.buf[k * page..(k + 1) * page]));
            }
            // A short read stops at an unreadable page: it stays MISS; continue after it.
            start += full + usize::from(full < part.len());
        }
        Ok(())
    }

    /// Whether the memory map moved by more than 5 % of the sampled population since the
    /// draw (mappings added or removed, even when the total size stayed the same).
    fn map_changed(&self) -> Result<bool> {
        let now = self.target.writable_regions()?;
        let moved = uncovered(&now, &self.regions) + uncovered(&self.regions, &now);
        Ok(moved / self.page * 20 > self.population.max(1))
    }
}

/// Bytes of `a` not covered by `b` (both sorted, non-overlapping).
fn uncovered(a: &[Region], b: &[Region]) -> u64 {
    let mut total = 0;
    for r in a {
        let covered: u64 = b
            .iter()
            .map(|x| r.end.min(x.end).saturating_sub(r.start.max(x.start)))
            .sum();
        total += r.len() - covered.min(r.len());
    }
    total
}

/// Compares two snapshots of the same sample: (pages comparable, pages changed), calling
/// `on_change` with the index of each changed page.
fn count_changes(
    older: &[u64],
    cur: &[u64],
    hzero: u64,
    mut on_change: impl FnMut(usize),
) -> (u64, u64) {
    let (mut valid, mut k) = (0u64, 0u64);
    for (i, (&a, &b)) in older.iter().zip(cur).enumerate() {
        if let Some(ch) = changed(a, b, hzero) {
            valid += 1;
            if ch {
                k += 1;
                on_change(i);
            }
        }
    }
    (valid, k)
}

/// Maps sorted page indexes over the concatenated regions to addresses.
fn index_to_addrs(regions: &[Region], idx: &[u64], page: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(idx.len());
    let mut base = 0u64;
    let mut ri = 0;
    for &i in idx {
        while ri < regions.len() && i >= base + regions[ri].len() / page {
            base += regions[ri].len() / page;
            ri += 1;
        }
        if ri == regions.len() {
            break;
        }
        out.push(regions[ri].start + (i - base) * page);
    }
    out
}

impl SampleSource {
    /// Growth curve: compares the newest snapshot with those 1, 2, 4, ... intervals back.
    fn update_lags(&mut self) {
        let pop = self.population as f64;
        let last = self.history.len() - 1;
        for (j, (m, secs)) in self.lags.iter_mut().enumerate() {
            let lag = 1usize << j;
            if lag > last {
                break;
            }
            let (older, t0) = &self.history[last - lag];
            let (newer, t1) = &self.history[last];
            let (v, c) = count_changes(older, newer, self.hzero, |_| {});
            if v > 0 {
                m.add(c as f64 / v as f64 * pop);
                secs.add(t1.duration_since(*t0).as_secs_f64());
            }
        }
        while self.history.len() > MAX_LAG + 1 {
            self.history.pop_front();
        }
    }

    /// Resizes the sample during the first intervals (to reach `--sample-error` at the
    /// share `p` of changed pages, `k` of them seen), or redraws it when the memory map
    /// changed a lot. Returns true when the sample had to grow: the intervals so far were
    /// measured less precisely than asked, so they are warm-up, and their variance leaves
    /// the run's confidence interval with them.
    fn adapt(&mut self, seen: Option<(f64, u64)>) -> Result<bool> {
        let cur_n = self.addrs.len() as u64;
        let resize = match seen {
            Some((p, k))
                if self.fixed_n.is_none() && self.intervals <= ADAPT_INTERVALS && k > 0 =>
            {
                self.sized(p, cur_n)
            }
            _ => None,
        };
        let grew = resize.is_some_and(|n| n > cur_n);
        if grew {
            // The intervals so far are warm-up: their variance goes with them.
            self.warm_var += self.done_var + self.generation_var();
            self.done_var = 0.0;
            self.changes.fill(0);
        }
        if resize.is_some() || self.map_changed()? {
            let n = resize.unwrap_or(cur_n);
            log::debug!("redrawing the sample: {cur_n} -> {n} pages");
            self.redraw(n)?;
        }
        Ok(grew)
    }

    /// The sample size for a share `p` of changed pages: what `--sample-error` needs, but
    /// no more than the CPU budget affords (at the cost per page the last snapshot took).
    /// `Some` when it should change from `cur_n`: grown by more than a quarter, halved, or
    /// over the budget by more than a tenth.
    fn sized(&mut self, p: f64, cur_n: u64) -> Option<u64> {
        let need = (sample_size_for(p, self.rel_error).ceil() as u64)
            .clamp(MIN_PAGES, MAX_PAGES)
            .min(self.population);
        let afford = self
            .cost
            .affordable(self.interval)
            .unwrap_or(u64::MAX)
            .max(MIN_PAGES);
        let n = need.min(afford);
        self.cost.capped = (n < need).then_some((need, p));
        let over_budget = cur_n > afford + afford / 10;
        (n > cur_n + cur_n / 4 || n < cur_n / 2 || over_budget).then_some(n)
    }

    /// What the budget did to the sample, in words (for the caveats).
    fn budget_caveat(&self) -> Option<String> {
        let (need, p) = self.cost.capped?;
        let n = self.addrs.len() as u64;
        let half = |n: u64| 1.96 * ((1.0 - p) / (n as f64 * p)).sqrt() * 100.0;
        Some(format!(
            "the sample was capped at {n} pages by the CPU budget (--sample-cpu {:.2} % of a core for the whole watch; reading one sampled page costs {:.1} µs here): ±{:.0} % would take {need} pages, so each interval's 95 % interval is about ±{:.0} % of its rate (shown on every line); the run's interval narrows as intervals add up",
            self.cost.budget * 100.0,
            self.cost.per_page.unwrap_or(0.0) * 1e6,
            self.rel_error * 100.0,
            half(n)
        ))
    }

    /// Draws a new sample of `n` pages from the current memory map, reopening pagemap
    /// (after an exec the old descriptor still reads the old, dead address space), and
    /// takes its baseline snapshot.
    fn redraw(&mut self, n: u64) -> Result<()> {
        self.pagemap = open_pagemap(self.target.pid)?;
        self.draw(n)?;
        let (base, _) = self.snapshot()?;
        self.history.push_back((base, self.last_mid));
        Ok(())
    }
}

impl DirtySource for SampleSource {
    fn name(&self) -> &'static str {
        "sample"
    }

    fn caveats(&self) -> Vec<String> {
        let mut c = vec![
            "sample is an estimate (95 % confidence interval shown); a write that leaves a page's content unchanged is not seen".into(),
            "mappings created after the sample was drawn are not sampled until the map has moved by 5 % and the sample is redrawn".into(),
            "swapped-out pages are not read (that would swap them in) and count as unchanged".into(),
        ];
        c.extend(self.budget_caveat());
        c
    }

    fn on_exec(&mut self) -> Result<()> {
        // A new address space: a new sample; the old snapshots compare with nothing, and
        // the growth curve of the old program is not this one's.
        self.lags = vec![Default::default(); self.lags.len()];
        self.redraw(self.addrs.len().max(FIRST_PAGES as usize) as u64)
    }

    fn end_interval(&mut self, target_gone: bool) -> Result<IntervalReport> {
        if target_gone {
            // The memory is gone: nothing to compare with; `measured` stays false.
            return Ok(IntervalReport::default());
        }
        let start_mid = self.last_mid;
        let (cur, misses) = match self.snapshot() {
            Ok(s) => s,
            Err(e) if !self.target.alive() => {
                log::debug!("target exited during sampling: {e}");
                return Ok(IntervalReport::default());
            }
            Err(e) => return Err(e),
        };
        self.intervals += 1;
        let (prev, _) = self.history.back().context("no baseline snapshot")?;
        let changes = &mut self.changes;
        let (valid, k) = count_changes(prev, &cur, self.hzero, |i| changes[i] += 1);
        let pop = self.population as f64;
        if valid == 0 {
            // Every sampled page missed (the memory map changed under the sample, e.g. an
            // exec), or nothing is mapped to sample: no estimate, rather than a false 0.
            self.history.push_back((cur, self.last_mid));
            let remapped = self.map_changed()?;
            if remapped {
                self.redraw(self.addrs.len().max(FIRST_PAGES as usize) as u64)?;
            }
            return Ok(IntervalReport {
                drops: Drops {
                    sample_misses: misses,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let p = k as f64 / valid as f64;
        let (lo, hi) = wilson(k, valid, 1.96);
        let window = self.last_mid.duration_since(start_mid);
        let mut report = IntervalReport {
            measured: true,
            window: Some(window),
            unique_pages: p * pop,
            ci95: Some((lo * pop, hi * pop)),
            faults: None,
            drops: Drops {
                sample_misses: misses,
                ..Default::default()
            },
            sample: Some(SampleInfo {
                sampled: valid,
                changed: k,
                population: self.population,
            }),
            warmup: false,
        };
        self.history.push_back((cur, self.last_mid));
        // A partial window (the watch ending mid-interval) would put a short window among
        // the full ones of its lag: it stays out of the growth curve.
        if window.as_secs_f64() >= FULL_SHARE * self.interval.as_secs_f64() {
            self.update_lags();
        }
        // Only a full interval's share of changed pages can size the sample: a partial one
        // saw fewer changes over its shorter window.
        let full = window.as_secs_f64() >= FULL_SHARE * self.interval.as_secs_f64();
        self.cost.end_interval();
        report.warmup = self.adapt(if full { Some((p, k)) } else { None })?;
        Ok(report)
    }

    fn finish(&mut self) -> Result<FinalReport> {
        let growth = self
            .lags
            .iter()
            .filter_map(|(m, secs)| {
                Some(GrowthPoint {
                    window_s: secs.get()?,
                    unique_pages: m.get()?,
                    windows: m.n,
                })
            })
            // Measured windows of successive lags always grow; a point that did not (clock
            // trouble) is dropped rather than written unsorted.
            .fold(Vec::new(), |mut v: Vec<GrowthPoint>, g| {
                if v.last().is_none_or(|l| g.window_s > l.window_s) {
                    v.push(g);
                }
                v
            });
        Ok(FinalReport {
            growth,
            unique_pages_total: None,
            threads: Vec::new(),
            zero_page_share: self.zero_share,
            backend_stats: None,
            total_pages_sd: Some((self.done_var + self.generation_var()).sqrt()),
            warmup_pages_sd: Some(self.warm_var.sqrt()),
            threads_attribute_dirtying: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of 1,024 pages of our own memory, the first 256 written with data, the next
    /// 256 written with zeros, the rest never touched: three quarters read as zero.
    #[test]
    fn the_zero_share_counts_absent_and_all_zero_pages() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: reading our own pagemap's frame bits needs root");
            return;
        }
        let page = 4096usize;
        let mut mem = vec![0u8; 1025 * page].into_boxed_slice();
        let base = (mem.as_ptr() as usize).next_multiple_of(page);
        let off = base - mem.as_ptr() as usize;
        let range = &mut mem[off..off + 1024 * page];
        for p in 0..512 {
            let v = if p < 256 { 0xa5 } else { 0 };
            // SAFETY: a volatile write keeps the page resident whatever the value.
            unsafe { std::ptr::write_volatile(&mut range[p * page], v) };
        }
        let opts = SourceOptions {
            pid: std::process::id(),
            interval: Duration::from_secs(1),
            range: Some((base as u64, (base + 1024 * page) as u64)),
            ranges: Vec::new(),
            accel: None,
            sample_error: 0.05,
            sample_pages: None,
            sample_cpu_pct: DEFAULT_CPU_PCT,
            epoch: Duration::from_millis(100),
            max_overhead_pct: 2.0,
            force: false,
        };
        let z = zero_share_once(&opts).expect("read our own pages");
        assert!((z - 0.75).abs() < 1e-9, "zero share {z}");
        std::hint::black_box(&mem);
    }

    #[test]
    fn the_budget_left_after_the_rest_of_the_watch_sizes_the_sample() {
        let mut c = Cost {
            budget: 0.01,
            ..Default::default()
        };
        assert_eq!(c.affordable(Duration::from_secs(1)), None);
        c.per_page = Some(2e-6);
        let near = |got: Option<u64>, want: u64| got.is_some_and(|g| g.abs_diff(want) <= 1);
        // Nothing known of the rest yet: the whole budget.
        assert!(near(c.affordable(Duration::from_secs(1)), 5000));
        c.other = Some(0.002);
        assert!(near(c.affordable(Duration::from_secs(1)), 4000));
        // Longer intervals afford proportionally more pages per snapshot.
        assert!(near(c.affordable(Duration::from_secs(10)), 40_000));
        // The rest alone over budget: nothing left (the sampler keeps its minimum).
        c.other = Some(0.02);
        assert_eq!(c.affordable(Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn the_first_interval_does_not_measure_the_rest() {
        let mut c = Cost::default();
        c.end_interval(); // at start
        c.end_interval(); // end of the first interval: start-up work, not counted
        assert_eq!(c.other, None);
        c.end_interval();
        assert!(c.other.is_some());
    }

    #[test]
    fn change_rules() {
        let z = 12345;
        assert_eq!(changed(ABSENT, ABSENT, z), Some(false));
        assert_eq!(changed(ABSENT, z, z), Some(false));
        assert_eq!(changed(ABSENT, 999, z), Some(true));
        assert_eq!(changed(999, 999, z), Some(false));
        assert_eq!(changed(999, 1000, z), Some(true));
        assert_eq!(changed(999, SWAPPED, z), Some(false));
        assert_eq!(changed(MISS, 5, z), None);
    }

    #[test]
    fn uncovered_counts_moved_mappings() {
        let r = |a: u64, b: u64| Region {
            start: a,
            end: b,
            name: String::new(),
            shared: false,
        };
        assert_eq!(uncovered(&[r(0, 100)], &[r(0, 100)]), 0);
        // Same total size, different place: all of it moved.
        assert_eq!(uncovered(&[r(0, 100)], &[r(200, 300)]), 100);
        assert_eq!(uncovered(&[r(0, 100)], &[r(50, 300)]), 50);
        assert_eq!(uncovered(&[r(0, 100), r(200, 250)], &[r(0, 100)]), 50);
    }

    #[test]
    fn indexes_map_across_regions() {
        let r = vec![
            Region {
                start: 0x1000,
                end: 0x3000,
                name: String::new(),
                shared: false,
            },
            Region {
                start: 0x10000,
                end: 0x13000,
                name: String::new(),
                shared: false,
            },
        ];
        let a = index_to_addrs(&r, &[0, 1, 2, 4], 0x1000);
        assert_eq!(a, vec![0x1000, 0x2000, 0x10000, 0x12000]);
    }
}
