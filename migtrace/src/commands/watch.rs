//! `migtrace watch`: measure a live process's dirty rate until a duration elapses, the
//! target exits, or Ctrl-C/SIGTERM arrives, then write the summary (and the profile).
//!
//! Thin: the flags are checked and lowered into a [`WatchConfig`]; [`crate::watcher`] runs
//! the loop and a sink renders the records.
use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;

use crate::{
    error::Error,
    link::LinkConfig,
    profile::Profile,
    sink::{
        hdrlog::HdrLogSink,
        json::JsonSink,
        prometheus::{self, Metrics, PromSink},
        terminal::TerminalSink,
        FanOut, Sink,
    },
    source::{BackendChoice, SourceOptions},
    units::parse_duration,
    watcher::{self, WatchConfig},
};

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Process to watch. For a VM, the QEMU process: its guest RAM is found and measured
    /// (not QEMU's own memory), unless `--range` or `--whole-process` says otherwise.
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
    #[arg(long, default_value_t = SourceOptions::DEFAULT_SAMPLE_ERROR)]
    pub sample_error: f64,
    /// Sampling: fixed number of sampled pages (disables automatic sizing).
    #[arg(long)]
    pub sample_pages: Option<u64>,
    /// Sampling: the watch's CPU budget in steady state, percent of one core. The sample is
    /// sized for --sample-error, but no larger than this affords; the output says when it
    /// capped the sample and the precision that left (docs/benchmarks.md).
    #[arg(long, default_value_t = crate::source::sample::DEFAULT_CPU_PCT)]
    pub sample_cpu: f64,
    /// softdirty: initial epoch, 50ms to 1s (adapted to --max-overhead) [default: 100ms].
    #[arg(long, value_parser = parse_duration)]
    pub epoch: Option<Duration>,
    /// softdirty: CPU time the induced faults may take, percent of one CPU.
    #[arg(long, default_value_t = SourceOptions::DEFAULT_MAX_OVERHEAD_PCT)]
    pub max_overhead: f64,
    /// softdirty: arm even when something else seems to use the target's soft-dirty bits.
    #[arg(long)]
    pub force: bool,
    /// QEMU's QMP socket (a unix socket path): QEMU's own view of its memory and vCPUs,
    /// and its `calc-dirty-rate` (page-sampling) shown beside migtrace's rate.
    #[arg(long, value_name = "SOCKET")]
    pub qmp: Option<PathBuf>,
    /// For a QEMU process, measure all of its memory, not only the guest's RAM.
    #[arg(long)]
    pub whole_process: bool,
    /// Send path: show this interface's tx beside the link, the headroom a migration would
    /// get and the dirty rate over it (eBPF, `net/net_dev_xmit`; docs/sendpath.md).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// The nominal link of `--iface` in bits/s (10g, 1000m), as `predict --link`; default:
    /// /sys/class/net/IF/speed where the driver reports one (loopback does not).
    #[arg(long, value_name = "RATE")]
    pub link: Option<String>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics while watching (loopback only
    /// unless --listen-any; docs/monitoring.md).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Allow --listen on a non-loopback address.
    #[arg(long)]
    pub listen_any: bool,
    /// With --listen: also serve the pre-copy model's time, downtime and verdict for a
    /// migration over this link (e.g. 10g) at the live rate.
    #[arg(long, value_name = "LINK", value_parser = crate::units::parse_link)]
    pub predict_link: Option<f64>,
    /// Write the per-interval dirty rate as an HdrHistogram interval log (V2, compressed).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
}

/// Parses `START-END` (hex, `0x` optional).
pub fn parse_range(s: &str) -> std::result::Result<(u64, u64), Error> {
    let bad = |m: String| Error::Usage(m);
    let (a, b) = s.split_once('-').ok_or_else(|| {
        bad(format!(
            "bad range {s:?}: expected START-END in hex, e.g. 7f0000000000-7f0040000000"
        ))
    })?;
    let hex = |x: &str| {
        u64::from_str_radix(x.trim().trim_start_matches("0x"), 16)
            .map_err(|e| bad(format!("bad address {x:?} in range: {e}")))
    };
    let (lo, hi) = (hex(a)?, hex(b)?);
    if hi <= lo {
        return Err(bad(format!("bad range {s:?}: end must be above start")));
    }
    Ok((lo, hi))
}

/// Runs `watch` as the CLI does.
pub fn run(a: WatchArgs) -> Result<()> {
    let cfg = config(&a)?;
    let mut sink: Box<dyn Sink> = if a.json {
        Box::new(JsonSink::new(std::io::stdout()))
    } else {
        Box::new(TerminalSink::new(std::io::stdout()))
    };
    let mut extra = extra_sinks(&a)?;
    let mut all = FanOut(vec![sink.as_mut()]);
    all.0
        .extend(extra.iter_mut().map(|b| b.as_mut() as &mut dyn Sink));
    watcher::watch(&cfg, &mut all)?;
    // The summary is out; a record the user asked for that could not be written fails the
    // run (`--hdr-log /dev/full` exited 0 with an empty log).
    if let Some(why) = all.failure() {
        anyhow::bail!("--hdr-log: the log could not be written: {why}");
    }
    Ok(())
}

/// The sinks beside the output: the metrics endpoint and the HdrHistogram log. Both are
/// opened now, so that a busy port or a bad path is an error before measuring starts.
fn extra_sinks(a: &WatchArgs) -> Result<Vec<Box<dyn Sink>>> {
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(l) = &a.listen {
        let listener = prometheus::bind(l, a.listen_any)?;
        let metrics = std::sync::Arc::new(Metrics::predicting(a.predict_link));
        metrics.targets.set(1);
        prometheus::serve(listener, metrics.clone())?;
        out.push(Box::new(PromSink::new(metrics)));
    }
    if let Some(p) = &a.hdr_log {
        let f = crate::files::create_stream(p)
            .map_err(|e| usage(format!("--hdr-log {}: {e}", p.display())))?;
        out.push(Box::new(HdrLogSink::new(f)));
    }
    Ok(out)
}

/// Checks the flags and lowers them into the typed configuration.
pub fn config(a: &WatchArgs) -> Result<WatchConfig> {
    let base = WatchConfig::new(a.pid, a.interval);
    let cfg = WatchConfig {
        duration: a.duration,
        backend: a.backend,
        profile_out: a.profile_out.clone(),
        source: SourceOptions {
            range: a.range,
            sample_error: a.sample_error,
            sample_pages: a.sample_pages,
            sample_cpu_pct: a.sample_cpu,
            epoch: a.epoch.unwrap_or(SourceOptions::DEFAULT_EPOCH),
            max_overhead_pct: a.max_overhead,
            force: a.force,
            ..base.source
        },
        qmp: a.qmp.clone(),
        whole_process: a.whole_process,
        link: link_config(a)?,
        ..base
    };
    cfg.check()?;
    check_flags(a)?;
    Ok(cfg)
}

/// `--iface` and `--link`, checked: the interface must exist, `--link` needs `--iface`.
fn link_config(a: &WatchArgs) -> Result<Option<LinkConfig>> {
    let link_bits = match &a.link {
        Some(l) => Some(crate::units::parse_link(l).map_err(|e| usage(format!("--link: {e}")))?),
        None => None,
    };
    let Some(iface) = &a.iface else {
        if link_bits.is_some() {
            return Err(usage(
                "--link needs --iface: the interface whose traffic shares the link".into(),
            ));
        }
        return Ok(None);
    };
    let valid = !iface.is_empty()
        && iface.len() < 16
        && !iface.contains(['/', '\0'])
        && iface != "."
        && iface != "..";
    if !valid || !std::path::Path::new("/sys/class/net").join(iface).exists() {
        return Err(usage(format!(
            "--iface {iface:?}: no such network interface (see ip link)"
        )));
    }
    Ok(Some(LinkConfig {
        iface: Some(iface.clone()),
        link_bits,
        efficiency: crate::model::config::DEFAULT_EFFICIENCY,
    }))
}

fn usage(msg: String) -> anyhow::Error {
    Error::Usage(msg).into()
}

/// What only the flags can get wrong: options that need another, and an output file that
/// could not be written after a long watch.
fn check_flags(a: &WatchArgs) -> Result<()> {
    if a.listen.is_none() && (a.listen_any || a.predict_link.is_some()) {
        return Err(usage(
            "--listen-any and --predict-link need --listen ADDR:PORT".into(),
        ));
    }
    if let Some(p) = &a.profile_out {
        // Found out now, not after a long watch whose record would then be lost.
        Profile::check_writable(p).map_err(|e| usage(format!("--profile-out: {e}")))?;
    }
    Ok(())
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
