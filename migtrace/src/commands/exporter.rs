//! `migtrace exporter`: a long-running Prometheus exporter for several targets at once.
//!
//! Targets are the `--pid`s given, or every QEMU process on the host (`--qemu`, found by
//! name: `qemu-system-*`, `qemu-kvm`); they are looked for again every `--rescan`, so VMs
//! come and go without a restart. Each target gets the ordinary watch
//! ([`crate::watcher::watch`], the same sources, the same records) in a thread of its own,
//! feeding one shared registry through a [`PromSink`] labelled with its pid, comm and
//! guest name. State stays bounded over hours without restarts: a watch's statistics are
//! running sums and a histogram ([`crate::model::summary::Totals`]), not a list of
//! intervals, and the series of a target that exited are removed. `--cycle` still restarts
//! each watch that often (off by default; the series and counters carry on). SIGTERM or
//! SIGINT ends every watch and then the exporter.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::SignalKind;

use crate::{
    error::Error,
    record::EndReason,
    sink::prometheus::{self, Metrics, PromSink},
    source::BackendChoice,
    units::parse_duration,
    watcher::{self, WatchConfig},
};

#[derive(Debug, Clone, Args)]
pub struct ExporterArgs {
    /// A process to watch (repeat for several).
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Watch every QEMU process on the host (found by name, rescanned), of the trusted users
    /// and from a root-only executable (docs/monitoring.md).
    #[arg(long)]
    pub qemu: bool,
    /// With --qemu: a user whose QEMU processes are watched (repeat; default root,
    /// libvirt-qemu and qemu, those of them this host has). Root is always trusted.
    #[arg(long = "qemu-user", value_name = "USER")]
    pub qemu_users: Vec<String>,
    /// Watch at most this many targets at once; more are counted, not watched.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_targets: usize,
    /// Where to serve /metrics (loopback unless --listen-any).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Allow --listen on a non-loopback address.
    #[arg(long)]
    pub listen_any: bool,
    /// Length of one measurement interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How often to look for new targets.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub rescan: Duration,
    /// Restart each watch this often (series carry on). Off by default: a watch's memory
    /// does not grow with its length.
    #[arg(long, value_parser = parse_duration)]
    pub cycle: Option<Duration>,
    /// Also serve the pre-copy model's time, downtime and verdict over this link (e.g. 10g)
    /// at each target's live rate.
    #[arg(long, value_name = "LINK", value_parser = crate::units::parse_link)]
    pub predict_link: Option<f64>,
    /// Dirty-tracking backend for every target.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

/// One target's watch thread.
struct Running {
    thread: JoinHandle<()>,
}

/// Runs the exporter until SIGTERM or SIGINT.
pub fn run(a: ExporterArgs) -> Result<()> {
    validate(&a)?;
    let listener = prometheus::bind(&a.listen, a.listen_any)?;
    let metrics = Arc::new(Metrics::predicting(a.predict_link));
    prometheus::serve(listener, metrics.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(main_loop(&a, metrics))
}

fn validate(a: &ExporterArgs) -> Result<()> {
    if a.pids.is_empty() && !a.qemu {
        return Err(Error::Usage("give --pid PID (repeatable) or --qemu".into()).into());
    }
    if a.rescan < Duration::from_millis(100) {
        return Err(Error::Usage("--rescan must be at least 100ms".into()).into());
    }
    if a.max_targets == 0 {
        return Err(Error::Usage("--max-targets must be at least 1".into()).into());
    }
    if !a.qemu_users.is_empty() && !a.qemu {
        return Err(Error::Usage("--qemu-user goes with --qemu".into()).into());
    }
    crate::qemu::trust::uids(&a.qemu_users)?;
    if a.cycle.is_some_and(|c| c < a.interval * 2) {
        return Err(Error::Usage("--cycle must be at least two intervals".into()).into());
    }
    // The per-target settings are checked as `watch` checks them.
    watch_config(a, 1).check()?;
    Ok(())
}

/// The watch of one target, as `watch --pid PID` with the exporter's settings.
fn watch_config(a: &ExporterArgs, pid: u32) -> WatchConfig {
    WatchConfig {
        duration: a.cycle,
        backend: a.backend,
        ..WatchConfig::new(pid, a.interval)
    }
}

/// Rescans, starts and reaps watches until a signal; then waits for the watches to end.
async fn main_loop(a: &ExporterArgs, metrics: Arc<Metrics>) -> Result<()> {
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut running: HashMap<u32, Running> = HashMap::new();
    // Targets whose watch failed: not retried while they live (a kernel thread, no access).
    let mut failed: HashSet<u32> = HashSet::new();
    let mut timer = tokio::time::interval(a.rescan);
    let users = crate::qemu::trust::uids(&a.qemu_users)?;
    let mut warned: HashSet<u32> = HashSet::new();
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        let (found, mut skipped) = find_targets(a, &users, &mut warned);
        running.retain(|pid, r| {
            let done = r.thread.is_finished();
            if done && found.contains(pid) {
                failed.insert(*pid);
            }
            !done
        });
        failed.retain(|p| found.contains(p));
        for pid in found {
            if running.contains_key(&pid) || failed.contains(&pid) {
                continue;
            }
            if running.len() >= a.max_targets {
                skipped += 1;
                continue;
            }
            let cfg = watch_config(a, pid);
            let (m, s) = (metrics.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("watch-{pid}"))
                .spawn(move || watch_target(cfg, m, s))?;
            running.insert(pid, Running { thread });
        }
        metrics.targets.set(running.len() as i64);
        metrics.exporter_skipped.set(skipped as i64);
        metrics.exporter_rss.set(self_rss_bytes());
    }
    stop.store(true, Ordering::SeqCst);
    // Each watch received the same signal and ends with its summary. One that was between
    // two cycles when it came would run a whole cycle more: the wait is bounded, and
    // leaving it to the process exit loses nothing (its only sink is the registry).
    let deadline = std::time::Instant::now() + STOP_WAIT;
    while running.values().any(|r| !r.thread.is_finished()) && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// How long the exporter waits for its watches to end after a signal.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Watches one target, cycle after cycle, until it exits, a signal arrives or a watch
/// fails; then removes its series.
fn watch_target(cfg: watcher::WatchConfig, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    let labels = loop {
        let mut sink = PromSink::new(metrics.clone());
        let r = watcher::watch(&cfg, &mut sink);
        match r {
            Ok(s) if s.end_reason == EndReason::Duration && !stop.load(Ordering::SeqCst) => {
                continue
            }
            Ok(_) => {}
            Err(e) => log::warn!("watch of pid {}: {e:#}", cfg.source.pid),
        }
        break sink.labels().clone();
    };
    metrics.forget(&labels);
}

/// The targets now: the given pids that are alive, plus with `--qemu` every trusted QEMU
/// process (`qemu::trust`); and how many QEMU-named processes were not trusted. Each
/// untrusted one is logged once, with why.
fn find_targets(
    a: &ExporterArgs,
    users: &HashSet<u32>,
    warned: &mut HashSet<u32>,
) -> (HashSet<u32>, usize) {
    let alive = |p: &u32| std::path::Path::new(&format!("/proc/{p}")).exists();
    let mut out: HashSet<u32> = a.pids.iter().copied().filter(alive).collect();
    let mut untrusted = 0;
    if a.qemu {
        for pid in crate::qemu::trust::named_like_qemu() {
            match crate::qemu::trust::check(pid, users) {
                Ok(()) => {
                    out.insert(pid);
                }
                Err(why) => {
                    untrusted += 1;
                    if warned.insert(pid) {
                        log::warn!("pid {pid} is named like QEMU but not watched: {why:?}");
                    }
                }
            }
        }
        warned.retain(|p| alive(p));
    }
    (out, untrusted)
}

/// This process's resident memory, bytes.
fn self_rss_bytes() -> i64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .unwrap_or(0);
    pages * crate::target::page_size() as i64
}
