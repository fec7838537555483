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
use clap::Args;

use crate::{
    commands::watch::{self, WatchArgs},
    sink::terminal::{bytes, TerminalSink},
    source::BackendChoice,
    target::page_size,
    units::parse_duration,
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
    /// Also write the profile here.
    #[arg(long)]
    pub profile_out: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<()> {
    if matches!(a.pattern, Pattern::Once | Pattern::Churn) {
        return Err(crate::error::UsageError(
            "demo needs a steady pattern: seq, random or hotcold".into(),
        )
        .into());
    }
    if a.rate_mib <= 0.0 || a.wss_mib == 0 {
        return Err(
            crate::error::UsageError("demo needs --rate-mib > 0 and --wss-mib > 0".into()).into(),
        );
    }
    let exe = std::env::current_exe().context("locating the migtrace binary")?;
    let pattern = format!("{:?}", a.pattern).to_lowercase();
    println!(
        "demo: starting the built-in writer: {pattern} writes at {:.0} MiB/s over a {} MiB working set",
        a.rate_mib, a.wss_mib
    );
    let mut child = Command::new(&exe)
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
        .context("starting the writer")?;
    let mut out = BufReader::new(child.stdout.take().context("writer stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let ready: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| anyhow!("writer did not start: {e}: {line:?}"))?;
    let pid = child.id();
    let pages = ready["pages"].as_f64().unwrap_or(0.0);

    let args = WatchArgs {
        pid,
        interval: Duration::from_secs(1),
        duration: Some(a.duration),
        backend: a.backend,
        json: false,
        profile_out: a.profile_out.clone(),
        range: None,
        sample_error: 0.05,
        sample_pages: None,
        epoch: Duration::from_millis(100),
        max_overhead: 2.0,
        force: false,
    };
    let mut sink = TerminalSink::new(std::io::stdout());
    let res = watch::watch(&args, &mut sink);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    line.clear();
    out.read_line(&mut line)?;
    let _ = child.wait();
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
    if let Some(f) = summary.faults {
        println!(
            "  write faults    {} in all: the writer rewrites resident pages, which take no fault; this is why the rate comes from sampling",
            f.writes()
        );
    }
    Ok(())
}
