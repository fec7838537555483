//! `migtrace demo`: the main job on a built-in workload. It starts the built-in writer with a
//! known rate, working set and pattern, watches it like `watch --pid` would, and prints the
//! measured dirty rate beside the true one, so a first-time user sees what the tool measures
//! and how close it gets.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::{
    error::Error,
    model::config::{plan, PredictConfig},
    output::demo::{self as demo_out, Comparison},
    profile::Profile,
    sink::terminal::TerminalSink,
    source::BackendChoice,
    target::page_size,
    units::{self, parse_duration},
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
    check(&a)?;
    let links = units::parse_list(&a.links, units::parse_link)
        .map_err(|e| Error::Usage(format!("--links: {e}")))?;
    let out = &mut std::io::stdout();
    demo_out::writer_started(out, &a.pattern_name(), a.rate_mib, a.wss_mib);
    let (mut child, mut lines, ready) = start_writer(&a)?;
    let profile_path = a
        .profile_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("migtrace-demo-profile.json"));
    let cfg = watch_config(&a, child.0.id(), profile_path.clone());
    let mut sink = TerminalSink::new(std::io::stdout());
    let res = watcher::watch(&cfg, &mut sink);
    child.terminate();
    let mut line = String::new();
    lines.read_line(&mut line)?;
    let _ = child.0.wait();
    let summary = res?;
    let done: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let writes_per_s = done["pages_per_sec"].as_f64().unwrap_or(0.0);
    let pages = ready["pages"].as_f64().unwrap_or(0.0);
    let page = page_size() as f64;
    let truth_pages = expected_unique(a.pattern, writes_per_s, pages, 1.0, 0.1, 0.9);
    demo_out::comparison(
        out,
        &Comparison {
            writes_per_s,
            page_bytes: page,
            truth_pages,
            summary: &summary,
        },
    );
    let profile = Profile::load(&profile_path).map_err(|e| Error::Input(e.to_string()))?;
    let cfg = PredictConfig::for_profile(profile, profile_path.clone(), links);
    let p = plan(&cfg).map_err(|e| Error::Usage(e.to_string()))?;
    let cells = crate::model::grid(&p.workload, &p.input);
    demo_out::predictions(out, &cells);
    demo_out::next_step(out, &profile_path);
    Ok(())
}

impl DemoArgs {
    fn pattern_name(&self) -> String {
        format!("{:?}", self.pattern).to_lowercase()
    }
}

fn check(a: &DemoArgs) -> Result<()> {
    if matches!(a.pattern, Pattern::Once | Pattern::Churn) {
        return Err(
            Error::Usage("demo needs a steady pattern: seq, random or hotcold".into()).into(),
        );
    }
    if a.rate_mib <= 0.0 || a.wss_mib == 0 {
        return Err(Error::Usage("demo needs --rate-mib > 0 and --wss-mib > 0".into()).into());
    }
    Ok(())
}

/// Starts the built-in writer and waits for its `ready` line.
fn start_writer(a: &DemoArgs) -> Result<(WriterChild, BufReader<ChildStdout>, serde_json::Value)> {
    let exe = std::env::current_exe().context("locating the migtrace binary")?;
    let mut child = WriterChild(
        Command::new(&exe)
            .args(["writer", "--pattern", &a.pattern_name()])
            .args(["--rate-mib", &a.rate_mib.to_string()])
            .args(["--wss-mib", &a.wss_mib.to_string()])
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
    Ok((child, out, ready))
}

/// The watch `demo` runs: 1 s intervals, the demo's backend and duration.
fn watch_config(a: &DemoArgs, pid: u32, profile_out: PathBuf) -> WatchConfig {
    WatchConfig {
        duration: Some(a.duration),
        backend: a.backend,
        profile_out: Some(profile_out),
        ..WatchConfig::new(pid, Duration::from_secs(1))
    }
}
