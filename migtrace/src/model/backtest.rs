//! The back-test: a prediction made at the start of a real migration beside what QEMU did,
//! pass by pass and in total. Pure: the caller gives the model's [`Outcome`] and the
//! measured passes (`crate::passes`).
//!
//! The model passes and QEMU's dirty syncs are not the same unit. The model syncs once per
//! pass, when the pass has sent everything. QEMU 7.2 syncs (a) once at setup
//! (`ram_init_bitmaps`), (b) whenever `ram_save_pending` finds fewer dirty bytes than
//! `threshold = bandwidth x downtime-limit` (it syncs *before* the round is empty, so up to
//! a threshold of pages carries over), checked once per 100 ms rate-limit window, and
//! (c) once more after stopping the guest (`ram_save_complete`). Near the end a round is
//! short and its leftover is just under the threshold, so QEMU completes only when a
//! window's send ends far enough below the threshold to absorb what was dirtied since the
//! last sync: the tail splits into several short syncs the model's passes do not show.
//! [`qemu_syncs`] replays that rule on the model's workload, window by window, to predict
//! the dirty-sync-count; the model's own total time and bytes are left as they are.
use serde::Serialize;

use super::sim::{cpu_throttle_factor, Outcome};
use super::workload::{Workload, PAGE_HEADER, ZERO_PAGE_WIRE};

/// QEMU's rate-limit window (`BUFFER_DELAY`, 100 ms): the pending check runs once a window.
pub const WINDOW_S: f64 = 0.1;

/// What replaying QEMU's sync rule gives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncEstimate {
    /// Predicted final `dirty-sync-count` (setup and completion syncs included).
    pub syncs: u64,
    pub converged: bool,
    /// Time of the replay, seconds (a check on the model's own total time).
    pub time_s: f64,
    /// Each pass of the replay as QEMU counts them (pass n from sync n to sync n+1; the
    /// last, after the completion sync, is the stop-and-copy): (seconds, wire bytes).
    pub rounds: Vec<(f64, f64)>,
}

/// The CPU throttle (%) the model had in force at time `t` of its outcome.
fn throttle_at(o: &Outcome, t: f64) -> f64 {
    let mut start = 0.0;
    for p in &o.passes {
        if t < start + p.duration_s {
            return p.throttle_pct;
        }
        start += p.duration_s;
    }
    o.passes.last().map_or(0.0, |p| p.throttle_pct)
}

/// Replays QEMU 7.2's dirty-sync rule (see the module doc) on `w` at `goodput` bytes/s with
/// a `downtime_s` limit, for at most `horizon_s`; throttles follow the model's `o`. The
/// stop-and-copy goes at `stop_goodput` (QEMU lifts `max-bandwidth` for it).
pub fn qemu_syncs(
    w: &Workload,
    o: &Outcome,
    goodput: f64,
    stop_goodput: f64,
    downtime_s: f64,
    horizon_s: f64,
) -> SyncEstimate {
    let threshold = goodput * downtime_s;
    let (mut zero, mut data) = (w.mem * w.zero_share, w.mem * (1.0 - w.zero_share));
    let (mut t, mut last_sync, mut syncs) = (0.0_f64, 0.0_f64, 1_u64);
    let (mut rounds, mut sent) = (Vec::new(), 0.0_f64);
    let wire_per_byte = |zero: f64, data: f64| {
        let pages = (zero + data) / w.page;
        let wire = (zero / w.page) * ZERO_PAGE_WIRE + (data / w.page) * (w.page + PAGE_HEADER);
        if pages > 0.0 {
            wire / (zero + data)
        } else {
            1.0
        }
    };
    while t < horizon_s && goodput > 0.0 {
        if zero + data < threshold {
            let pct = throttle_at(o, t);
            let f: Vec<f64> = w
                .writers
                .iter()
                .map(|wr| cpu_throttle_factor(pct, wr.busy))
                .collect();
            data = (data + w.dirtied(t - last_sync, &f)).min(w.mem - zero);
            rounds.push((t - last_sync, sent));
            sent = 0.0;
            last_sync = t;
            syncs += 1;
            if zero + data < threshold {
                let stop_bytes = (zero + data) * wire_per_byte(zero, data);
                // The sync that found it fits starts a pass that ends at once, when QEMU
                // stops the guest and syncs for the last time.
                rounds.extend([(0.0, 0.0), (stop_bytes / stop_goodput, stop_bytes)]);
                return SyncEstimate {
                    syncs: syncs + 1,
                    converged: true,
                    time_s: t + stop_bytes / stop_goodput,
                    rounds,
                };
            }
        }
        let cost = wire_per_byte(zero, data);
        let cleared = (goodput * WINDOW_S / cost).min(zero + data);
        let share = cleared / (zero + data).max(1.0);
        zero -= zero * share;
        data -= data * share;
        sent += cleared * cost;
        t += WINDOW_S;
    }
    rounds.push((t - last_sync, sent));
    SyncEstimate {
        syncs,
        converged: false,
        time_s: t,
        rounds,
    }
}

/// Relative error of `predicted` against `actual`, `None` when `actual` is zero.
pub fn rel_error(predicted: f64, actual: f64) -> Option<f64> {
    (actual != 0.0).then(|| (predicted - actual) / actual)
}

/// One pass side by side: QEMU's pass i against pass i of the replay of its sync rule
/// ([`SyncEstimate::rounds`], the same unit).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassPair {
    pub index: u64,
    pub predicted_duration_s: Option<f64>,
    pub predicted_bytes: Option<f64>,
    pub actual_duration_s: Option<f64>,
    pub actual_bytes: Option<u64>,
}

/// Pairs pass i of the replay with QEMU's pass i.
pub fn pair_passes(est: &SyncEstimate, actual: &[(f64, u64)]) -> Vec<PassPair> {
    let pred = &est.rounds;
    let n = pred.len().max(actual.len());
    (0..n)
        .map(|i| PassPair {
            index: i as u64 + 1,
            predicted_duration_s: pred.get(i).map(|p| p.0),
            predicted_bytes: pred.get(i).map(|p| p.1),
            actual_duration_s: actual.get(i).map(|a| a.0),
            actual_bytes: actual.get(i).map(|a| a.1),
        })
        .collect()
}

/// What QEMU did, as `crate::passes` measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActualRun {
    /// QEMU's status at the end (`completed`, `cancelled`, `failed`, `active` if cut short).
    pub status: String,
    pub syncs: u64,
    pub total_time_s: f64,
    pub bytes: u64,
    pub downtime_s: Option<f64>,
    /// Per pass: (duration, bytes).
    pub passes: Vec<(f64, u64)>,
}

/// The prediction beside the migration, in total and pass by pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// `converges`, `forced-stop`, `never-converges`, ... (the model's ending).
    pub predicted_verdict: String,
    /// `converges` for a completed migration, else QEMU's status.
    pub actual_verdict: String,
    pub verdict_agrees: bool,
    /// The model's live passes (its stop-and-copy not counted).
    pub model_passes: usize,
    /// QEMU's dirty-sync-count predicted by [`qemu_syncs`], and the real one.
    pub predicted_syncs: u64,
    pub actual_syncs: u64,
    pub syncs_diff: i64,
    pub predicted_total_time_s: f64,
    pub actual_total_time_s: f64,
    /// (predicted - actual) / actual, when both completed.
    pub total_time_error: Option<f64>,
    pub predicted_bytes: f64,
    pub actual_bytes: u64,
    pub bytes_error: Option<f64>,
    pub predicted_downtime_s: f64,
    pub actual_downtime_s: Option<f64>,
    /// The live phase (total - downtime), predicted and actual, and its error: the part
    /// that runs at max-bandwidth on both sides. QEMU lifts max-bandwidth for the
    /// stop-and-copy (`migration_completion` sets the rate limit to INT64_MAX); the model
    /// sends it at the scenario's stop-and-copy rate (`--stop-copy-rate`).
    pub predicted_live_s: f64,
    pub actual_live_s: Option<f64>,
    pub live_time_error: Option<f64>,
    pub pairs: Vec<PassPair>,
}

/// Compares the model's outcome `o` (and its replayed sync count `est`) with `actual`.
pub fn compare(o: &Outcome, est: &SyncEstimate, actual: &ActualRun) -> Comparison {
    let pred_done = super::completes(o);
    let act_done = actual.status == "completed";
    let predicted_verdict = if pred_done {
        "converges".to_string()
    } else {
        serde_json::to_value(o.ending)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "does-not-complete".into())
    };
    let actual_verdict = if act_done {
        "converges".to_string()
    } else {
        actual.status.clone()
    };
    let both = pred_done && act_done;
    let predicted_live_s = o.total_time_s - o.downtime_s;
    let actual_live_s = actual.downtime_s.map(|d| actual.total_time_s - d);
    Comparison {
        predicted_live_s,
        actual_live_s,
        live_time_error: actual_live_s
            .and_then(|a| rel_error(predicted_live_s, a))
            .filter(|_| both),
        verdict_agrees: pred_done == act_done,
        predicted_verdict,
        actual_verdict,
        model_passes: o.passes.len(),
        predicted_syncs: est.syncs,
        actual_syncs: actual.syncs,
        syncs_diff: est.syncs as i64 - actual.syncs as i64,
        predicted_total_time_s: o.total_time_s,
        actual_total_time_s: actual.total_time_s,
        total_time_error: rel_error(o.total_time_s, actual.total_time_s).filter(|_| both),
        predicted_bytes: o.total_bytes,
        actual_bytes: actual.bytes,
        bytes_error: rel_error(o.total_bytes, actual.bytes as f64).filter(|_| both),
        predicted_downtime_s: o.downtime_s,
        actual_downtime_s: actual.downtime_s,
        pairs: pair_passes(est, &actual.passes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sim::{simulate, Limits, Policy, Scenario, Throttle};

    fn scenario(mib_s: f64) -> Scenario {
        Scenario {
            link_bits: mib_s * 8.0 * 1048576.0,
            efficiency: 1.0,
            downtime_s: 0.3,
            policy: Policy::Qemu,
            throttle: Throttle::None,
            limits: Limits::default(),
            stop_copy_bits: None,
        }
    }

    /// The guest of `docs/backtest.md`: 512 MiB, 40 MiB/s at random over 128 MiB.
    fn guest() -> Workload {
        let mib = 1048576.0;
        Workload::synthetic(512.0 * mib, 40.0 * mib, Some(128.0 * mib), 1, 1.0, 0.65)
    }

    #[test]
    fn qemu_syncs_more_often_than_the_model_passes_and_counts_setup_and_completion() {
        let w = guest();
        for mib_s in [128.0, 64.0] {
            let sc = scenario(mib_s);
            let o = simulate(&w, &sc);
            let e = qemu_syncs(&w, &o, sc.goodput(), sc.goodput(), 0.3, 600.0);
            eprintln!(
                "{mib_s} MiB/s: model {} passes {:.2} s, replay {e:?}",
                o.passes.len(),
                o.total_time_s
            );
            assert!(e.converged);
            assert_eq!(e.rounds.len() as u64, e.syncs, "one pass per sync");
            let bytes: f64 = e.rounds.iter().map(|r| r.1).sum();
            assert!(rel_error(bytes, o.total_bytes).unwrap().abs() < 0.25);
            assert!(
                e.syncs >= o.passes.len() as u64 + 2,
                "{e:?} vs {}",
                o.passes.len()
            );
            let err = rel_error(e.time_s, o.total_time_s).unwrap();
            assert!(err.abs() < 0.25, "replay {e:?} vs model {}", o.total_time_s);
        }
    }

    #[test]
    fn a_link_below_the_dirty_rate_never_syncs_to_completion() {
        let w = guest();
        let sc = scenario(16.0);
        let o = simulate(&w, &sc);
        let e = qemu_syncs(&w, &o, sc.goodput(), sc.goodput(), 0.3, 120.0);
        assert!(!e.converged);
    }
}
