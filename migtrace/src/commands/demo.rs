//! `migtrace demo`: the main job on a built-in workload. It starts the built-in writer with a
//! known rate, working set and pattern, watches it like `watch --pid` would, and prints the
//! measured dirty rate beside the true one, so a first-time user sees what the tool measures
//! and how close it gets.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser};

use crate::{
    sink::terminal::TerminalSink,
    source::{BackendChoice, SourceOptions},
    target::page_size,
    units::fmt_bytes as bytes,
    units::parse_duration,
    watcher::{self, WatchConfig},
    workload::{expected_unique, Pattern},
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Writer pattern.
    #[arg(long, value_enum, default_value = "seq")]
    pub pattern: Pattern,
    /// Writer rate, MiB/s of 4 KiB page writes.
    #[arg(long, default_value_t = 64.0)]
    pub rate_mib: f64,
    /// Writer working set, MiB.
    #[arg(long, default_value_t = 256)]
    pub wss_mib: u64,
    /// How long to watch.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Backend to watch with.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Where to write the measured profile (default: migtrace-demo-profile.json in the
    /// temporary directory, kept so `migtrace predict --profile` can be tried on it).
    #[arg(long)]
    pub profile_out: Option<PathBuf>,
    /// Links to predict a migration of the writer over, from the measured profile.
    #[arg(long, default_value = "100m,1g,10g")]
    pub links: String,
}

/// The writer process, stopped (SIGTERM) on every way out of `run`, errors included.
struct WriterChild(std::process::Child);

impl WriterChild {
    fn terminate(&self) {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for WriterChild {
    fn drop(&mut self) {
        self.terminate();
        let _ = self.0.wait();
    }
}

pub fn run(a: DemoArgs) -> Result<()> {
    if matches!(a.pattern, Pattern::Once | Pattern::Churn) {
        return Err(crate::error::Error::Usage(
            "demo needs a steady pattern: seq, random or hotcold".into(),
        )
        .into());
    }
    if a.rate_mib <= 0.0 || a.wss_mib == 0 {
        return Err(crate::error::Error::Usage(
            "demo needs --rate-mib > 0 and --wss-mib > 0".into(),
        )
        .into());
    }
    let exe = std::env::current_exe().context("locating the migtrace binary")?;
    let pattern = format!("{:?}", a.pattern).to_lowercase();
    println!(
        "demo: starting the built-in writer: {pattern} writes at {:.0} MiB/s over a {} MiB working set",
        a.rate_mib, a.wss_mib
    );
    let mut child = WriterChild(
        Command::new(&exe)
            .args(["writer", "--pattern", &pattern])
            .args([
                "--rate-mib",
                &a.rate_mib.to_string(),
                "--wss-mib",
                &a.wss_mib.to_string(),
            ])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting the writer")?,
    );
    let mut out = BufReader::new(child.0.stdout.take().context("writer stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let ready: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| anyhow!("writer did not start: {e}: {line:?}"))?;
    let pid = child.0.id();
    let pages = ready["pages"].as_f64().unwrap_or(0.0);

    let profile_path = a
        .profile_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("migtrace-demo-profile.json"));
    let cfg = WatchConfig {
        interval: Duration::from_secs(1),
        duration: Some(a.duration),
        backend: a.backend,
        profile_out: Some(profile_path.clone()),
        source: SourceOptions {
            pid,
            interval: Duration::from_secs(1),
            range: None,
            sample_error: 0.05,
            sample_pages: None,
            epoch: Duration::from_millis(100),
            max_overhead_pct: 2.0,
            force: false,
        },
    };
    let mut sink = TerminalSink::new(std::io::stdout());
    let res = watcher::watch(&cfg, &mut sink);
    child.terminate();
    line.clear();
    out.read_line(&mut line)?;
    let _ = child.0.wait();
    let summary = res?;
    let done: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let writes_per_s = done["pages_per_sec"].as_f64().unwrap_or(0.0);

    let page = page_size() as f64;
    let truth_pages = expected_unique(a.pattern, writes_per_s, pages, 1.0, 0.1, 0.9);
    let truth = truth_pages * page;
    let measured = summary.dirty_bytes_per_sec;
    println!("\ndemo: measured against the truth (unique pages dirtied per 1 s interval)");
    println!(
        "  writer did      {} page writes/s ({}/s of writes)",
        writes_per_s.round(),
        bytes(writes_per_s * page)
    );
    println!(
        "  true dirty rate {}/s  ({:.0} unique pages per second)",
        bytes(truth),
        truth_pages
    );
    let ci = summary
        .ci95_bytes_per_sec
        .map(|[lo, hi]| {
            let inside = truth >= lo && truth <= hi;
            format!(
                ", 95% CI {}/s .. {}/s {}",
                bytes(lo),
                bytes(hi),
                if inside {
                    "contains the truth"
                } else {
                    "misses the truth"
                }
            )
        })
        .unwrap_or_default();
    println!(
        "  measured        {}/s by {}{}",
        bytes(measured),
        summary.backend,
        ci
    );
    if truth > 0.0 {
        println!(
            "  error           {:+.1}%",
            (measured - truth) / truth * 100.0
        );
    }
    if let (Some(f), "sample+fault") = (summary.faults, summary.backend.as_str()) {
        println!(
            "  write faults    {} in all: the writer rewrites resident pages, which take no fault; this is why the rate comes from sampling",
            f.writes()
        );
    }
    predict_from(&profile_path, &a.links)?;
    println!(
        "\nnext: migtrace predict --profile {} --link 1g,10g,40g --explain    (full pass tables and settings)",
        profile_path.display()
    );
    Ok(())
}

/// The planning half on the measured profile: would this writer live-migrate, and how fast,
/// over each link? One line per link (the full tables: `migtrace predict --profile`).
fn predict_from(profile: &std::path::Path, links: &str) -> Result<()> {
    let cli = crate::cli::Cli::try_parse_from([
        "migtrace",
        "predict",
        "--profile",
        profile.to_str().context("profile path is not UTF-8")?,
        "--link",
        links,
    ])
    .map_err(|e| anyhow!("building the predict arguments: {e}"))?;
    let crate::cli::Command::Predict(pa) = cli.command else {
        unreachable!("parsed a predict command")
    };
    let p = crate::commands::predict::prepare(&pa.opts)?;
    let cells = crate::model::grid(&p.workload, &p.input);
    println!("
demo: predicted QEMU pre-copy migration of the writer, from the measured profile (migtrace predict --profile)");
    println!(
        "  {:>12} {:>10} {:>7} {:>11} {:>10}  recommendation",
        "link", "converges", "passes", "total time", "downtime"
    );
    // For a migration that never converges, the time is how long the simulation ran before
    // giving up, and there is no downtime to speak of.
    for c in &cells {
        let o = &c.outcome;
        let rec = match c.recommendation.kind.as_str() {
            "none" => "none needed".to_string(),
            k => match c.recommendation.level {
                Some(l) => format!(
                    "{k} {l:.0}{}",
                    c.recommendation.level_unit.as_deref().unwrap_or("")
                ),
                None => k.to_string(),
            },
        };
        let (time, down) = if o.converges {
            (
                format!("{:.2}s", o.total_time_s),
                format!("{:.0}ms", o.downtime_s * 1000.0),
            )
        } else {
            ("never".to_string(), "-".to_string())
        };
        println!(
            "  {:>12} {:>10} {:>7} {:>11} {:>10}  {}",
            crate::units::fmt_link(c.link_bits_per_sec),
            if o.converges { "yes" } else { "NO" },
            if o.converges {
                o.passes.len().to_string()
            } else {
                "-".into()
            },
            time,
            down,
            rec
        );
    }
    Ok(())
}
