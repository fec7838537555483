//! The watch loop: drives a dirty-tracking source over time until a duration elapses, the
//! target exits, or a signal arrives, and hands each interval and the summary to a sink.
//!
//! The loop is a single-threaded tokio runtime: a tick timer (the backend's epoch, or the
//! interval), the target's pidfd, and the signals (SIGINT, SIGTERM, SIGHUP). Every ending path goes through the same
//! final-interval and summary code, so an interrupted watch loses nothing measured. The
//! statistics themselves are pure and live in [`crate::model::summary`].
use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    model::summary::{summarize, SummaryInput, TargetState, Totals},
    profile::Profile,
    report::{EndReason, Start, Summary},
    sink::Sink,
    source::{self, BackendChoice, DirtySource, SourceOptions},
    target::{clock_ticks, page_size, Target},
};

/// A checked watch configuration (see `commands::watch` for the flags it comes from).
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub interval: Duration,
    /// Stop after this long; `None`: until a signal or the target exits.
    pub duration: Option<Duration>,
    pub backend: BackendChoice,
    pub profile_out: Option<PathBuf>,
    /// What the sources need (pid, range, sampling and softdirty settings).
    pub source: SourceOptions,
}

/// The loop's tick: how closely durations and interval boundaries are honoured.
const TICK: Duration = Duration::from_millis(50);

/// The target as read from /proc now.
fn read_state(t: &Target) -> (TargetState, Instant) {
    let regions = t.writable_regions().unwrap_or_default();
    let state = TargetState {
        rss: t.rss_bytes(),
        writable: regions.iter().map(|x| x.len()).sum(),
        shared: regions.iter().filter(|x| x.shared).map(|x| x.len()).sum(),
        threads: t.thread_times(),
    };
    (state, Instant::now())
}

/// One watch in progress.
struct Watch<'a> {
    cfg: &'a WatchConfig,
    target: Target,
    src: Box<dyn DirtySource>,
    sink: &'a mut dyn Sink,
    totals: Totals,
    start: Instant,
    last_end: Instant,
    /// The target at the start and the last time it was seen alive.
    first: (TargetState, Instant),
    last: (TargetState, Instant),
    /// The target's identity (see [`Target::exec_id`]), to notice an exec.
    exec_id: Option<(u64, u64, u64)>,
    /// Names the target had, oldest first, when it exec'd during the watch.
    names: Vec<String>,
    /// What the next interval line should say (an exec happened during it).
    note: Option<String>,
}

/// Measures until the end condition and returns the summary (also given to `sink`).
pub fn watch(cfg: &WatchConfig, sink: &mut dyn Sink) -> Result<Summary> {
    let target = Target::open(cfg.source.pid)?.with_range(cfg.source.range);
    let sel = source::select(cfg.backend, &cfg.source)?;
    let first = read_state(&target);
    sink.start(&start_record(
        cfg,
        &target,
        sel.source.as_ref(),
        &sel.reason,
        &first.0,
    ));
    let pidfd = target.pidfd().ok();
    let now = Instant::now();
    let mut w = Watch {
        cfg,
        target,
        src: sel.source,
        sink,
        totals: Totals::new(cfg.interval.as_secs_f64(), page_size()),
        start: now,
        last_end: now,
        last: first.clone(),
        first,
        exec_id: None,
        names: Vec::new(),
        note: None,
    };
    w.exec_id = w.target.exec_id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let end = rt.block_on(w.run(pidfd))?;
    w.finish(end)
}

/// The record that opens the output: target, backend and why, and what it cannot see.
fn start_record(
    cfg: &WatchConfig,
    target: &Target,
    src: &dyn DirtySource,
    reason: &str,
    first: &TargetState,
) -> Start {
    let mut warnings = Vec::new();
    if let (Some((lo, hi)), 0) = (cfg.source.range, first.writable) {
        warnings.push(format!(
            "nothing writable is mapped in --range {lo:x}-{hi:x} now: every backend measures only that range"
        ));
    }
    let thp = target.anon_huge_bytes();
    if thp > 0 {
        warnings.push(format!(
            "the target has {} of transparent huge pages: one write fault there dirties 2 MiB, so fault counts understate bytes",
            crate::units::fmt_bytes(thp as f64)
        ));
    }
    Start {
        pid: cfg.source.pid,
        comm: target.comm.clone(),
        backend: src.name().into(),
        reason: reason.into(),
        caveats: src.caveats(),
        interval_s: cfg.interval.as_secs_f64(),
        target_rss_bytes: first.rss,
        writable_bytes: first.writable,
        shared_writable_bytes: first.shared,
        mappings: crate::target::describe(&target.writable_regions().unwrap_or_default()),
        warnings,
    }
}

impl Watch<'_> {
    /// The event loop: ticks, interval ends, signals and the target's exit.
    async fn run(&mut self, pidfd: Option<OwnedFd>) -> Result<EndReason> {
        let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
        let exit_fd: Option<AsyncFd<OwnedFd>> = pidfd.and_then(|fd| {
            // SAFETY: the pidfd is owned by the AsyncFd for its whole life and closed only by it.
            unsafe { AsyncFd::register(fd) }.ok()
        });
        // Ticks every 50 ms at most, whatever the backend: the duration and the interval
        // boundaries are honoured to within a tick.
        let interval = self.cfg.interval;
        let tick = self
            .src
            .tick_every()
            .unwrap_or(TICK)
            .min(TICK)
            .min(interval);
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_boundary = interval;
        loop {
            let exited = async {
                match &exit_fd {
                    Some(fd) => fd.readable().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer.tick() => {
                    if let Some(end) = self.on_tick(&mut next_boundary)? {
                        return Ok(end);
                    }
                }
                _ = sigint.recv() => return Ok(EndReason::Interrupted),
                _ = sigterm.recv() => return Ok(EndReason::Terminated),
                _ = sighup.recv() => return Ok(EndReason::Hangup),
                _ = exited => return Ok(EndReason::TargetExited),
            }
        }
    }

    /// One timer tick: the source's periodic work, or an interval end. Returns the reason
    /// when the watch is over.
    fn on_tick(&mut self, next_boundary: &mut Duration) -> Result<Option<EndReason>> {
        self.check_exec()?;
        let el = self.start.elapsed();
        let done = self.cfg.duration.is_some_and(|d| el >= d);
        if el < *next_boundary && !done {
            self.src.tick()?;
            return Ok(None);
        }
        let gone = !self.target.alive();
        self.end_interval(gone)?;
        while *next_boundary <= el {
            *next_boundary += self.cfg.interval;
        }
        Ok(if gone {
            Some(EndReason::TargetExited)
        } else if done {
            Some(EndReason::Duration)
        } else {
            None
        })
    }

    /// Notices an exec: renames the target and lets the source start over on the new
    /// address space. The interval it happened in is said to mix two programs.
    fn check_exec(&mut self) -> Result<()> {
        let Some(id) = self.target.exec_id() else {
            return Ok(());
        };
        if self.exec_id == Some(id) {
            return Ok(());
        }
        self.exec_id = Some(id);
        let old = self.target.comm.clone();
        self.target.refresh_comm();
        self.names.push(old.clone());
        self.src.on_exec()?;
        self.totals.exec();
        self.note = Some(format!(
            "the target exec'd ({old} -> {}): measuring its new memory from here",
            self.target.comm
        ));
        Ok(())
    }

    /// Ends the current interval: reads the target (while alive), asks the source, adds the
    /// report to the totals and shows it.
    fn end_interval(&mut self, gone: bool) -> Result<()> {
        if !gone {
            self.last = read_state(&self.target);
        }
        let r = self.src.end_interval(gone)?;
        let now = Instant::now();
        let wall_s = now.duration_since(self.last_end).as_secs_f64();
        self.last_end = now;
        let t_s = now.duration_since(self.start).as_secs_f64();
        let mut rec = self.totals.add(&r, wall_s, t_s);
        if let (Some(rec), Some(note)) = (&mut rec, self.note.take()) {
            rec.note = Some(note);
        }
        if let Some(rec) = rec {
            self.sink.interval(&rec);
        }
        Ok(())
    }

    /// Measures the partial interval since the last boundary (unless it is empty), then
    /// builds the summary, writes the profile and shows the summary.
    fn finish(mut self, end: EndReason) -> Result<Summary> {
        if end != EndReason::Duration && self.last_end.elapsed() >= Duration::from_millis(10) {
            let gone = end == EndReason::TargetExited || !self.target.alive();
            self.end_interval(gone)?;
        }
        let fin = self.src.finish()?;
        // The name may have changed since the last exec (prctl).
        self.target.refresh_comm();
        let target = &self.target;
        let mut summary = summarize(
            &self.totals,
            SummaryInput {
                pid: self.cfg.source.pid,
                comm: target.comm.clone(),
                backend: self.src.name().into(),
                end,
                duration_s: self.start.elapsed().as_secs_f64(),
                first: &self.first.0,
                last: &self.last.0,
                busy_window_s: self.last.1.duration_since(self.first.1).as_secs_f64(),
                clock_hz: clock_ticks() as f64,
                fin: &fin,
                caveats: self.end_caveats(),
                profile_out: self
                    .cfg
                    .profile_out
                    .as_ref()
                    .map(|p| p.display().to_string()),
                thread_comm: &|tid| target.thread_comm(tid),
            },
        );
        let unmeasured = self.totals.intervals() == 0;
        if unmeasured {
            // A profile without a measured rate would tell predict "0 B/s": write none.
            summary.profile_out = None;
            summary.caveats.push(
                "no interval could be measured: the rate is unknown, not 0, and no profile was written"
                    .into(),
            );
        } else if let Some(path) = &self.cfg.profile_out {
            let prof = Profile::from_summary(&summary, fin.threads_attribute_dirtying, unix_now());
            prof.save(path)?;
        }
        self.sink.summary(&summary);
        if unmeasured && self.cfg.profile_out.is_some() {
            return Err(anyhow::anyhow!(
                "no interval could be measured, so no profile was written"
            ));
        }
        Ok(summary)
    }
}

impl Watch<'_> {
    /// The source's caveats, and the target's execs if there were any.
    fn end_caveats(&self) -> Vec<String> {
        let mut c = self.src.caveats();
        if !self.names.is_empty() {
            c.push(format!(
                "the target exec'd during the watch ({} -> {}): intervals after an exec measure the new program",
                self.names.join(" -> "),
                self.target.comm
            ));
        }
        c
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
