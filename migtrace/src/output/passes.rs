//! The report of `migtrace passes`: a table per pass and a summary for people, or one
//! JSON document (`migtrace-passes`, version 1). With `--profile`, the back-test beside it.
//! Formats only; the numbers come from [`crate::passes`] and [`crate::model::backtest`].
use std::fmt::Write;

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::backtest::{Comparison, SyncEstimate};
use crate::model::Prediction;
use crate::passes::{EndedBy, PassRecord, PassSummary};
use crate::units::fmt_bytes;

/// The migration's settings, from `query-migrate-parameters` and `-capabilities`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    /// Bytes per second (0: unlimited).
    pub max_bandwidth: u64,
    pub downtime_limit_s: f64,
    pub auto_converge: bool,
    pub max_cpu_throttle: Option<u64>,
    pub events: bool,
}

/// The prediction made when the migration started.
#[derive(Clone, Debug)]
pub struct Predicted {
    pub cell: Prediction,
    pub syncs: SyncEstimate,
}

/// Everything `passes` prints.
#[derive(Clone, Debug)]
pub struct Report {
    pub qemu_version: String,
    pub params: Params,
    pub passes: Vec<PassRecord>,
    pub summary: PassSummary,
    pub predicted: Option<Predicted>,
    pub comparison: Option<Comparison>,
    /// Wall-clock seconds since the epoch when the migration started (QEMU's time zero),
    /// when replies were seen: the start of `--hdr-log`.
    pub started_wall_s: Option<f64>,
}

/// The JSON document.
pub fn json(r: &Report) -> Value {
    let mut summary = serde_json::to_value(&r.summary).unwrap_or(Value::Null);
    if let Some(p) = &r.predicted {
        summary["predicted_total_time_s"] = json!(p.cell.outcome.total_time_s);
        summary["predicted_passes"] = json!(p.syncs.syncs);
    }
    json!({
        "format": "migtrace-passes",
        "version": 1,
        "qemu_version": r.qemu_version,
        "parameters": r.params,
        "passes": r.passes,
        "summary": summary,
        "prediction": r.predicted.as_ref().map(|p| json!({
            "outcome": p.cell.outcome,
            "goodput_bytes_per_sec": p.cell.goodput_bytes_per_sec,
            "qemu_syncs": p.syncs,
        })),
        "backtest": r.comparison,
    })
}

fn ended(e: &EndedBy) -> String {
    match e {
        EndedBy::Migration => "the migration ended".into(),
        EndedBy::Signal(s) => format!("{s} (the migration goes on)"),
        EndedBy::Timeout => "--timeout (the migration goes on)".into(),
        EndedBy::QemuGone(why) => format!("QEMU went away: {}", crate::units::clean(why)),
        EndedBy::Implausible(why) => format!(
            "a reply no QEMU sends ({}): the report ends at the last plausible one",
            crate::units::clean(why)
        ),
    }
}

/// The text report: the pass table, the summary, then the back-test.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let p = &r.params;
    let bw = if p.max_bandwidth == 0 {
        "unlimited".to_string()
    } else {
        format!("{}/s", fmt_bytes(p.max_bandwidth as f64))
    };
    let _ = writeln!(
        o,
        "QEMU {}: max-bandwidth {bw}, downtime-limit {:.0} ms, auto-converge {}",
        r.qemu_version,
        p.downtime_limit_s * 1000.0,
        if p.auto_converge { "on" } else { "off" }
    );
    let _ = writeln!(
        o,
        "{:>4} {:>9} {:>9} {:>9} {:>11} {:>12} {:>9} {:>5}  {:<14} timed by",
        "pass", "start s", "end s", "dur s", "bytes", "remaining", "dirty pg", "thr%", "eBPF wire"
    );
    for x in &r.passes {
        let _ = writeln!(
            o,
            "{:>4} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>12} {:>9} {:>5}  {:<14} {}{}",
            x.index,
            x.start_s,
            x.end_s,
            x.duration_s,
            fmt_bytes(x.bytes as f64),
            x.remaining_bytes_at_start
                .map_or("-".into(), |b| fmt_bytes(b as f64)),
            x.dirty_pages.map_or("-".into(), |d| format!("{d:.0}")),
            x.throttle_pct,
            x.wire_bytes_ebpf
                .map_or("not measured".into(), |b| fmt_bytes(b as f64)),
            x.timed_by,
            if x.stop_copy { " (stop-and-copy)" } else { "" }
        );
    }
    summary_text(&mut o, &r.summary);
    if let Some(c) = &r.comparison {
        backtest_text(&mut o, r, c);
    }
    o
}

fn summary_text(o: &mut String, s: &PassSummary) {
    let _ = writeln!(
        o,
        "status {}{}: {} passes (= dirty-sync-count), total {:.3} s, setup {}, downtime {}, {} sent, peak throttle {} %",
        s.status,
        if s.partial { " (PARTIAL: the migration had not ended)" } else { "" },
        s.passes,
        s.total_time_s,
        s.setup_time_s.map_or("-".into(), |t| format!("{:.3} s", t)),
        s.downtime_s.map_or("-".into(), |t| format!("{:.3} s", t)),
        fmt_bytes(s.bytes as f64),
        s.peak_throttle_pct
    );
    let _ = writeln!(o, "ended by: {}", ended(&s.ended_by));
    if let Some(e) = &s.error_desc {
        let _ = writeln!(o, "QEMU error: {}", crate::units::clean(e));
    }
    if s.events_dropped > 0 {
        let _ = writeln!(
            o,
            "QMP events dropped: {} (too long or too many waiting: not what QEMU sends)",
            s.events_dropped
        );
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("-".into(), f)
}

fn backtest_text(o: &mut String, r: &Report, c: &Comparison) {
    let link = r
        .predicted
        .as_ref()
        .map_or(0.0, |p| p.cell.link_bits_per_sec);
    let _ = writeln!(
        o,
        "\nback-test (model at {}/s, efficiency 1; passes predicted by replaying QEMU's sync rule on it):",
        fmt_bytes(link / 8.0)
    );
    let _ = writeln!(
        o,
        "{:>4} {:>10} {:>10} {:>11} {:>11}",
        "pass", "pred s", "real s", "pred bytes", "real bytes"
    );
    for p in &c.pairs {
        let _ = writeln!(
            o,
            "{:>4} {:>10} {:>10} {:>11} {:>11}",
            p.index,
            opt(p.predicted_duration_s, |v| format!("{v:.3}")),
            opt(p.actual_duration_s, |v| format!("{v:.3}")),
            opt(p.predicted_bytes, fmt_bytes),
            opt(p.actual_bytes.map(|b| b as f64), fmt_bytes),
        );
    }
    let pct = |e: Option<f64>| opt(e, |v| format!("{:+.1} %", v * 100.0));
    let _ = writeln!(
        o,
        "verdict: predicted {}, actual {}{}",
        c.predicted_verdict,
        c.actual_verdict,
        if c.verdict_agrees { "" } else { "  << DIFFERS" }
    );
    let _ = writeln!(
        o,
        "dirty syncs: predicted {} (model: {} passes + setup, tail and completion syncs), actual {} ({:+})",
        c.predicted_syncs, c.model_passes, c.actual_syncs, c.syncs_diff
    );
    let _ = writeln!(
        o,
        "total time: predicted {:.3} s, actual {:.3} s, error {}; bytes: predicted {}, actual {}, error {}",
        c.predicted_total_time_s,
        c.actual_total_time_s,
        pct(c.total_time_error),
        fmt_bytes(c.predicted_bytes),
        fmt_bytes(c.actual_bytes as f64),
        pct(c.bytes_error)
    );
    let stop = r
        .predicted
        .as_ref()
        .and_then(|p| p.cell.stop_copy_goodput_bytes_per_sec)
        .map_or(
            "at max-bandwidth (an upper bound: QEMU lifts the limit for the stop-and-copy)".into(),
            |g| format!("at {}/s (--stop-copy-rate)", fmt_bytes(g)),
        );
    let _ = writeln!(
        o,
        "live phase (total - downtime): predicted {:.3} s, actual {}, error {}; downtime: predicted {:.3} s {stop}, actual {}",
        c.predicted_live_s,
        opt(c.actual_live_s, |v| format!("{v:.3} s")),
        pct(c.live_time_error),
        c.predicted_downtime_s,
        opt(c.actual_downtime_s, |v| format!("{v:.3} s")),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::backtest::{compare, qemu_syncs, ActualRun};
    use crate::model::config::{plan, PredictConfig};
    use crate::model::grid;
    use crate::passes::{EndedBy, PassRecord, PassSummary};

    /// A one-pass report with a real prediction and back-test (also drawn by the plot tests).
    pub(crate) fn report() -> Report {
        const MIB: f64 = 1048576.0;
        let link = vec![128.0 * MIB * 8.0];
        let mut cfg = PredictConfig::for_rate(512.0 * MIB, 40.0 * MIB, Some(128.0 * MIB), link);
        cfg.efficiency = 1.0;
        let p = plan(&cfg).unwrap();
        let cell = grid(&p.workload, &p.input).remove(0);
        let est = qemu_syncs(
            &p.workload,
            &cell.outcome,
            cell.goodput_bytes_per_sec,
            cell.goodput_bytes_per_sec,
            0.3,
            60.0,
        );
        let pass = PassRecord {
            index: 1,
            start_s: 0.0,
            end_s: 2.0,
            duration_s: 2.0,
            bytes: 300 << 20,
            remaining_bytes_at_start: Some(512 << 20),
            dirty_pages: Some(1000.0),
            dirty_pages_rate: Some(500),
            throttle_pct: 0,
            stop_copy: true,
            timed_by: "setup",
            wire_bytes_ebpf: None,
        };
        let summary = PassSummary {
            status: "completed".into(),
            partial: false,
            ended_by: EndedBy::Migration,
            passes: 1,
            total_time_s: 2.0,
            setup_time_s: Some(0.001),
            downtime_s: Some(0.02),
            bytes: 300 << 20,
            peak_throttle_pct: 0,
            error_desc: None,
            pass_events: 1,
            events_dropped: 0,
        };
        let actual = ActualRun {
            status: "completed".into(),
            syncs: 1,
            total_time_s: 2.0,
            bytes: 300 << 20,
            downtime_s: Some(0.02),
            passes: vec![(2.0, 300 << 20)],
        };
        let comparison = Some(compare(&cell.outcome, &est, &actual));
        Report {
            qemu_version: "7.2.22".into(),
            params: Params {
                max_bandwidth: 128 << 20,
                downtime_limit_s: 0.3,
                auto_converge: false,
                max_cpu_throttle: Some(99),
                events: true,
            },
            passes: vec![pass],
            summary,
            predicted: Some(Predicted { cell, syncs: est }),
            comparison,
            started_wall_s: None,
        }
    }

    #[test]
    fn text_and_json_carry_the_passes_the_summary_and_the_backtest() {
        let r = report();
        let t = text(&r);
        for needle in [
            "not measured",
            "stop-and-copy",
            "back-test",
            "dirty syncs: predicted",
            "live phase",
        ] {
            assert!(t.contains(needle), "{needle} missing from\n{t}");
        }
        let j = json(&r);
        assert_eq!(j["summary"]["passes"], 1);
        assert!(j["summary"]["predicted_total_time_s"].as_f64().unwrap() > 0.0);
        assert!(j["passes"][0]["wire_bytes_ebpf"].is_null());
        assert_eq!(j["backtest"]["verdict_agrees"], true);
    }
}
