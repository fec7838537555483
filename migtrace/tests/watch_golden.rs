//! Golden master of `watch`'s statistics and rendering: recorded interval series (the raw
//! per-interval reports of real watches, with their timings, and the target's state) are
//! replayed through the summary statistics and every renderer: the terminal text, the JSON
//! lines, the profile, and the Prometheus metrics the exporter serves. The output must match the recorded files byte for byte.
//!
//! The `.txt` files of the real recordings are the terminal output of the watch that made
//! them, before the statistics moved out of the command. After an intended change of output,
//! rerun with `MIGTRACE_UPDATE_GOLDEN=1` and review the diff.
use std::path::{Path, PathBuf};

use migtrace::{
    model::summary::{summarize, SummaryInput, TargetState, Totals},
    profile::Profile,
    record::{EndReason, FinalReport, IntervalReport, Start},
    sink::{
        json::JsonSink,
        prometheus::{to_text_004, Metrics, PromSink},
        terminal::TerminalSink,
        Sink,
    },
};
use serde::Deserialize;

/// One recorded watch: what the backend reported, when, and what the target looked like.
#[derive(Deserialize)]
struct Recording {
    pid: u32,
    comm: String,
    backend: String,
    reason: String,
    caveats: Vec<String>,
    interval_s: f64,
    page_size: u64,
    first: TargetState,
    last: Last,
    end: EndReason,
    duration_s: f64,
    intervals: Vec<Recorded>,
    #[serde(rename = "final")]
    fin: FinalReport,
    end_caveats: Vec<String>,
    clock_ticks: u64,
    #[serde(default)]
    profile_out: Option<String>,
}

#[derive(Deserialize)]
struct Last {
    #[serde(flatten)]
    state: TargetState,
    since_first_s: f64,
}

#[derive(Deserialize)]
struct Recorded {
    report: IntervalReport,
    t_s: f64,
    wall_s: f64,
}

/// Replays a recording through the statistics and the three renderers.
fn render(rec: &Recording, sink: &mut dyn Sink) -> Profile {
    sink.start(&Start {
        pid: rec.pid,
        comm: rec.comm.clone(),
        backend: rec.backend.clone(),
        reason: rec.reason.clone(),
        caveats: rec.caveats.clone(),
        interval_s: rec.interval_s,
        target_rss_bytes: rec.first.rss,
        writable_bytes: rec.first.writable,
        shared_writable_bytes: rec.first.shared,
        mappings: vec![],
        guest: None,
        warnings: vec![],
    });
    let mut totals = Totals::new(rec.interval_s, rec.page_size);
    for i in &rec.intervals {
        if let Some(line) = totals.add(&i.report, i.wall_s, i.t_s) {
            sink.interval(&line);
        }
    }
    let summary = summarize(
        &totals,
        SummaryInput {
            pid: rec.pid,
            comm: rec.comm.clone(),
            backend: rec.backend.clone(),
            end: rec.end,
            duration_s: rec.duration_s,
            first: &rec.first,
            last: &rec.last.state,
            busy_window_s: rec.last.since_first_s,
            clock_hz: rec.clock_ticks as f64,
            fin: &rec.fin,
            caveats: rec.end_caveats.clone(),
            profile_out: rec.profile_out.clone(),
            thread_comm: &|tid| format!("exited-{tid}"),
            guest: None,
        },
    );
    sink.summary(&summary);
    Profile::from_summary(&summary, rec.fin.threads_attribute_dirtying, 0)
}

/// What the exporter (and `watch --listen --predict-link 10g`) serves for the recording,
/// in the text format 0.0.4, its lines sorted: the registry writes a family's label sets in
/// hash order.
fn metrics(rec: &Recording) -> String {
    let m = std::sync::Arc::new(Metrics::predicting(Some(10e9)));
    m.targets.set(1);
    render(rec, &mut PromSink::new(m.clone()));
    let text = to_text_004(&m.openmetrics());
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n") + "\n"
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/watch")
}

/// Compares `got` with the golden file, or rewrites it when asked to.
fn check(path: &Path, got: &str, failures: &mut Vec<String>) {
    if std::env::var_os("MIGTRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (MIGTRACE_UPDATE_GOLDEN=1 records it)",
            path.display()
        )
    });
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        failures.push(format!(
            "{} differs from line {}:\n  want: {:?}\n  got:  {:?}",
            path.display(),
            line + 1,
            want.lines().nth(line),
            got.lines().nth(line)
        ));
    }
}

#[test]
fn recorded_watches_render_as_recorded() {
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".rec.json") else {
            continue;
        };
        n += 1;
        let rec: Recording = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut text = Vec::new();
        let prof = render(&rec, &mut TerminalSink::new(&mut text));
        let mut json = Vec::new();
        render(&rec, &mut JsonSink::new(&mut json));
        let dir = fixtures();
        check(
            &dir.join(format!("{stem}.metrics")),
            &metrics(&rec),
            &mut failures,
        );
        check(
            &dir.join(format!("{stem}.txt")),
            &String::from_utf8(text).unwrap(),
            &mut failures,
        );
        check(
            &dir.join(format!("{stem}.jsonl")),
            &String::from_utf8(json).unwrap(),
            &mut failures,
        );
        check(
            &dir.join(format!("{stem}.profile.json")),
            &prof.to_text(),
            &mut failures,
        );
    }
    assert!(
        n >= 5,
        "only {n} recordings found in {}",
        fixtures().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
