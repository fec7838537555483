//! The pre-copy migration model: pure functions, no I/O.
//!
//! - [`workload`]: the guest (memory, dirty-set growth curve U(t), writers, zero pages);
//! - [`sim`]: the pass-by-pass simulator with the QEMU, vMotion, Xen and Hyper-V stop rules
//!   and the throttles (auto-converge step by step, constant CPU throttle, dirty-limit);
//! - [`summary`]: watch statistics, from interval reports to the summary;
//! - [`recommend`]: the smallest throttle that converges, mapped to real settings;
//! - this module: the link x downtime grid that `migtrace predict` prints, and `--explain`.
pub mod recommend;
pub mod sim;
pub mod summary;
pub mod workload;

use serde::Serialize;

use recommend::{recommend, Recommendation, SettingsContext, ThrottleKind};
use sim::{simulate, Limits, Outcome, Policy, Scenario, Throttle};
use workload::Workload;

/// Everything the grid needs besides the workload.
#[derive(Clone, Debug)]
pub struct GridInput {
    /// Link rates, bits per second.
    pub links_bits: Vec<f64>,
    /// Downtime targets, seconds.
    pub downtimes_s: Vec<f64>,
    pub efficiency: f64,
    pub policy: Policy,
    /// The throttle shown in the pass tables.
    pub throttle: Throttle,
    /// Families searched for the recommendation, in order.
    pub recommend_kinds: Vec<ThrottleKind>,
    pub limits: Limits,
    pub settings: SettingsContext,
}

/// One cell of the grid: one link at one downtime target.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub link_bits_per_sec: f64,
    pub link_bytes_per_sec: f64,
    /// Migration payload bytes per second after protocol overhead.
    pub goodput_bytes_per_sec: f64,
    pub downtime_limit_s: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub recommendation: Recommendation,
    /// Total time on the slowest link (same downtime) divided by the total time here; `None`
    /// when this migration does not complete, infinite (serialised as `null` with
    /// `speedup_unbounded`) when only the slowest does not.
    pub speedup_vs_slowest: Option<f64>,
    pub speedup_unbounded: bool,
}

/// Runs the grid: every link at every downtime target, with the chosen throttle, plus the
/// recommendation for each. Ordered by downtime, then by link as given.
pub fn grid(w: &Workload, input: &GridInput) -> Vec<Prediction> {
    let mut out = Vec::with_capacity(input.links_bits.len() * input.downtimes_s.len());
    for &dt in &input.downtimes_s {
        let start = out.len();
        for &link in &input.links_bits {
            let sc = Scenario {
                link_bits: link,
                efficiency: input.efficiency,
                downtime_s: dt,
                policy: input.policy,
                throttle: input.throttle,
                limits: input.limits,
            };
            let outcome = simulate(w, &sc);
            let baseline = if input.throttle == Throttle::None {
                outcome.clone()
            } else {
                simulate(
                    w,
                    &Scenario {
                        throttle: Throttle::None,
                        ..sc
                    },
                )
            };
            let rec = recommend(w, &sc, &baseline, &input.recommend_kinds, &input.settings);
            out.push(Prediction {
                link_bits_per_sec: link,
                link_bytes_per_sec: link / 8.0,
                goodput_bytes_per_sec: sc.goodput(),
                downtime_limit_s: dt,
                outcome,
                recommendation: rec,
                speedup_vs_slowest: None,
                speedup_unbounded: false,
            });
        }
        // Speedup against the slowest link at this downtime.
        let cells = &mut out[start..];
        let slowest = cells
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.link_bits_per_sec.total_cmp(&b.1.link_bits_per_sec))
            .map(|(i, _)| i);
        if let Some(si) = slowest {
            let slow_done = completes(&cells[si].outcome);
            let slow_t = cells[si].outcome.total_time_s;
            for c in cells.iter_mut() {
                if !completes(&c.outcome) {
                    continue;
                }
                if slow_done {
                    c.speedup_vs_slowest = Some(slow_t / c.outcome.total_time_s);
                } else {
                    c.speedup_unbounded = true;
                }
            }
        }
    }
    out
}

fn completes(o: &Outcome) -> bool {
    matches!(o.ending, sim::Ending::Converged | sim::Ending::ForcedStop)
}

/// `--explain`: why a faster link gives more than proportional speedup, in plain words and
/// with this workload's own numbers.
pub fn explain(w: &Workload, cells: &[Prediction]) -> String {
    let mut s = String::new();
    s.push_str(
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
    let rate = w.curve.rate();
    s.push_str(&format!(
        "\nFor this workload (dirty rate {}/s at the start of a window):\n",
        crate::units::fmt_bytes(rate)
    ));
    for c in cells {
        let ratio = rate / c.goodput_bytes_per_sec.max(1.0);
        s.push_str(&format!(
            "  {:>12} at {:>6}: dirty/goodput = {:.3}, {} passes, {}{}\n",
            crate::units::fmt_link(c.link_bits_per_sec),
            crate::units::fmt_secs(c.downtime_limit_s),
            ratio,
            c.outcome.passes.len(),
            if completes(&c.outcome) {
                format!(
                    "completes in {}",
                    crate::units::fmt_secs(c.outcome.total_time_s)
                )
            } else {
                "does not complete".into()
            },
            match (c.speedup_vs_slowest, c.speedup_unbounded) {
                (Some(x), _) => format!(", {x:.1}x the slowest link"),
                (None, true) => ", while the slowest link never completes".into(),
                _ => String::new(),
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests;
