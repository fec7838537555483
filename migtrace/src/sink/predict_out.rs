//! Output of `migtrace predict`: the human tables (one per link and downtime, then a grid
//! with the speedup against the slowest link) and the JSON document. Formatting only: every
//! number comes from [`crate::model`].
use serde_json::{json, Value};

use crate::model::recommend::ThrottleKind;
use crate::model::sim::{Ending, Policy, Throttle};
use crate::model::workload::{Curve, Workload};
use crate::model::{explain, GridInput, Prediction};
use crate::units::{fmt_bytes, fmt_link, fmt_secs};

/// What the command knows about its inputs, for the report.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where the workload came from, in words.
    pub source: String,
    pub policy: Policy,
    pub throttle_kind: ThrottleKind,
    pub caveats: Vec<String>,
    pub explain: bool,
}

/// What the model leaves out, said in every report.
pub const NOT_MODELLED: &[&str] = &[
    "device state and disk are not in the downtime (RAM only)",
    "multifd, compression and XBZRLE are not modelled; a single migration stream may not fill a 40-100 Gbit/s link (lower --efficiency if so)",
    "post-copy is not simulated",
];

fn throttle_words(t: &Throttle) -> String {
    match t {
        Throttle::None => "none".into(),
        Throttle::AutoConverge(a) => format!(
            "auto-converge ({:.0} % +{:.0} % up to {:.0} %{})",
            a.initial_pct,
            a.increment_pct,
            a.max_pct,
            if a.tailslow { ", tailslow" } else { "" }
        ),
        Throttle::Cpu { pct } => format!("sdps / CPU throttle {pct:.0} % from pass 2"),
        Throttle::DirtyLimit {
            bytes_per_sec_per_vcpu,
        } => format!(
            "dirty-limit {}/s per vCPU",
            fmt_bytes(*bytes_per_sec_per_vcpu)
        ),
    }
}

fn curve_words(w: &Workload) -> String {
    match &w.curve {
        Curve::Saturating { rate, wws } => format!(
            "dirtying {}/s of new pages, saturating at a {} working set",
            fmt_bytes(*rate),
            fmt_bytes(*wws)
        ),
        Curve::Sweep { rate, wws } => format!(
            "sweeping a {} working set at {}/s",
            fmt_bytes(*wws),
            fmt_bytes(*rate)
        ),
        Curve::Measured { profile, .. } => format!(
            "measured growth curve ({} points up to {} windows), mean {}/s",
            profile.growth.len(),
            profile
                .growth
                .last()
                .map(|p| fmt_secs(p.window_s))
                .unwrap_or_else(|| "no".into()),
            fmt_bytes(profile.dirty.bytes_per_sec)
        ),
    }
}

fn verdict(c: &Prediction) -> String {
    let o = &c.outcome;
    let word = match (o.converges, o.ending) {
        (true, _) => "CONVERGES",
        (false, Ending::ForcedStop) | (false, Ending::Converged) => {
            "COMPLETES OVER THE DOWNTIME LIMIT"
        }
        (false, Ending::SwitchoverTooLong) => "FAILS",
        (false, Ending::NeverConverges) | (false, Ending::Horizon) => "DOES NOT CONVERGE",
        (false, Ending::Aborted) => "ABORTED",
    };
    format!("{word}: {}", o.reason)
}

/// Extra caveats that depend on the results.
fn result_caveats(w: &Workload, cells: &[Prediction]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(maxw) = w.curve.measured_up_to() {
        let longest = cells
            .iter()
            .flat_map(|c| c.outcome.passes.iter().map(|p| p.duration_s))
            .fold(0.0, f64::max);
        if longest > maxw * 1.01 {
            v.push(format!(
                "a pass lasts up to {}, longer than the longest measured window ({}): the growth curve is extrapolated flat there, which understates dirtying if the working set keeps growing",
                fmt_secs(longest),
                fmt_secs(maxw)
            ));
        }
    }
    v
}

/// The human report.
pub fn text(w: &Workload, input: &GridInput, r: &Report, cells: &[Prediction]) -> String {
    let mut s = String::new();
    let busy: Vec<String> = w
        .writers
        .iter()
        .map(|x| format!("{:.0}%", x.busy * 100.0))
        .collect();
    s.push_str(&format!(
        "migtrace predict: {} guest, {}\n  source: {}\n  policy {}, throttle {}, efficiency {:.2}, {} writer(s) busy {}, zero pages {:.0} %\n",
        fmt_bytes(w.mem),
        curve_words(w),
        r.source,
        r.policy.name(),
        throttle_words(&input.throttle),
        input.efficiency,
        w.writers.len(),
        compress_list(&busy),
        w.zero_share * 100.0
    ));
    if let Some(d) = input.limits.deadline_s {
        s.push_str(&format!("  deadline {}", fmt_secs(d)));
        if let Some(p) = input.limits.progress_timeout_s {
            s.push_str(&format!(", progress timeout {}", fmt_secs(p)));
        }
        s.push('\n');
    }
    for c in r.caveats.iter().chain(result_caveats(w, cells).iter()) {
        s.push_str(&format!("  note: {c}\n"));
    }

    for c in cells {
        let o = &c.outcome;
        s.push_str(&format!(
            "\nLink {} (goodput {}/s), downtime limit {}\n",
            fmt_link(c.link_bits_per_sec),
            fmt_bytes(c.goodput_bytes_per_sec),
            fmt_secs(c.downtime_limit_s)
        ));
        s.push_str(&format!(
            "  {:>5}  {:>10}  {:>11}  {:>14}  {:>8}\n",
            "pass", "duration", "bytes", "pages dirtied", "throttle"
        ));
        let n = o.passes.len();
        for (i, p) in o.passes.iter().enumerate() {
            if n > 12 && i == 5 {
                s.push_str(&format!("  {:>5}  ({} more passes)\n", "...", n - 10));
            }
            if n > 12 && (5..n - 5).contains(&i) {
                continue;
            }
            s.push_str(&format!(
                "  {:>5}  {:>10}  {:>11}  {:>14.0}  {:>7.0}%\n",
                p.index,
                fmt_secs(p.duration_s),
                fmt_bytes(p.bytes),
                p.dirtied_pages,
                p.throttle_pct
            ));
        }
        if o.stop_copy_bytes > 0.0 || o.converges {
            s.push_str(&format!(
                "  {:>5}  {:>10}  {:>11}  (guest paused)\n",
                "stop",
                fmt_secs(o.downtime_s),
                fmt_bytes(o.stop_copy_bytes)
            ));
        }
        s.push_str(&format!(
            "  total time {}, {} sent, downtime {}\n",
            fmt_secs(o.total_time_s),
            fmt_bytes(o.total_bytes),
            if matches!(o.ending, Ending::Converged | Ending::ForcedStop) {
                fmt_secs(o.downtime_s)
            } else {
                "- (no switchover)".into()
            }
        ));
        s.push_str(&format!("  verdict: {}\n", verdict(c)));
        s.push_str(&recommendation_text(&c.recommendation));
    }

    if cells.len() > 1 {
        s.push_str(&format!(
            "\n{:>12}  {:>8}  {:>9}  {:>6}  {:>10}  {:>9}  {:>8}  recommendation\n",
            "link", "downtime", "converges", "passes", "total time", "downtime", "speedup"
        ));
        for c in cells {
            let o = &c.outcome;
            let done = matches!(o.ending, Ending::Converged | Ending::ForcedStop);
            let speed = match (c.speedup_vs_slowest, c.speedup_unbounded) {
                (Some(x), _) => format!("{x:.1}x"),
                (None, true) => "∞".into(),
                _ => "-".into(),
            };
            let rec = &c.recommendation;
            let rec = match (rec.kind.as_str(), rec.level) {
                (k, Some(l)) => format!(
                    "{k} {l:.0}{}",
                    if k == "dirty-limit" {
                        " MB/s/vCPU"
                    } else {
                        " %"
                    }
                ),
                (k, None) => k.to_string(),
            };
            s.push_str(&format!(
                "{:>12}  {:>8}  {:>9}  {:>6}  {:>10}  {:>9}  {:>8}  {}\n",
                fmt_link(c.link_bits_per_sec),
                fmt_secs(c.downtime_limit_s),
                if o.converges { "yes" } else { "no" },
                o.passes.len(),
                if done {
                    fmt_secs(o.total_time_s)
                } else {
                    "-".into()
                },
                if done {
                    fmt_secs(o.downtime_s)
                } else {
                    "-".into()
                },
                speed,
                rec
            ));
        }
        s.push_str("  speedup: total time on the slowest link / total time on this link, same downtime limit\n");
    }
    if r.explain {
        s.push('\n');
        s.push_str(&explain(w, cells));
    }
    s.push_str(&format!("\nnot modelled: {}.\n", NOT_MODELLED.join("; ")));
    s
}

fn compress_list(v: &[String]) -> String {
    if !v.is_empty() && v.iter().all(|x| *x == v[0]) {
        v[0].clone()
    } else {
        v.join(",")
    }
}

fn recommendation_text(r: &crate::model::recommend::Recommendation) -> String {
    let mut s = String::new();
    let level = match (&r.level, &r.level_unit) {
        (Some(l), Some(u)) => format!(" {l:.0} {u}"),
        _ => String::new(),
    };
    s.push_str(&format!(
        "  recommendation: {}{} -- {}\n",
        r.kind, level, r.note
    ));
    if r.kind != "none" && r.kind != "unreachable" {
        s.push_str(&format!(
            "    with it: {}, {} passes, total {}, downtime {}, peak throttle {:.0} %\n",
            if r.converges {
                "converges"
            } else {
                "does not converge"
            },
            r.passes,
            fmt_secs(r.total_time_s),
            fmt_secs(r.downtime_s),
            r.peak_throttle_pct
        ));
    }
    let st = &r.settings;
    if let Some(q) = st.get("qemu") {
        let caps = &q["migrate-set-capabilities"];
        if caps.as_array().is_some_and(|a| !a.is_empty()) {
            s.push_str(&format!(
                "    QMP: {{\"execute\":\"migrate-set-capabilities\",\"arguments\":{{\"capabilities\":{caps}}}}}\n"
            ));
        }
        s.push_str(&format!(
            "    QMP: {{\"execute\":\"migrate-set-parameters\",\"arguments\":{}}}\n",
            q["migrate-set-parameters"]
        ));
    }
    for key in ["virsh", "xl", "powershell"] {
        if let Some(a) = st.get(key).and_then(Value::as_array) {
            for cmd in a {
                if let Some(c) = cmd.as_str() {
                    s.push_str(&format!("    {c}\n"));
                }
            }
        }
    }
    if let Some(k) = st.get("kubevirt_migration_policy") {
        s.push_str(&format!(
            "    KubeVirt MigrationPolicy spec: {}\n",
            k["spec"]
        ));
    }
    if let Some(n) = st.get("nova") {
        s.push_str(&format!("    nova.conf: {n}\n"));
    }
    if let Some(v) = st.get("vsphere").and_then(Value::as_str) {
        s.push_str(&format!("    vSphere: {v}\n"));
    }
    if let Some(a) = st.get("notes").and_then(Value::as_array) {
        for n in a.iter().filter_map(Value::as_str) {
            s.push_str(&format!("    note: {n}\n"));
        }
    }
    s
}

/// The JSON document: `format`, `version`, the inputs, the caveats, one result per link and
/// downtime.
pub fn json(w: &Workload, input: &GridInput, r: &Report, cells: &[Prediction]) -> Value {
    let mut caveats = r.caveats.clone();
    caveats.extend(result_caveats(w, cells));
    let (rate, wws) = match &w.curve {
        Curve::Saturating { rate, wws } | Curve::Sweep { rate, wws } => (*rate, Some(*wws)),
        Curve::Measured { profile, .. } => (profile.dirty.bytes_per_sec, None),
    };
    json!({
        "format": "migtrace-predict",
        "version": 1,
        "input": {
            "source": r.source,
            "mem_bytes": w.mem,
            "page_size": w.page,
            "dirty_rate_bytes_per_sec": rate,
            "wws_bytes": wws,
            "zero_page_share": w.zero_share,
            "writers": w.writers.iter().map(|x| json!({"share": x.share, "busy_share": x.busy})).collect::<Vec<_>>(),
            "policy": r.policy.name(),
            "throttle": input.throttle,
            "efficiency": input.efficiency,
            "limits": input.limits,
        },
        "caveats": caveats,
        "not_modelled": NOT_MODELLED,
        "results": cells,
    })
}
