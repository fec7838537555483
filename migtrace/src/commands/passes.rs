//! `migtrace passes`: times each pass of a real QEMU migration from QMP, attached to the
//! source before the migration starts or while it runs, and with `--profile` back-tests
//! the model: the prediction made for the migration's own parameters beside what QEMU did.
//! Polling (`query-migrate` every `--poll`, 20 ms) and the signals live here; the pass
//! logic is [`crate::passes`], the comparison [`crate::model::backtest`], the output
//! [`crate::output::passes`]. See `docs/passes.md`.
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::probe::send::{SendOptions, SendProbe};
use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::Error;
use crate::model::backtest::{qemu_syncs, SyncEstimate};
use crate::model::config::{plan, PredictConfig, ThrottleConfig};
use crate::model::recommend::ThrottleKind;
use crate::model::{grid, Prediction};
use crate::output::passes::{self as passes_out, Params, Predicted, Report};
use crate::output::passes_metrics::PassFeed;
use crate::passes::{is_terminal, EndedBy, Tracker};
use crate::qemu::qmp::{MigrateParametersInfo, MigrationCapability, MigrationInfo, Qmp, QmpEvent};
use crate::sink::hdrlog;
use crate::sink::prometheus::{self, Metrics, TargetLabels};
use crate::units;
use std::sync::Arc;

/// Arguments of `migtrace passes`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  migtrace passes --qmp /run/qemu/vm.qmp\n  migtrace passes --qmp vm.qmp --profile vm.profile.json --json\n  migtrace passes --qmp vm.qmp --pid 4242 --listen 127.0.0.1:9465 --hdr-log passes.hlog\n\nSee docs/passes.md and docs/monitoring.md."
)]
pub struct PassesArgs {
    /// The QMP socket of the migration's source QEMU.
    #[arg(long, value_name = "SOCKET")]
    pub qmp: PathBuf,
    /// The source QEMU's pid: checked to be QEMU, and watched for its exit.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// A `watch --profile-out` profile of the guest: predict at the start, compare at the end.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// With --profile: the rate of the stop-and-copy, which QEMU sends without the
    /// max-bandwidth cap (as `predict --stop-copy-rate`; default: max-bandwidth).
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub stop_copy_rate: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Give up (partial report) after this long: 10m. Default: wait for the end.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<String>,
    /// How often to poll query-migrate (default 20ms).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "20ms",
        allow_hyphen_values = true
    )]
    pub poll: String,
    /// Serve Prometheus /metrics here while the migration runs (loopback unless --listen-any).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Allow --listen on a non-loopback address.
    #[arg(long)]
    pub listen_any: bool,
    /// With --listen: keep serving this long after the report, so a scrape gets the final
    /// values (a signal ends it sooner).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = units::parse_duration)]
    pub linger: Duration,
    /// Write the pass durations to FILE as an HdrHistogram interval log (tag `pass_duration`).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
}

/// The checked arguments.
struct Config {
    timeout: Option<Duration>,
    poll: Duration,
    linger: Duration,
    /// `--listen`, bound before anything is followed.
    listener: Option<std::net::TcpListener>,
    /// `--profile`, checked to load.
    profile: Option<PathBuf>,
    /// `--stop-copy-rate`, bits per second.
    stop_copy_bits: Option<f64>,
    /// `--hdr-log`, checked before anything is followed and written at the end
    /// ([`crate::files::replace`]: never through a symlink, and a run that fails to
    /// attach leaves an existing file as it was).
    hdr_log: Option<PathBuf>,
}

fn config(a: &PassesArgs) -> Result<Config> {
    let dur = |flag: &str, s: &str| {
        units::parse_duration(s).map_err(|e| Error::Usage(format!("--{flag}: {e}")))
    };
    let timeout = a
        .timeout
        .as_deref()
        .map(|s| dur("timeout", s))
        .transpose()?;
    let poll = dur("poll", &a.poll)?;
    if !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(&poll) {
        return Err(Error::Usage(format!("--poll: {} must be from 1ms to 10s", a.poll)).into());
    }
    if timeout == Some(Duration::ZERO) {
        return Err(Error::Usage("--timeout: must be more than zero".into()).into());
    }
    if let Some(pid) = a.pid {
        crate::qemu::read_cmdline(pid)?;
    }
    if let Some(p) = &a.profile {
        crate::profile::Profile::load(p).map_err(|e| Error::Input(e.to_string()))?;
    }
    let stop_copy_bits = a
        .stop_copy_rate
        .as_deref()
        .map(|r| units::parse_link(r).map_err(|e| Error::Usage(format!("--stop-copy-rate: {e}"))))
        .transpose()?;
    if let Err(e) = std::fs::metadata(&a.qmp) {
        return Err(Error::Input(format!("--qmp {}: {e}", a.qmp.display())).into());
    }
    let hdr_log = a
        .hdr_log
        .as_ref()
        .map(|p| {
            crate::files::check_replaceable(p)
                .map(|_| p.clone())
                .map_err(|e| Error::Usage(format!("--hdr-log {}: {e}", p.display())))
        })
        .transpose()?;
    let listener = match &a.listen {
        Some(l) => Some(prometheus::bind(l, a.listen_any)?),
        None => None,
    };
    Ok(Config {
        timeout,
        poll,
        linger: a.linger,
        listener,
        profile: a.profile.clone(),
        stop_copy_bits,
        hdr_log,
    })
}

pub fn run(args: PassesArgs) -> Result<()> {
    let mut cfg = config(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut feed = match cfg.listener.take() {
        Some(l) => {
            let metrics = Arc::new(Metrics::new());
            prometheus::serve(l, metrics.clone())?;
            Some(PassFeed::new(metrics, labels(args.pid)))
        }
        None => None,
    };
    // Registered now, so that a signal at any time after this ends the linger.
    let stop = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let report = rt.block_on(follow(&args, &cfg, feed.as_mut()))?;
    print_report(&args, &report)?;
    if let Some(p) = cfg.hdr_log.take() {
        let mut log = Vec::new();
        hdrlog::write_passes(&mut log, &report.passes, report.started_wall_s)
            .context("writing --hdr-log")?;
        crate::files::replace(&p, &log)
            .with_context(|| format!("writing --hdr-log {}", p.display()))?;
    }
    if feed.is_some() {
        rt.block_on(linger(cfg.linger, stop));
    }
    Ok(())
}

/// The labels of the migration's series: the QEMU process when `--pid` names it.
fn labels(pid: Option<u32>) -> TargetLabels {
    let Some(pid) = pid else {
        return TargetLabels::default();
    };
    TargetLabels {
        pid: pid.to_string().into(),
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default()
            .into(),
        guest: crate::qemu::read_cmdline(pid)
            .ok()
            .and_then(|c| c.name)
            .unwrap_or_default()
            .into(),
    }
}

/// Keeps the metrics server up for `d` after the report, or until SIGINT or SIGTERM (one
/// that came while the migration was followed ends it at once).
async fn linger(d: Duration, (mut sigint, mut sigterm): (Signal, Signal)) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
}

/// The report on stdout, text or JSON.
fn print_report(args: &PassesArgs, report: &Report) -> Result<()> {
    let out = if args.json {
        serde_json::to_string_pretty(&passes_out::json(report)).context("cannot encode JSON")?
            + "\n"
    } else {
        passes_out::text(report)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r
            .and_then(|_| stdout.flush())
            .context("cannot write to stdout"),
    }
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch of a QMP event's timestamp.
fn event_wall(e: &QmpEvent) -> f64 {
    let s = e.timestamp["seconds"].as_f64().unwrap_or(0.0);
    s + e.timestamp["microseconds"].as_f64().unwrap_or(0.0) / 1e6
}

/// The settings in force and the prediction made from them.
struct Setup {
    params: Params,
    predicted: Option<Predicted>,
}

/// Reads the migration's parameters and capabilities, and predicts with `--profile`.
async fn setup(q: &mut Qmp, cfg: &Config) -> Result<Setup> {
    let p = q.query_migrate_parameters().await?;
    let caps = q.query_migrate_capabilities().await?;
    let on = |c: &str| {
        caps.iter()
            .any(|x: &MigrationCapability| x.capability == c && x.state)
    };
    let params = Params {
        max_bandwidth: p.max_bandwidth.unwrap_or(0),
        downtime_limit_s: p.downtime_limit.unwrap_or(300) as f64 / 1000.0,
        auto_converge: on("auto-converge"),
        max_cpu_throttle: p.max_cpu_throttle,
        events: on("events"),
    };
    let predicted = match &cfg.profile {
        Some(f) => Some(predict(f, &p, &params, cfg.stop_copy_bits)?),
        None => None,
    };
    Ok(Setup { params, predicted })
}

/// The model for these settings: `predict --profile F --link BW --efficiency 1`
/// (QEMU's `max-bandwidth` caps the stream's payload), plus QEMU's sync count replayed.
fn predict(
    profile: &std::path::Path,
    p: &MigrateParametersInfo,
    params: &Params,
    stop_copy_bits: Option<f64>,
) -> Result<Predicted> {
    if params.max_bandwidth == 0 {
        return Err(Error::Unsupported(
            "max-bandwidth is 0 (unlimited): the back-test needs the migration's bandwidth".into(),
        )
        .into());
    }
    let loaded = crate::profile::Profile::load(profile).map_err(|e| Error::Input(e.to_string()))?;
    let link_bits = params.max_bandwidth as f64 * 8.0;
    let mut cfg = PredictConfig::for_profile(loaded, profile.to_path_buf(), vec![link_bits]);
    cfg.efficiency = 1.0;
    cfg.stop_copy_bits = stop_copy_bits;
    cfg.downtimes_s = vec![params.downtime_limit_s];
    if params.auto_converge {
        cfg.throttle = ThrottleConfig {
            kind: ThrottleKind::AutoConverge,
            pct: p.max_cpu_throttle.map(|x| x.clamp(1, 99) as f64),
            tailslow: p.cpu_throttle_tailslow.unwrap_or(false),
            dirty_limit: None,
        };
    }
    let prep = plan(&cfg).map_err(|e| Error::Usage(e.to_string()))?;
    let cell: Prediction = grid(&prep.workload, &prep.input)
        .into_iter()
        .next()
        .context("the model gave no prediction")?;
    let horizon = cell.outcome.total_time_s * 3.0 + 60.0;
    let est: SyncEstimate = qemu_syncs(
        &prep.workload,
        &cell.outcome,
        cell.goodput_bytes_per_sec,
        cell.stop_copy_goodput_bytes_per_sec
            .unwrap_or(cell.goodput_bytes_per_sec),
        params.downtime_limit_s,
        horizon,
    );
    Ok(Predicted { cell, syncs: est })
}

/// Attaches, follows the migration to its end (or a signal, the timeout, QEMU's exit),
/// and builds the report. Errors only before the migration is followed.
async fn follow(
    args: &PassesArgs,
    cfg: &Config,
    mut feed: Option<&mut PassFeed>,
) -> Result<Report> {
    let mut q = Qmp::connect(&args.qmp, Duration::from_secs(5)).await?;
    // Counting before anything else, so the first bytes of a migration that starts right
    // after we attach are on the wire count too.
    let mut probe = send_probe(args.pid);
    let first = q.query_migrate().await?;
    let running = first
        .status
        .as_deref()
        .is_some_and(|s| s != "none" && !is_terminal(s));
    if !running {
        // QEMU sends MIGRATION_PASS only with `events`, settable only between migrations.
        q.migrate_set_capabilities(&[("events", true)])
            .await
            .context("enabling the events capability")?;
    }
    // Checked now (a bad --profile fails at once); read again when the migration starts.
    let mut st = setup(&mut q, cfg).await?;
    let mut tracker = Tracker::new();
    if running {
        tracker.attached_while_running();
    }
    let live = Live {
        feed: feed.as_deref_mut(),
        probe: probe.as_mut(),
    };
    let ended = follow_loop(&mut q, args, cfg, &mut tracker, &mut st, live).await?;
    // The stop-and-copy runs unthrottled and can end between our last count and the reply
    // that says `completed`: count what it sent before closing the last pass.
    if let Some(p) = probe.as_mut() {
        if let Ok(d) = p.take_deltas() {
            tracker.add_wire(d.migration_bytes);
        }
    }
    let started_wall_s = tracker.wall_start();
    let (passes, mut summary) = tracker.finish(ended);
    summary.events_dropped = q.events_dropped();
    if let Some(f) = feed {
        f.finish(&passes, &summary);
    }
    let comparison = st.predicted.as_ref().map(|p| {
        let actual = crate::model::backtest::ActualRun {
            status: summary.status.clone(),
            syncs: summary.passes,
            total_time_s: summary.total_time_s,
            bytes: summary.bytes,
            downtime_s: summary.downtime_s,
            passes: passes.iter().map(|p| (p.duration_s, p.bytes)).collect(),
        };
        crate::model::backtest::compare(&p.cell.outcome, &p.syncs, &actual)
    });
    let v = q.version().clone();
    Ok(Report {
        qemu_version: format!("{}.{}.{}", v.major, v.minor, v.micro),
        params: st.params,
        passes,
        summary,
        predicted: st.predicted,
        comparison,
        started_wall_s,
    })
}

/// What follows the migration besides the tracker: the metrics (`--listen`) and the eBPF
/// send counts (`--pid`).
struct Live<'a> {
    feed: Option<&'a mut PassFeed>,
    probe: Option<&'a mut SendProbe>,
}

/// The eBPF send path on the QEMU process (`--pid`), to count what its migration threads
/// put on the wire per pass; `None` (and the passes say "not measured") where it cannot run.
fn send_probe(pid: Option<u32>) -> Option<SendProbe> {
    let pid = pid?;
    match SendProbe::attach(Some(pid), &SendOptions::default()) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("migtrace: note: no eBPF send counts per pass: {e:#}");
            None
        }
    }
}

/// What ends a follow besides the migration: SIGINT, SIGTERM, SIGHUP and `--timeout`.
struct Stops {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    deadline: Option<tokio::time::Instant>,
}

impl Stops {
    fn new(timeout: Option<Duration>) -> Result<Stops> {
        Ok(Stops {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            sighup: signal(SignalKind::hangup())?,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        })
    }

    /// The next stop; cancel-safe, so it can race a poll.
    async fn next(&mut self) -> EndedBy {
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sigint.recv() => EndedBy::Signal("SIGINT".into()),
            _ = self.sigterm.recv() => EndedBy::Signal("SIGTERM".into()),
            _ = self.sighup.recv() => EndedBy::Signal("SIGHUP".into()),
            _ = timeout => EndedBy::Timeout,
        }
    }
}

/// Polls until the migration ends; a failed poll (QEMU gone) ends it too. A signal or the
/// timeout ends it also while a poll waits for its reply (a peer that answered nothing
/// kept `passes` alive past `--timeout` and deaf to SIGTERM), but never halfway through
/// recording a reply.
async fn follow_loop(
    q: &mut Qmp,
    args: &PassesArgs,
    cfg: &Config,
    tracker: &mut Tracker,
    st: &mut Setup,
    mut live: Live<'_>,
) -> Result<EndedBy> {
    let mut stops = Stops::new(cfg.timeout)?;
    let mut tick = tokio::time::interval(cfg.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            e = stops.next() => return Ok(e),
        }
        if let Some(p) = live.probe.as_deref_mut() {
            // Before the reply, so a pass boundary the reply shows splits the bytes close
            // to where QEMU's counter does.
            if let Ok(d) = p.take_deltas() {
                tracker.add_wire(d.migration_bytes);
            }
        }
        // Only the wait for the reply races the stops: once a reply is in, what it says
        // (a `completed` above all) is recorded whole, within the QMP deadline.
        let reply = tokio::select! {
            r = q.query_migrate() => r,
            e = stops.next() => return Ok(e),
        };
        let polled = match reply {
            Ok(info) => poll_once(q, cfg, tracker, st, live.feed.as_deref_mut(), info).await,
            Err(e) => Err(e),
        };
        match polled {
            Ok(Some(ended)) => return Ok(ended),
            Ok(None) => {}
            Err(e) => return Ok(EndedBy::QemuGone(format!("{e:#}"))),
        }
        if let Some(pid) = args.pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Ok(EndedBy::QemuGone(format!("QEMU pid {pid} exited")));
            }
        }
    }
}

/// Records one `query-migrate` reply; how the follow ends, when it does: the migration's end,
/// or a reply no QEMU sends.
async fn poll_once(
    q: &mut Qmp,
    cfg: &Config,
    t: &mut Tracker,
    st: &mut Setup,
    mut feed: Option<&mut PassFeed>,
    info: MigrationInfo,
) -> Result<Option<EndedBy>> {
    let wall = wall_now();
    for e in q.take_events() {
        if e.event == "MIGRATION_PASS" {
            if let Some(n) = e.data["pass"].as_u64() {
                t.pass_event(n, event_wall(&e));
            }
        }
    }
    let was = t.started();
    t.observe(&info, wall);
    if let Some(why) = t.broken() {
        return Ok(Some(EndedBy::Implausible(why.to_string())));
    }
    if let Some(f) = feed.as_deref_mut().filter(|_| t.started()) {
        f.reply(&info);
        f.closed(t.closed());
    }
    if !was && t.started() {
        // The migration's own settings (they may have changed since we attached).
        if let Ok(s) = setup(q, cfg).await {
            *st = s;
        }
        if let (Some(f), Some(p)) = (feed, &st.predicted) {
            let o = &p.cell.outcome;
            f.predicted(
                p.cell.link_bits_per_sec,
                o.total_time_s,
                o.downtime_s,
                o.converges,
            );
        }
    }
    let status = info.status.as_deref().unwrap_or("none");
    if !(t.started() && is_terminal(status)) {
        return Ok(None);
    }
    // The first `completed` reply can say total-time 0 (docs/qemu.md): read again.
    let mut last = info;
    for _ in 0..20 {
        if last.status.as_deref() != Some("completed") || last.total_time.unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = q.query_migrate().await?;
    }
    t.observe(&last, wall_now());
    Ok(Some(match t.broken() {
        Some(why) => EndedBy::Implausible(why.to_string()),
        None => EndedBy::Migration,
    }))
}
