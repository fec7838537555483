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
    error::Error,
    guest::{self, Guest},
    link::{LinkConfig, LinkWatch},
    model::summary::{summarize, SummaryInput, TargetState, Totals},
    profile::Profile,
    qemu::qmp::Qmp,
    record::{EndReason, GuestInfo, QemuRate, QemuRateSummary, Start, Summary},
    sink::Sink,
    source::{self, BackendChoice, DirtySource, SourceOptions},
    target::{clock_ticks, page_size, Target},
};

/// A watch's configuration: `watch`, `demo` and the exporter each build one
/// ([`WatchConfig::new`] has the defaults) and [`WatchConfig::check`] checks its values.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub interval: Duration,
    /// Stop after this long; `None`: until a signal or the target exits.
    pub duration: Option<Duration>,
    pub backend: BackendChoice,
    pub profile_out: Option<PathBuf>,
    /// What the sources need (pid, range, sampling and softdirty settings).
    pub source: SourceOptions,
    /// QEMU's QMP socket: its own memory view, and `calc-dirty-rate` beside ours.
    pub qmp: Option<PathBuf>,
    /// Measure all of a QEMU process, not only its guest RAM.
    pub whole_process: bool,
    /// The send path (`--iface`, `--link`): link traffic and headroom beside the rate.
    pub link: Option<LinkConfig>,
}

impl WatchConfig {
    /// `watch --pid PID --interval INTERVAL` with every other setting at its default.
    pub fn new(pid: u32, interval: Duration) -> WatchConfig {
        WatchConfig {
            interval,
            duration: None,
            backend: BackendChoice::Auto,
            profile_out: None,
            source: SourceOptions::new(pid, interval),
            qmp: None,
            whole_process: false,
            link: None,
        }
    }

    /// Checks the values; the messages name the `watch` flag that sets each.
    pub fn check(&self) -> std::result::Result<(), Error> {
        let usage = |m: String| Err(Error::Usage(m));
        let (interval, s) = (self.interval, &self.source);
        if interval < Duration::from_millis(50) {
            return usage(format!(
                "--interval {interval:?} is too short: the minimum is 50ms"
            ));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return usage("--duration must be above zero".into());
        }
        // A growth window or a rate is only as long as what was measured: an interval longer
        // than the watch would never complete, and its one partial window is no interval.
        if let Some(d) = self.duration.filter(|&d| d < interval) {
            return usage(format!(
                "--interval {interval:?} is longer than --duration {d:?}: the watch would end before one interval"
            ));
        }
        if !(s.sample_error > 0.0 && s.sample_error < 1.0) {
            return usage(format!(
                "--sample-error {} must be between 0 and 1 (e.g. 0.05 for ±5 %)",
                s.sample_error
            ));
        }
        if s.epoch < Duration::from_millis(50) || s.epoch > Duration::from_secs(1) {
            return usage(format!("--epoch {:?} is out of range: 50ms to 1s", s.epoch));
        }
        if !(s.max_overhead_pct > 0.0 && s.max_overhead_pct <= 100.0) {
            return usage("--max-overhead must be a percentage above 0".into());
        }
        if !(s.sample_cpu_pct > 0.0 && s.sample_cpu_pct <= 100.0) {
            return usage(format!(
                "--sample-cpu {} must be above 0 and at most 100 (percent of one core)",
                s.sample_cpu_pct
            ));
        }
        if s.sample_pages == Some(0) {
            return usage("--sample-pages must be at least 1".into());
        }
        Ok(())
    }
}

/// How long a QMP command may take before the watch gives up on QMP.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// After an exec, an interval in which the target's resident memory grew by more than this
/// share of its size is the new program's start-up (loading, allocating, filling its memory).
const STARTUP_GROWTH: f64 = 0.05;

/// The new program's start-up after an exec (docs/reliability.md, "A target that execs").
#[derive(Clone, Copy)]
enum Settling {
    /// The interval that holds the exec has not ended yet.
    Exec,
    /// Resident bytes at the end of the last interval, which was still start-up.
    Since(u64),
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
    /// Where the new program's start-up stands after an exec (`None`: no exec, or settled).
    settling: Option<Settling>,
    /// The guest, when the target is QEMU.
    guest: Option<GuestInfo>,
    qemu: QemuRates,
    /// The send path, with `--iface`.
    link: Option<LinkWatch>,
}

/// Measures until the end condition and returns the summary (also given to `sink`).
pub fn watch(cfg: &WatchConfig, sink: &mut dyn Sink) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The pid is checked first: a kernel thread or a missing process gets its own message.
    let target = Target::open(cfg.source.pid)?;
    let mut qmp = match &cfg.qmp {
        Some(p) => Some(
            rt.block_on(Qmp::connect(p, QMP_TIMEOUT))
                .map_err(|e| Error::Usage(format!("--qmp {}: {e:#}", p.display())))?,
        ),
        None => None,
    };
    let (opts, guest) = scope(cfg, &rt, qmp.as_mut())?;
    let target = target.with_ranges(opts.scope());
    let sel = source::select(cfg.backend, &opts)?;
    let first = read_state(&target);
    let mut start = start_record(cfg, &target, sel.source.as_ref(), &sel.reason, &first.0);
    start.guest = guest.map(|g| g.info);
    let link = match &cfg.link {
        Some(l) => Some(LinkWatch::attach(opts.pid, l.clone())?),
        None => None,
    };
    start
        .warnings
        .extend(link.iter().flat_map(|l| l.notes().to_vec()));
    sink.start(&start);
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
        settling: None,
        guest: start.guest,
        qemu: QemuRates::default(),
        link,
    };
    w.exec_id = w.target.exec_id();
    let _guard = rt.enter();
    w.qemu.rx = qmp.map(|q| spawn_calc(q, cfg.interval, now));
    let end = rt.block_on(w.run(pidfd))?;
    w.finish(end)
}

/// What to measure: for a QEMU process (unless `--range` or `--whole-process` says
/// otherwise), its guest RAM only.
fn scope(
    cfg: &WatchConfig,
    rt: &tokio::runtime::Runtime,
    qmp: Option<&mut Qmp>,
) -> Result<(SourceOptions, Option<Guest>)> {
    let mut opts = cfg.source.clone();
    if cfg.source.range.is_some() || cfg.whole_process {
        return Ok((opts, None));
    }
    let guest = rt.block_on(guest::detect(opts.pid, qmp))?;
    if let Some(g) = &guest {
        opts.ranges = g.ranges();
        opts.range = g.bounding_range();
        opts.accel = Some(g.info.accel.clone());
    }
    Ok((opts, guest))
}

/// QEMU's `calc-dirty-rate` measurements as they arrive.
#[derive(Default)]
struct QemuRates {
    rx: Option<tokio::sync::mpsc::Receiver<Result<QemuRate>>>,
    seen: Vec<QemuRate>,
    error: Option<String>,
}

/// QEMU samples this many pages per GiB (its default is 512; more is less noise, and QEMU
/// 7.2 takes up to 4096).
const QEMU_SAMPLE_PAGES: u64 = 4096;

/// Runs `calc-dirty-rate` (page-sampling) back to back, each over the interval rounded to
/// whole seconds (at least 1 s), and sends each result.
fn spawn_calc(
    mut qmp: Qmp,
    interval: Duration,
    start: Instant,
) -> tokio::sync::mpsc::Receiver<Result<QemuRate>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let calc = Duration::from_secs(interval.as_secs_f64().round().max(1.0) as u64);
    qmp.set_timeout(calc + QMP_TIMEOUT);
    tokio::spawn(async move {
        loop {
            let r = qmp
                .measure_dirty_rate(calc, Some(QEMU_SAMPLE_PAGES))
                .await
                .map(|info| QemuRate {
                    t_s: start.elapsed().as_secs_f64(),
                    // QEMU reports MB/s meaning MiB per second.
                    bytes_per_sec: info.dirty_rate.unwrap_or(0) as f64 * 1024.0 * 1024.0,
                    calc_time_s: info.calc_time as f64,
                    sample_pages: info.sample_pages,
                });
            let failed = r.is_err();
            if tx.send(r).await.is_err() || failed {
                return;
            }
        }
    });
    rx
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
        guest: None,
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
            let qemu = async {
                match &mut self.qemu.rx {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = qemu => self.on_qemu(r),
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

    /// A `calc-dirty-rate` result, or the end of QEMU's measurements.
    fn on_qemu(&mut self, r: Option<Result<QemuRate>>) {
        match r {
            Some(Ok(rate)) => {
                self.sink.qemu(&rate);
                self.qemu.seen.push(rate);
            }
            Some(Err(e)) => {
                self.qemu.error = Some(format!("{e:#}"));
                self.qemu.rx = None;
            }
            None => self.qemu.rx = None,
        }
    }

    /// QEMU's measurements over the watch, if `--qmp` was given.
    fn qemu_summary(&self) -> Option<QemuRateSummary> {
        self.cfg.qmp.as_ref()?;
        let n = self.qemu.seen.len();
        let sum = self.qemu.seen.iter().map(|r| r.bytes_per_sec).sum::<f64>();
        Some(QemuRateSummary {
            mean_bytes_per_sec: (n > 0).then(|| sum / n as f64),
            measurements: n as u64,
            sample_pages: QEMU_SAMPLE_PAGES,
            error: self.qemu.error.clone(),
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
        match self.src.on_exec() {
            Ok(()) => {}
            // Exited meanwhile: the tick's liveness check ends the watch as target-exited.
            Err(_) if !self.target.alive() => return Ok(()),
            Err(e) => return Err(e),
        }
        self.exec_id = Some(id);
        let old = self.target.comm.clone();
        self.target.refresh_comm();
        self.names.push(old.clone());
        self.totals.exec();
        self.settling = Some(Settling::Exec);
        self.note = Some(format!(
            "the target exec'd ({old} -> {}): measuring its new memory from here",
            self.target.comm
        ));
        Ok(())
    }

    /// After an exec, whether the interval just ended was still the new program's start-up
    /// (the rule in docs/reliability.md, "A target that execs"): its resident memory grew
    /// by more than [`STARTUP_GROWTH`] of its size. Such an interval, like the one that held
    /// the exec, is left out of the summary, and the source starts over at its end, so the
    /// growth curve does not take the first fill in either. Returns the line's note.
    fn starting_up(&mut self, gone: bool) -> Result<Option<String>> {
        let rss = self.last.0.rss;
        let prev = match self.settling {
            None => return Ok(None),
            Some(Settling::Exec) => {
                // The interval that held the exec: left out already; its end is the baseline.
                self.settling = Some(Settling::Since(rss));
                return Ok(None);
            }
            Some(Settling::Since(prev)) => prev,
        };
        let grew = rss.saturating_sub(prev);
        if gone || (grew as f64) <= STARTUP_GROWTH * rss as f64 {
            self.settling = None;
            return Ok(None);
        }
        self.settling = Some(Settling::Since(rss));
        self.totals.starting();
        self.src.on_exec()?;
        Ok(Some(format!(
            "still starting after the exec (resident memory +{} MiB): left out of the summary",
            grew >> 20
        )))
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
        if let Some(note) = self.starting_up(gone)? {
            // An unmeasured exec interval left its note for this line: both are said.
            self.note = Some(match self.note.take() {
                Some(exec) => format!("{exec}; {note}"),
                None => note,
            });
        }
        if let (Some(rec), Some(note)) = (&mut rec, self.note.take()) {
            rec.note = Some(note);
        }
        if let Some(rec) = rec {
            self.sink.interval(&rec);
            if let Some(l) = &mut self.link {
                let li = l.end_interval(rec.dirty_bytes_per_sec, wall_s, t_s)?;
                self.sink.link(&li);
            }
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
        let mut fin = self.src.finish()?;
        if fin.zero_page_share.is_none() && self.target.alive() {
            fin.zero_page_share = source::sample::zero_share_once(&self.cfg.source);
        }
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
                guest: self.guest.clone(),
            },
        );
        summary.qemu_dirty_rate = self.qemu_summary();
        if let Some(l) = &mut self.link {
            summary.link = Some(l.summary(summary.dirty_bytes_per_sec)?);
        }
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
