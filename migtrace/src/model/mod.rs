//! The pre-copy migration model: pure functions, no I/O.
//!
//! - [`config`]: the typed input of a prediction and its lowering into the grid's input;
//! - [`workload`]: the guest (memory, dirty-set growth curve U(t), writers, zero pages);
//! - [`sim`]: the pass-by-pass simulator with the QEMU, vMotion, Xen and Hyper-V stop rules
//!   and the throttles (auto-converge step by step, constant CPU throttle, dirty-limit);
//! - [`summary`]: watch statistics, from interval reports to the summary;
//! - [`recommend`]: the smallest throttle that converges, mapped to real settings;
//! - this module: the link x downtime grid that `migtrace predict` prints, and `--explain`.
pub mod backtest;
pub mod config;
pub mod recommend;
pub mod sim;
pub mod summary;
pub mod workload;

use serde::Serialize;

use recommend::{recommend, Recommendation, SettingsContext, ThrottleKind};
use sim::{simulate, Limits, Outcome, Policy, Scenario, Throttle};
use workload::Workload;

/// The pre-copy model ([`sim`]) run on a live rate: `mem` bytes dirtied at
/// `rate` bytes/s, the dirty set growing up to the whole memory (the growth curve is only
/// known at the end of a watch), QEMU's policy with its 300 ms default downtime target, no
/// throttle, the default link efficiency.
pub fn predict_live(mem: f64, rate: f64, link_bits: f64) -> sim::Outcome {
    let w = Workload::synthetic(mem.max(4096.0), rate.max(0.0), None, 1, 1.0, 0.0);
    let policy = sim::Policy::Qemu;
    let sc = sim::Scenario {
        link_bits,
        efficiency: config::DEFAULT_EFFICIENCY,
        downtime_s: policy.default_downtime_s(),
        policy,
        throttle: sim::Throttle::None,
        limits: sim::Limits::default(),
        stop_copy_bits: None,
    };
    sim::simulate(&w, &sc)
}

/// Everything the grid needs besides the workload.
#[derive(Clone, Debug)]
pub struct GridInput {
    /// Link rates, bits per second.
    pub links_bits: Vec<f64>,
    /// Rate of the stop-and-copy, bits per second, when it is not the link's
    /// (`--stop-copy-rate`: QEMU lifts `max-bandwidth` for it; see [`Scenario::stop_copy_bits`]).
    pub stop_copy_bits: Option<f64>,
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
    /// The stop-and-copy's goodput, when `--stop-copy-rate` gave it (else it is the goodput).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_copy_goodput_bytes_per_sec: Option<f64>,
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
                stop_copy_bits: input.stop_copy_bits,
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
                stop_copy_goodput_bytes_per_sec: sc.stop_copy_bits.map(|_| sc.stop_copy_goodput()),
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

/// True when the migration completes (switches over), within the targets or not.
pub fn completes(o: &Outcome) -> bool {
    matches!(o.ending, sim::Ending::Converged | sim::Ending::ForcedStop)
}

/// What `--explain` puts into words: the workload's dirty rate and, per cell, how it
/// compares with the goodput and what came of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// Dirty rate at the start of a window, bytes per second.
    pub dirty_rate: f64,
    pub rows: Vec<ExplainRow>,
}

/// One cell of the grid, for `--explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainRow {
    pub link_bits_per_sec: f64,
    pub downtime_limit_s: f64,
    /// Dirty rate over goodput: about the ratio of one pass to the next.
    pub dirty_over_goodput: f64,
    pub passes: usize,
    /// Total time when the migration completes.
    pub completes_in_s: Option<f64>,
    pub speedup_vs_slowest: Option<f64>,
    pub speedup_unbounded: bool,
}

/// `--explain`: why a faster link gives more than proportional speedup, with this
/// workload's own numbers (the sink puts them into words).
pub fn explain(w: &Workload, cells: &[Prediction]) -> Explanation {
    let rate = w.curve.rate();
    Explanation {
        dirty_rate: rate,
        rows: cells
            .iter()
            .map(|c| ExplainRow {
                link_bits_per_sec: c.link_bits_per_sec,
                downtime_limit_s: c.downtime_limit_s,
                dirty_over_goodput: rate / c.goodput_bytes_per_sec.max(1.0),
                passes: c.outcome.passes.len(),
                completes_in_s: completes(&c.outcome).then_some(c.outcome.total_time_s),
                speedup_vs_slowest: c.speedup_vs_slowest,
                speedup_unbounded: c.speedup_unbounded,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
