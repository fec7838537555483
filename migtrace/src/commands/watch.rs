//! `migtrace watch`: measure a live process's dirty rate until a duration elapses, the
//! target exits, or Ctrl-C/SIGTERM arrives, then write the summary (and the profile).
//!
//! The loop is a single-threaded tokio runtime: a tick timer (the backend's epoch, or the
//! interval), the target's pidfd, and the two signals. Every ending path goes through the
//! same final-interval and summary code, so an interrupted watch loses nothing measured.
use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use clap::Args;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    error::Error,
    profile::{self, Profile},
    sink::{
        json::JsonSink, terminal::TerminalSink, Interval, RatePercentiles, Sink, Start, Summary,
        ThreadLine,
    },
    source::{self, BackendChoice, Drops, FaultCounts, SourceOptions},
    target::{clock_ticks, page_size, Target, ThreadTime},
    units::parse_duration,
};

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Process to watch (for a VM: the QEMU process).
    #[arg(long)]
    pub pid: u32,
    /// Length of one measurement interval (one output line).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long; default: until Ctrl-C, SIGTERM or the target exits.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Dirty-tracking backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// JSON lines on stdout instead of the human table.
    #[arg(long)]
    pub json: bool,
    /// Write the dirty profile (format: docs/profile.md) for `migtrace predict --profile`.
    #[arg(long, value_name = "FILE")]
    pub profile_out: Option<PathBuf>,
    /// Only count faults in this address range, START-END in hex (e.g. a QEMU RAM block).
    #[arg(long, value_parser = parse_range)]
    pub range: Option<(u64, u64)>,
    /// Sampling: target 95 % half-width of the rate, relative to the rate.
    #[arg(long, default_value_t = 0.05)]
    pub sample_error: f64,
    /// Sampling: fixed number of sampled pages (disables automatic sizing).
    #[arg(long)]
    pub sample_pages: Option<u64>,
    /// softdirty: initial epoch, 50ms to 1s (adapted to --max-overhead).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub epoch: Duration,
    /// softdirty: CPU time the induced faults may take, percent of one CPU.
    #[arg(long, default_value_t = 2.0)]
    pub max_overhead: f64,
    /// softdirty: arm even when something else seems to use the target's soft-dirty bits.
    #[arg(long)]
    pub force: bool,
}

/// Parses `START-END` (hex, `0x` optional).
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| {
        format!("bad range {s:?}: expected START-END in hex, e.g. 7f0000000000-7f0040000000")
    })?;
    let hex = |x: &str| {
        u64::from_str_radix(x.trim().trim_start_matches("0x"), 16)
            .map_err(|e| format!("bad address {x:?} in range: {e}"))
    };
    let (lo, hi) = (hex(a)?, hex(b)?);
    if hi <= lo {
        return Err(format!("bad range {s:?}: end must be above start"));
    }
    Ok((lo, hi))
}

/// Runs `watch` as the CLI does.
pub fn run(a: WatchArgs) -> Result<()> {
    let mut sink: Box<dyn Sink> = if a.json {
        Box::new(JsonSink::new(std::io::stdout()))
    } else {
        Box::new(TerminalSink::new(std::io::stdout()))
    };
    watch(&a, sink.as_mut())?;
    Ok(())
}

fn validate(a: &WatchArgs) -> Result<()> {
    if a.interval < Duration::from_millis(50) {
        return Err(Error::Usage(format!(
            "--interval {:?} is too short: the minimum is 50ms",
            a.interval
        ))
        .into());
    }
    if let Some(d) = a.duration {
        if d.is_zero() {
            return Err(Error::Usage("--duration must be above zero".into()).into());
        }
    }
    if !(a.sample_error > 0.0 && a.sample_error < 1.0) {
        return Err(Error::Usage(format!(
            "--sample-error {} must be between 0 and 1 (e.g. 0.05 for ±5 %)",
            a.sample_error
        ))
        .into());
    }
    if a.epoch < Duration::from_millis(50) || a.epoch > Duration::from_secs(1) {
        return Err(
            Error::Usage(format!("--epoch {:?} is out of range: 50ms to 1s", a.epoch)).into(),
        );
    }
    if !(a.max_overhead > 0.0 && a.max_overhead <= 100.0) {
        return Err(Error::Usage("--max-overhead must be a percentage above 0".into()).into());
    }
    if a.sample_pages == Some(0) {
        return Err(Error::Usage("--sample-pages must be at least 1".into()).into());
    }
    Ok(())
}

/// The loop's tick: how closely durations and interval boundaries are honoured.
const TICK: Duration = Duration::from_millis(50);

/// Why the watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Duration,
    Interrupted,
    Terminated,
    TargetExited,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Duration => "duration",
            End::Interrupted => "interrupted",
            End::Terminated => "terminated",
            End::TargetExited => "target-exited",
        }
    }
}

/// The target as read from /proc at one moment.
#[derive(Clone)]
struct Seen {
    rss: u64,
    writable: u64,
    threads: Vec<ThreadTime>,
    at: Instant,
}

impl Seen {
    fn read(t: &Target) -> Seen {
        Seen {
            rss: t.rss_bytes(),
            writable: t
                .writable_regions()
                .map(|r| r.iter().map(|x| x.len()).sum())
                .unwrap_or(0),
            threads: t.thread_times(),
            at: Instant::now(),
        }
    }
}

/// Accumulates intervals into the summary.
struct Totals {
    /// Distribution of interval dirty rates, pages per second (3 significant digits).
    rates: hdrhistogram::Histogram<u64>,
    intervals: u64,
    measured_s: f64,
    pages: f64,
    peak: f64,
    /// Length of a full interval, seconds: shorter (partial) intervals do not enter the
    /// percentiles and the peak, where a few pages over a few milliseconds would distort.
    interval_s: f64,
    faults: Option<FaultCounts>,
    drops: Drops,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            rates: hdrhistogram::Histogram::new(3).expect("3 significant digits is valid"),
            intervals: 0,
            measured_s: 0.0,
            pages: 0.0,
            peak: 0.0,
            interval_s: 0.0,
            faults: None,
            drops: Drops::default(),
        }
    }
}

/// Measures until the end condition and returns the summary (also given to `sink`).
pub fn watch(a: &WatchArgs, sink: &mut dyn Sink) -> Result<Summary> {
    validate(a)?;
    let target = Target::open(a.pid)?;
    let page = page_size();
    let opts = SourceOptions {
        pid: a.pid,
        interval: a.interval,
        range: a.range,
        sample_error: a.sample_error,
        sample_pages: a.sample_pages,
        epoch: a.epoch,
        max_overhead_pct: a.max_overhead,
        force: a.force,
    };
    let sel = source::select(a.backend, &opts)?;
    let mut src = sel.source;
    let mut warnings = Vec::new();
    let thp = target.anon_huge_bytes();
    if thp > 0 {
        warnings.push(format!(
            "the target has {} of transparent huge pages: one write fault there dirties 2 MiB, so fault counts understate bytes",
            crate::units::fmt_bytes(thp as f64)
        ));
    }
    // What the target looked like at the start and the last time it was seen alive (busy
    // shares divide by the time between those two readings, not by the whole watch).
    let first = Seen::read(&target);
    let mut last = first.clone();
    sink.start(&Start {
        pid: a.pid,
        comm: target.comm.clone(),
        backend: src.name().into(),
        reason: sel.reason.clone(),
        caveats: src.caveats(),
        interval_s: a.interval.as_secs_f64(),
        target_rss_bytes: first.rss,
        writable_bytes: first.writable,
        warnings,
    });
    let pidfd = target.pidfd().ok();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let start = Instant::now();
    let mut totals = Totals {
        interval_s: a.interval.as_secs_f64(),
        ..Totals::default()
    };
    let mut last_end = start;

    let end = rt.block_on(async {
        let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
        let exit_fd: Option<AsyncFd<OwnedFd>> = pidfd.and_then(|fd| {
            // SAFETY: the pidfd is owned by the AsyncFd for its whole life and closed only by it.
            unsafe { AsyncFd::register(fd) }.ok()
        });
        // Ticks every 50 ms at most, whatever the backend: the duration and the interval
        // boundaries are honoured to within a tick.
        let tick = src.tick_every().unwrap_or(TICK).min(TICK).min(a.interval);
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_boundary = a.interval;
        loop {
            let exited = async {
                match &exit_fd {
                    Some(fd) => fd.readable().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer.tick() => {
                    let el = start.elapsed();
                    let done = a.duration.is_some_and(|d| el >= d);
                    if el >= next_boundary || done {
                        let gone = !target.alive();
                        if !gone {
                            last = Seen::read(&target);
                        }
                        end_interval(src.as_mut(), sink, &mut totals, start, &mut last_end, gone, page)?;
                        while next_boundary <= el {
                            next_boundary += a.interval;
                        }
                        if gone {
                            return Ok::<End, anyhow::Error>(End::TargetExited);
                        }
                        if done {
                            return Ok(End::Duration);
                        }
                    } else {
                        src.tick()?;
                    }
                }
                _ = sigint.recv() => return Ok(End::Interrupted),
                _ = sigterm.recv() => return Ok(End::Terminated),
                _ = exited => return Ok(End::TargetExited),
            }
        }
    })?;

    // The partial interval since the last boundary is measured too (unless it is empty).
    if end != End::Duration && last_end.elapsed() >= Duration::from_millis(10) {
        let gone = end == End::TargetExited || !target.alive();
        if !gone {
            last = Seen::read(&target);
        }
        end_interval(
            src.as_mut(),
            sink,
            &mut totals,
            start,
            &mut last_end,
            gone,
            page,
        )?;
    }
    let fin = src.finish()?;
    let duration_s = start.elapsed().as_secs_f64();

    // Per-thread shares and CPU busy share.
    let busy = busy_shares(
        &first.threads,
        &last.threads,
        last.at.duration_since(first.at).as_secs_f64(),
    );
    let total_faults: u64 = fin.threads.iter().map(|t| t.1).sum();
    let threads: Vec<ThreadLine> = fin
        .threads
        .iter()
        .map(|&(tid, n)| ThreadLine {
            tid,
            comm: last
                .threads
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| t.comm.clone())
                .unwrap_or_else(|| target.thread_comm(tid)),
            write_faults: n,
            share: if total_faults > 0 {
                n as f64 / total_faults as f64
            } else {
                0.0
            },
            busy_share: busy.iter().find(|b| b.0 == tid).map(|b| b.1),
        })
        .collect();
    // Mean busy share of the threads that dirtied memory; without attribution of the
    // dirtying itself (sample, sample+fault), of the threads that ran at all (>= 1 %).
    let busy_share = {
        let v: Vec<f64> = if threads.is_empty() || !fin.threads_attribute_dirtying {
            busy.iter().map(|b| b.1).filter(|&b| b >= 0.01).collect()
        } else {
            threads.iter().filter_map(|t| t.busy_share).collect()
        };
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };

    let rate_pages = if totals.measured_s > 0.0 {
        totals.pages / totals.measured_s
    } else {
        0.0
    };
    let ci = fin
        .total_pages_sd
        .filter(|_| totals.intervals > 0)
        .map(|sd| {
            let half = 1.96 * sd / totals.measured_s.max(1e-9) * page as f64;
            let r = rate_pages * page as f64;
            [(r - half).max(0.0), r + half]
        });
    let mut caveats = src.caveats();
    if end == End::TargetExited && totals.intervals == 0 {
        caveats.push("the target exited before a full interval was measured".into());
    }
    let summary = Summary {
        pid: a.pid,
        comm: target.comm.clone(),
        backend: src.name().into(),
        end_reason: end.as_str().into(),
        duration_s,
        intervals: totals.intervals,
        dirty_pages: totals.pages,
        dirty_pages_per_sec: rate_pages,
        dirty_bytes_per_sec: rate_pages * page as f64,
        ci95_bytes_per_sec: ci,
        peak_bytes_per_sec: totals.peak * page as f64,
        rate_percentiles: (!totals.rates.is_empty()).then(|| {
            let q = |p: f64| totals.rates.value_at_quantile(p) as f64 * page as f64;
            RatePercentiles {
                p50_bytes_per_sec: q(0.5),
                p90_bytes_per_sec: q(0.9),
                p99_bytes_per_sec: q(0.99),
                max_bytes_per_sec: totals.rates.max() as f64 * page as f64,
            }
        }),
        unique_pages_total: fin.unique_pages_total,
        target_rss_bytes: last.rss,
        writable_bytes: last.writable,
        page_size: page,
        faults: totals.faults,
        dropped_events: totals.drops.total(),
        drops: totals.drops,
        growth: fin.growth.clone(),
        threads,
        busy_share,
        zero_page_share: fin.zero_page_share,
        caveats,
        backend_stats: fin.backend_stats.clone(),
        profile_out: a.profile_out.as_ref().map(|p| p.display().to_string()),
    };
    if let Some(path) = &a.profile_out {
        let prof = to_profile(
            &summary,
            a.interval.as_secs_f64(),
            fin.threads_attribute_dirtying,
        );
        let text = serde_json::to_string_pretty(&prof)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the profile to {}", path.display()))?;
    }
    sink.summary(&summary);
    Ok(summary)
}

fn end_interval(
    src: &mut dyn source::DirtySource,
    sink: &mut dyn Sink,
    totals: &mut Totals,
    start: Instant,
    last_end: &mut Instant,
    gone: bool,
    page: u64,
) -> Result<()> {
    let r = src.end_interval(gone)?;
    let now = Instant::now();
    let wall = now.duration_since(*last_end);
    *last_end = now;
    // The source's own window (between its snapshots or arms) when it has one.
    let dur = r.window.unwrap_or(wall).as_secs_f64();
    totals.drops.add(&r.drops);
    if let Some(f) = &r.faults {
        totals
            .faults
            .get_or_insert_with(FaultCounts::default)
            .add(f);
    }
    if !r.measured {
        // No rate could be measured (the target's memory was already gone); the fault
        // counts above still count.
        return Ok(());
    }
    let pps = if dur > 0.0 { r.unique_pages / dur } else { 0.0 };
    totals.intervals += 1;
    totals.measured_s += dur;
    totals.pages += r.unique_pages;
    if dur >= totals.interval_s / 2.0 {
        totals.peak = totals.peak.max(pps);
        // Auto-resizing histogram: recording cannot fail for finite non-negative rates.
        let _ = totals.rates.record(pps.max(0.0).round() as u64);
    }
    sink.interval(&Interval {
        t_s: now.duration_since(start).as_secs_f64(),
        duration_s: dur,
        dirty_pages: r.unique_pages,
        dirty_pages_per_sec: pps,
        dirty_bytes_per_sec: pps * page as f64,
        ci95_bytes_per_sec: r
            .ci95
            .map(|(lo, hi)| [lo / dur * page as f64, hi / dur * page as f64]),
        faults: r.faults,
        drops: r.drops,
        sample: r.sample,
    });
    Ok(())
}

/// (tid, share of the watch on CPU) for every thread seen at the start or the end.
fn busy_shares(t0: &[ThreadTime], t1: &[ThreadTime], duration_s: f64) -> Vec<(u32, f64)> {
    let hz = clock_ticks() as f64;
    t1.iter()
        .map(|t| {
            let before = t0
                .iter()
                .find(|x| x.tid == t.tid)
                .map(|x| x.ticks)
                .unwrap_or(0);
            let s = (t.ticks.saturating_sub(before)) as f64 / hz / duration_s.max(1e-9);
            (t.tid, s.clamp(0.0, 1.0))
        })
        .collect()
}

/// The profile `predict` reads, from a summary. Per-thread shares go in only when they
/// attribute the dirtying itself (fault, softdirty): with sample+fault they are write-fault
/// counts, and a thread that rewrites resident memory takes none.
pub fn to_profile(s: &Summary, interval_s: f64, threads_attribute_dirtying: bool) -> Profile {
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Profile {
        format: profile::FORMAT.into(),
        version: profile::VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created_unix_s: created,
        target: profile::TargetInfo {
            pid: s.pid,
            comm: s.comm.clone(),
            rss_bytes: s.target_rss_bytes,
            writable_bytes: s.writable_bytes,
            page_size: s.page_size,
        },
        backend: s.backend.clone(),
        caveats: s.caveats.clone(),
        duration_s: s.duration_s,
        interval_s,
        dirty: profile::DirtyRate {
            bytes_per_sec: s.dirty_bytes_per_sec,
            pages_per_sec: s.dirty_pages_per_sec,
            ci95_bytes_per_sec: s.ci95_bytes_per_sec,
            peak_bytes_per_sec: s.peak_bytes_per_sec,
        },
        growth: s.growth.clone(),
        threads: s
            .threads
            .iter()
            .filter(|_| threads_attribute_dirtying)
            .map(|t| profile::ThreadShare {
                tid: t.tid,
                comm: t.comm.clone(),
                pages: t.write_faults,
                share: t.share,
                busy_share: t.busy_share,
            })
            .collect(),
        busy_share: s.busy_share,
        zero_page_share: s.zero_page_share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0x1000-0x2000"), Ok((0x1000, 0x2000)));
        assert_eq!(parse_range("7f00-7f10"), Ok((0x7f00, 0x7f10)));
        assert!(parse_range("2000-1000").is_err());
        assert!(parse_range("zz-1000").is_err());
        assert!(parse_range("1000").is_err());
    }
}
