//! Output of `migtrace predict`: the human tables (one per link and downtime, then a grid
//! with the speedup against the slowest link) and the JSON document. Formatting only: every
//! number comes from [`crate::model`], and the throttle settings arrive as data
//! ([`Settings`]) that this module writes out as JSON and as shell commands.
use serde_json::{json, Value};

use crate::model::config::PlanNote;
use crate::model::recommend::{
    KubevirtSpec, Note, NovaConf, QemuSettings, QmpParameters, Recommendation, RecommendationKind,
    Settings, ThrottleKind, Virsh,
};
use crate::model::sim::{
    Ending, Policy, Reason, Throttle, XenStop, KUBEVIRT_COMPLETION_PER_GIB,
    KUBEVIRT_PROGRESS_TIMEOUT_S, NOVA_COMPLETION_PER_GIB,
};
use crate::model::workload::{Curve, Workload};
use crate::model::{completes, explain, Explanation, GridInput, Prediction};
use crate::units::{fmt_bytes, fmt_link, fmt_secs};

/// A string a profile controls (its path, `comm`, backend, caveats), as the text report
/// shows it: control characters escaped ([`crate::units::clean`]), and so are the Unicode
/// controls that reorder or hide text on a terminal (bidirectional overrides and isolates,
/// zero-width marks), so a profile cannot draw lines, move the cursor or disguise itself.
pub fn escaped(s: &str) -> String {
    let s = crate::units::clean(s);
    let hidden = |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{061c}' | '\u{feff}');
    if !s.chars().any(hidden) {
        return s.into_owned();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A note of the plan ([`crate::model::config::plan`]) as a caveat of the report.
pub fn plan_note(n: &PlanNote) -> String {
    match n {
        PlanNote::HeadroomLink {
            iface,
            headroom_bytes_per_sec: h,
            link_bits,
            link_efficiency,
            other_tx_bytes_per_sec,
            as_link_bits,
            efficiency: eff,
        } => format!(
            "no --link: the link is the profile's measured headroom on {}, {}/s ({} x {:.2} - {}/s of other traffic), taken as a {} link at efficiency {eff:.2}",
            iface.as_deref().unwrap_or("?"),
            fmt_bytes(*h),
            link_bits.map_or("?".into(), fmt_link),
            link_efficiency,
            fmt_bytes(*other_tx_bytes_per_sec),
            fmt_link(*as_link_bits),
        ),
        PlanNote::NoGrowthCurve => "the profile has no growth curve: dirtying is taken as its mean rate x time, which overstates what a long pass resends".into(),
        PlanNote::Profile(c) => format!("profile: {c}"),
        PlanNote::WriteFaultShares => "the profile's per-thread shares are write-fault counts (sample+fault), taken as each writer's share of the dirtying".into(),
        PlanNote::NoWws => "no --wws: the dirtying is assumed to saturate only at the whole memory".into(),
        PlanNote::NoBusy => "no --busy: vCPUs are assumed fully busy, the case where a CPU throttle helps most".into(),
        PlanNote::Kubevirt { gib } => format!(
            "--kubevirt: completion timeout {} s/GiB x {:.1} GiB of memory (local disks would add to it), progress timeout {} s",
            KUBEVIRT_COMPLETION_PER_GIB, gib, KUBEVIRT_PROGRESS_TIMEOUT_S
        ),
        PlanNote::Nova { gib } => format!(
            "--nova: completion timeout {} s/GiB x {:.1} GiB of RAM (disk would add to it); Nova's stepwise downtime increase (live_migration_downtime_steps) is not modelled",
            NOVA_COMPLETION_PER_GIB, gib
        ),
    }
}

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
    format!("{word}: {}", reason_text(&o.reason))
}

const MIB: f64 = 1024.0 * 1024.0;

/// Why a simulation ended, in one sentence.
pub fn reason_text(r: &Reason) -> String {
    match r {
        Reason::NoLink => "the link carries nothing".into(),
        Reason::Fits { pass, pending, downtime_s } => format!(
            "after pass {pass}, {:.1} MiB pending fits in {:.0} ms at the link's goodput",
            pending / MIB,
            downtime_s * 1000.0
        ),
        Reason::SwitchoverFits { pass, pending, downtime_s } => format!(
            "after pass {pass}, the switchover of {:.1} MiB takes under the {:.0} ms target",
            pending / MIB,
            downtime_s * 1000.0
        ),
        Reason::Xen { pass, why, pending } => format!(
            "Xen suspends the guest after pass {pass}: {}; {:.1} MiB left for stop-and-copy",
            xen_words(*why),
            pending / MIB
        ),
        Reason::HyperVPassLimit { passes, pending } => format!(
            "Hyper-V suspends the guest after {passes} passes with {:.1} MiB still dirty",
            pending / MIB
        ),
        Reason::MaxPasses { pass, pending } => format!(
            "stop-and-copy forced after {pass} passes (--max-passes) with {:.1} MiB still dirty",
            pending / MIB
        ),
        Reason::SwitchoverTooLong { pending, switchover_s } => format!(
            "pre-copy stopped shrinking at {:.1} MiB; the switchover would take {:.0} s, past vMotion's 100 s maximum",
            pending / MIB,
            switchover_s
        ),
        Reason::SwitchoverAnyway { pending, switchover_s } => format!(
            "pre-copy stopped shrinking at {:.1} MiB; vMotion switches over anyway ({:.2} s)",
            pending / MIB,
            switchover_s
        ),
        Reason::IteratesForever { pending, threshold, downtime_s } => format!(
            "each pass dirties as much as it sends: {:.1} MiB stays pending, above the {:.1} MiB that fit in {:.0} ms; QEMU would iterate forever",
            pending / MIB,
            threshold / MIB,
            downtime_s * 1000.0
        ),
        Reason::NoProgress { timeout_s } => {
            format!("no progress for {timeout_s:.0} s (progress timeout)")
        }
        Reason::Deadline { deadline_s } => {
            format!("the deadline of {deadline_s:.0} s passes before it can complete")
        }
        Reason::SimulatedDay => "not complete after a simulated day".into(),
        Reason::PassHorizon { passes } => format!("not complete after {passes} passes"),
        Reason::PastDeadline { total_s, deadline_s } => format!(
            "would complete at {total_s:.1} s, past the deadline of {deadline_s:.1} s"
        ),
    }
}

fn xen_words(why: XenStop) -> String {
    match why {
        XenStop::FewPages => "fewer than 50 pages were dirtied in the last pass".into(),
        XenStop::Volume => "more than 3x the memory has been sent (DEF_MAX_FACTOR)".into(),
        XenStop::IterationLimit(n) => format!("the iteration limit ({n}) was reached"),
    }
}

/// Why a recommendation is what it is, in plain words.
pub fn note_text(n: &Note) -> String {
    match n {
        Note::NoThrottleNeeded => "converges without a throttle".into(),
        Note::SmallestCpuThrottle { pct } => {
            format!("{pct:.0} % is the smallest CPU throttle that converges")
        }
        Note::LoosestDirtyLimit { mb_per_sec } => {
            format!("a dirty limit of {mb_per_sec:.0} MB/s per vCPU is the loosest that converges")
        }
        Note::Unreachable { tried, cpu_busy } => {
            let tried: Vec<&str> = tried.iter().map(|k| k.name()).collect();
            let mut s = format!(
                "no {} level makes it converge within the targets",
                tried.join(" or ")
            );
            if let Some(busy) = cpu_busy {
                s.push_str(&format!(
                    "; the writers are on CPU only {:.1} % of the time, so a CPU throttle barely slows them",
                    busy * 100.0
                ));
            }
            s.push_str("; use a faster link, post-copy, or a longer downtime");
            s
        }
    }
}

/// Extra caveats that depend on the results.
fn result_caveats(w: &Workload, cells: &[Prediction]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(first) = w.curve.flat_from_first_window() {
        // Passes shorter than the first window, or writers slowed by a throttle, read the
        // curve below it, where only a straight line from zero is known.
        let passes = || cells.iter().flat_map(|c| c.outcome.passes.iter());
        let shorter = passes().any(|p| p.duration_s < first);
        let throttled = passes().any(|p| p.throttle_pct > 0.0);
        if shorter || throttled {
            v.push(format!(
                "the growth curve is already flat at its shortest window ({}): the working set fills faster than that, so how fast it is dirtied below it is not known; {} read the curve there as a straight line from zero, which understates what they dirty (a shorter watch --interval measures it)",
                fmt_secs(first),
                if throttled { "passes shorter than that and throttled writers" } else { "passes shorter than that" }
            ));
        }
    }
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
    let mut s = header(w, input, r, cells);
    for c in cells {
        s.push_str(&cell_text(c));
    }
    if cells.len() > 1 {
        s.push_str(&summary_grid(cells));
    }
    if r.explain {
        s.push('\n');
        s.push_str(&explain_text(&explain(w, cells)));
    }
    s.push_str(&format!("\nnot modelled: {}.\n", NOT_MODELLED.join("; ")));
    s
}

/// The inputs in words, the deadline and the caveats.
fn header(w: &Workload, input: &GridInput, r: &Report, cells: &[Prediction]) -> String {
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
        escaped(&r.source),
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
        s.push_str(&format!("  note: {}\n", escaped(c)));
    }
    s
}

/// One link at one downtime: the pass table, the totals, the verdict, the recommendation.
fn cell_text(c: &Prediction) -> String {
    let o = &c.outcome;
    let stop = c
        .stop_copy_goodput_bytes_per_sec
        .map(|g| format!(", stop-and-copy at goodput {}/s", fmt_bytes(g)))
        .unwrap_or_default();
    let mut s = format!(
        "\nLink {} (goodput {}/s){stop}, downtime limit {}\n",
        fmt_link(c.link_bits_per_sec),
        fmt_bytes(c.goodput_bytes_per_sec),
        fmt_secs(c.downtime_limit_s)
    );
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
        if completes(o) {
            fmt_secs(o.downtime_s)
        } else {
            "- (no switchover)".into()
        }
    ));
    s.push_str(&format!("  verdict: {}\n", verdict(c)));
    s.push_str(&recommendation_text(&c.recommendation));
    s
}

/// The grid: one line per link and downtime, with the speedup against the slowest link.
fn summary_grid(cells: &[Prediction]) -> String {
    let mut s = format!(
        "\n{:>12}  {:>8}  {:>9}  {:>6}  {:>10}  {:>9}  {:>8}  recommendation\n",
        "link", "downtime", "converges", "passes", "total time", "downtime", "speedup"
    );
    for c in cells {
        let o = &c.outcome;
        let done = completes(o);
        let speed = match (c.speedup_vs_slowest, c.speedup_unbounded) {
            (Some(x), _) => format!("{x:.1}x"),
            (None, true) => "∞".into(),
            _ => "-".into(),
        };
        let rec = &c.recommendation;
        let rec = match (rec.kind, rec.level) {
            (k, Some(l)) => format!(
                "{} {l:.0}{}",
                k.as_str(),
                if k == RecommendationKind::DirtyLimit {
                    " MB/s/vCPU"
                } else {
                    " %"
                }
            ),
            (k, None) => k.as_str().to_string(),
        };
        let if_done = |v: f64| if done { fmt_secs(v) } else { "-".into() };
        s.push_str(&format!(
            "{:>12}  {:>8}  {:>9}  {:>6}  {:>10}  {:>9}  {:>8}  {}\n",
            fmt_link(c.link_bits_per_sec),
            fmt_secs(c.downtime_limit_s),
            if o.converges { "yes" } else { "no" },
            o.passes.len(),
            if_done(o.total_time_s),
            if_done(o.downtime_s),
            speed,
            rec
        ));
    }
    s.push_str("  speedup: total time on the slowest link / total time on this link, same downtime limit\n");
    s
}

/// `--explain` in plain words, with the workload's own numbers.
fn explain_text(e: &Explanation) -> String {
    let mut s = String::from(
        "Why a faster link helps more than in proportion:\n\
         Each pass sends what the guest dirtied during the previous pass. A pass that lasts t \
         seconds lets the guest dirty U(t) bytes, so the next pass lasts U(t)/bandwidth. The \
         ratio of one pass to the next is about dirty rate / bandwidth. On a link k times \
         faster every pass is k times shorter AND the guest dirties about k times less during \
         it, so the remainder shrinks k times faster per pass: fewer passes, each shorter. \
         When the dirty rate comes close to the link rate, the slow link barely shrinks the \
         remainder at all and may never converge, while the fast link finishes in a few \
         passes. That is how vMotion over 40GbE came out 38x faster than over 10GbE in the \
         published Mellanox benchmark: 4x the bandwidth, far more than 4x the speed.\n",
    );
    s.push_str(&format!(
        "\nFor this workload (dirty rate {}/s at the start of a window):\n",
        fmt_bytes(e.dirty_rate)
    ));
    for r in &e.rows {
        s.push_str(&format!(
            "  {:>12} at {:>6}: dirty/goodput = {:.3}, {} passes, {}{}\n",
            fmt_link(r.link_bits_per_sec),
            fmt_secs(r.downtime_limit_s),
            r.dirty_over_goodput,
            r.passes,
            match r.completes_in_s {
                Some(t) => format!("completes in {}", fmt_secs(t)),
                None => "does not complete".into(),
            },
            match (r.speedup_vs_slowest, r.speedup_unbounded) {
                (Some(x), _) => format!(", {x:.1}x the slowest link"),
                (None, true) => ", while the slowest link never completes".into(),
                _ => String::new(),
            }
        ));
    }
    s
}

fn compress_list(v: &[String]) -> String {
    if !v.is_empty() && v.iter().all(|x| *x == v[0]) {
        v[0].clone()
    } else {
        v.join(",")
    }
}

fn recommendation_text(r: &Recommendation) -> String {
    let mut s = String::new();
    let level = match (&r.level, &r.level_unit) {
        (Some(l), Some(u)) => format!(" {l:.0} {u}"),
        _ => String::new(),
    };
    s.push_str(&format!(
        "  recommendation: {}{} -- {}\n",
        r.kind.as_str(),
        level,
        note_text(&r.note)
    ));
    if !matches!(
        r.kind,
        RecommendationKind::None | RecommendationKind::Unreachable
    ) {
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
    s.push_str(&settings_text(&r.settings));
    s
}

/// The settings as commands and snippets, one per line, indented under the recommendation.
fn settings_text(st: &Settings) -> String {
    let lines: Vec<String> = match st {
        Settings::Nothing => Vec::new(),
        Settings::Qemu(q) => qemu_text(q),
        Settings::Vsphere { sdps_pct } => vec![format!("vSphere: {}", vsphere_words(*sdps_pct))],
        Settings::Xen { credit_cap } => xl_commands(*credit_cap),
        Settings::HyperV { max_pct } => powershell_commands(*max_pct),
    };
    lines.iter().map(|l| format!("    {l}\n")).collect()
}

fn qemu_text(q: &QemuSettings) -> Vec<String> {
    let mut v = Vec::new();
    if !q.capabilities.is_empty() {
        v.push(format!(
            "QMP: {{\"execute\":\"migrate-set-capabilities\",\"arguments\":{{\"capabilities\":{}}}}}",
            capabilities_json(&q.capabilities)
        ));
    }
    v.push(format!(
        "QMP: {{\"execute\":\"migrate-set-parameters\",\"arguments\":{}}}",
        parameters_json(&q.parameters)
    ));
    v.extend(q.virsh.iter().map(virsh_command));
    v.push(format!(
        "KubeVirt MigrationPolicy spec: {}",
        kubevirt_spec_json(&q.kubevirt)
    ));
    if let Some(n) = &q.nova {
        v.push(format!("nova.conf: {}", nova_json(n)));
    }
    v.extend(q.notes.iter().map(|n| format!("note: {n}")));
    v
}

fn capabilities_json(caps: &[&str]) -> Value {
    caps.iter()
        .map(|c| json!({"capability": c, "state": true}))
        .collect()
}

fn parameters_json(p: &QmpParameters) -> Value {
    Value::Object(
        p.named()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

fn kubevirt_spec_json(k: &KubevirtSpec) -> Value {
    let mut spec = json!({ "bandwidthPerMigration": format!("{}Mi", k.bandwidth_mib) });
    if let Some(a) = k.allow_auto_converge {
        spec["allowAutoConverge"] = json!(a);
    }
    if let Some(c) = k.completion_timeout_per_gib {
        spec["completionTimeoutPerGiB"] = json!(c);
    }
    spec
}

fn nova_json(n: &NovaConf) -> Value {
    json!({
        "[libvirt] live_migration_completion_timeout": n.completion_timeout,
        "[libvirt] live_migration_permit_auto_converge": n.permit_auto_converge,
        "[libvirt] live_migration_bandwidth": n.bandwidth_mib,
    })
}

/// One libvirt command line.
fn virsh_command(v: &Virsh) -> String {
    match v {
        Virsh::SetMaxDowntime { ms } => format!("virsh migrate-setmaxdowntime DOMAIN {ms}"),
        Virsh::QmpParameter { name, value } => format!(
            "virsh qemu-monitor-command DOMAIN '{{\"execute\":\"migrate-set-parameters\",\"arguments\":{{\"{name}\":{value}}}}}'"
        ),
        Virsh::Migrate {
            bandwidth_mib,
            auto_converge,
        } => {
            let mut s = format!("virsh migrate --live --bandwidth {bandwidth_mib}");
            if let Some((initial, increment)) = auto_converge {
                s.push_str(&format!(
                    " --auto-converge --auto-converge-initial {initial} --auto-converge-increment {increment}"
                ));
            }
            s.push_str(" DOMAIN qemu+ssh://DEST/system");
            s
        }
    }
}

fn vsphere_words(sdps_pct: Option<u64>) -> String {
    match sdps_pct {
        None => "no change needed".to_string(),
        Some(lvl) => format!("SDPS (Stun During Page Send) is on by default since vSphere 5.0 (advanced setting Migrate.SdpsEnabled = 1); vMotion chooses the level itself, the model needed {lvl} %"),
    }
}

fn xl_commands(credit_cap: Option<u64>) -> Vec<String> {
    credit_cap.map_or_else(Vec::new, |cap| {
        vec![
            format!("xl sched-credit -d DOMAIN -c {cap}"),
            "xl migrate DOMAIN DEST".to_string(),
            "xl sched-credit -d DOMAIN -c 0   # remove the cap after migration".to_string(),
        ]
    })
}

fn powershell_commands(max_pct: Option<u64>) -> Vec<String> {
    max_pct.map_or_else(Vec::new, |max| {
        vec![
            format!("Set-VMProcessor -VMName NAME -Maximum {max}"),
            "Move-VM -Name NAME -DestinationHost DEST".to_string(),
            "Set-VMProcessor -VMName NAME -Maximum 100".to_string(),
        ]
    })
}

/// The settings as the JSON document has them, per tool.
pub fn settings_json(st: &Settings) -> Value {
    match st {
        Settings::Nothing => json!({}),
        Settings::Qemu(q) => {
            let mut out = json!({
                "qemu": {
                    "migrate-set-capabilities": capabilities_json(&q.capabilities),
                    "migrate-set-parameters": parameters_json(&q.parameters),
                },
                "virsh": q.virsh.iter().map(virsh_command).collect::<Vec<_>>(),
                "kubevirt_migration_policy": {
                    "apiVersion": "migrations.kubevirt.io/v1alpha1",
                    "kind": "MigrationPolicy",
                    "spec": kubevirt_spec_json(&q.kubevirt),
                },
                "notes": q.notes,
            });
            if let Some(n) = &q.nova {
                out["nova"] = nova_json(n);
            }
            out
        }
        Settings::Vsphere { sdps_pct } => json!({ "vsphere": vsphere_words(*sdps_pct) }),
        Settings::Xen { credit_cap } => json!({ "xl": xl_commands(*credit_cap) }),
        Settings::HyperV { max_pct } => json!({ "powershell": powershell_commands(*max_pct) }),
    }
}

/// The results, each with the words and settings the model leaves to the sink rendered in:
/// the reason the simulation ended, the recommendation's note and its settings.
fn results_json(cells: &[Prediction]) -> Value {
    Value::Array(
        cells
            .iter()
            .map(|c| {
                let mut v = json!(c);
                v["reason"] = json!(reason_text(&c.outcome.reason));
                let rec = &mut v["recommendation"];
                rec["note"] = json!(note_text(&c.recommendation.note));
                rec["settings"] = settings_json(&c.recommendation.settings);
                v
            })
            .collect(),
    )
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
    let mut doc = json!({
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
        "results": results_json(cells),
    });
    if let Some(b) = input.stop_copy_bits {
        doc["input"]["stop_copy_rate_bits_per_sec"] = json!(b);
    }
    doc
}
