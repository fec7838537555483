//! What `migtrace demo` prints besides the watch itself (which goes through the terminal
//! sink like any watch): the writer it started, the measured rate beside the true one, and
//! the predicted migration of that writer over a few links.
use std::io::Write;

use crate::{
    model::{recommend::RecommendationKind, Prediction},
    record::Summary,
    units::clean,
    units::{fmt_bytes as bytes, fmt_link},
};

/// The measured rate and what the writer really did.
pub struct Comparison<'a> {
    /// Page writes per second the writer reported.
    pub writes_per_s: f64,
    pub page_bytes: f64,
    /// True unique pages dirtied per 1 s interval.
    pub truth_pages: f64,
    pub summary: &'a Summary,
}

/// The line announcing the built-in writer.
pub fn writer_started(o: &mut impl Write, pattern: &str, rate_mib: f64, wss_mib: u64) {
    let _ = writeln!(
        o,
        "demo: starting the built-in writer: {pattern} writes at {rate_mib:.0} MiB/s over a {wss_mib} MiB working set"
    );
}

/// Measured against the truth, with the error and whether the interval holds the truth.
pub fn comparison(o: &mut impl Write, c: &Comparison<'_>) {
    let s = c.summary;
    let truth = c.truth_pages * c.page_bytes;
    let measured = s.dirty_bytes_per_sec;
    let _ = writeln!(
        o,
        "\ndemo: measured against the truth (unique pages dirtied per 1 s interval)"
    );
    let _ = writeln!(
        o,
        "  writer did      {} page writes/s ({}/s of writes)",
        c.writes_per_s.round(),
        bytes(c.writes_per_s * c.page_bytes)
    );
    let _ = writeln!(
        o,
        "  true dirty rate {}/s  ({:.0} unique pages per second)",
        bytes(truth),
        c.truth_pages
    );
    let ci = s
        .ci95_bytes_per_sec
        .map(|[lo, hi]| {
            let verdict = if truth >= lo && truth <= hi {
                "contains the truth"
            } else {
                "misses the truth"
            };
            format!(", 95% CI {}/s .. {}/s {verdict}", bytes(lo), bytes(hi))
        })
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "  measured        {}/s by {}{}",
        bytes(measured),
        clean(&s.backend),
        ci
    );
    if truth > 0.0 {
        let _ = writeln!(
            o,
            "  error           {:+.1}%",
            (measured - truth) / truth * 100.0
        );
    }
    if let (Some(f), "sample+fault") = (s.faults, s.backend.as_str()) {
        let _ = writeln!(
            o,
            "  write faults    {} in all: the writer rewrites resident pages, which take no fault; this is why the rate comes from sampling",
            f.writes()
        );
    }
}

/// One line per link: would the writer migrate, in how many passes, how long.
pub fn predictions(o: &mut impl Write, cells: &[Prediction]) {
    let _ = writeln!(o, "\ndemo: predicted QEMU pre-copy migration of the writer, from the measured profile (migtrace predict --profile)");
    let _ = writeln!(
        o,
        "  {:>12} {:>10} {:>7} {:>11} {:>10}  recommendation",
        "link", "converges", "passes", "total time", "downtime"
    );
    for c in cells {
        let _ = writeln!(o, "{}", prediction_line(c));
    }
}

/// For a migration that never converges, the time is how long the simulation ran before
/// giving up, and there is no downtime to speak of: neither is shown.
fn prediction_line(c: &Prediction) -> String {
    let o = &c.outcome;
    let r = &c.recommendation;
    let rec = match (r.kind, r.level) {
        (RecommendationKind::None, _) => "none needed".to_string(),
        (k, Some(l)) => format!(
            "{} {l:.0}{}",
            k.as_str(),
            r.level_unit.as_deref().unwrap_or("")
        ),
        (k, None) => k.as_str().to_string(),
    };
    let (passes, time, down) = if o.converges {
        (
            o.passes.len().to_string(),
            format!("{:.2}s", o.total_time_s),
            format!("{:.0}ms", o.downtime_s * 1000.0),
        )
    } else {
        ("-".into(), "never".to_string(), "-".to_string())
    };
    format!(
        "  {:>12} {:>10} {:>7} {:>11} {:>10}  {}",
        fmt_link(c.link_bits_per_sec),
        if o.converges { "yes" } else { "NO" },
        passes,
        time,
        down,
        rec
    )
}

/// Where the profile is, and the command to see everything.
pub fn next_step(o: &mut impl Write, profile: &std::path::Path) {
    let _ = writeln!(
        o,
        "\nnext: migtrace predict --profile {} --link 1g,10g,40g --explain    (full pass tables and settings)",
        clean(&profile.display().to_string())
    );
}
