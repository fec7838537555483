//! Unit and property tests of the model: the properties the predictions must have (more
//! bandwidth is never slower, zero dirtying is one pass, ...), the worked
//! 10g-against-40g example checked against a hand calculation, and QEMU's auto-converge
//! schedule step by step.
use super::recommend::{
    recommend, settings, RecommendationKind, Settings, SettingsContext, ThrottleKind,
};
use super::sim::*;
use super::workload::*;
use super::*;
use proptest::prelude::*;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

fn scenario(link_bits: f64, policy: Policy, throttle: Throttle) -> Scenario {
    Scenario {
        link_bits,
        efficiency: 0.94,
        downtime_s: 0.3,
        policy,
        throttle,
        limits: Limits::default(),
        stop_copy_bits: None,
    }
}

fn qemu(link_bits: f64) -> Scenario {
    scenario(link_bits, Policy::Qemu, Throttle::None)
}

#[test]
fn zero_dirtying_is_one_pass_of_mem_over_bandwidth() {
    let w = Workload::synthetic(16.0 * GIB, 0.0, None, 4, 1.0, 0.0);
    let s = qemu(10e9);
    let o = simulate(&w, &s);
    assert!(o.converges);
    assert_eq!(o.passes.len(), 1);
    // mem / goodput, with the 8-byte header of each 4 KiB page.
    let expect = 16.0 * GIB * (1.0 + 8.0 / 4096.0) / (10e9 / 8.0 * 0.94);
    assert!((o.total_time_s - expect).abs() < 1e-9, "{}", o.total_time_s);
    assert_eq!(o.downtime_s, 0.0);
    assert_eq!(o.stop_copy_bytes, 0.0);
}

#[test]
fn worked_example_40g_is_more_than_4x_faster_than_10g() {
    // 16 GiB guest, dirtying new pages at 1 GB/s over its whole memory (U(t) = W(1-e^{-rt/W})
    // with W = 16 GiB), QEMU policy, 300 ms downtime, efficiency 0.94, 8-byte page headers.
    //
    // Hand calculation (done apart from the simulator, in a few lines of Python):
    // 10g: goodput 1.175e9 B/s. Pass 1 sends 16 GiB x 4104/4096 = 17,213.4 MB in 14.650 s,
    //      during which U = 9,856.9 MB is dirtied; pass 2: 9,876.2 MB in 8.405 s -> 6,647.1 MB;
    //      ... each pass about 0.7-0.85 of the one before, until pass 17 (0.301 s) leaves
    //      298.1 MB <= 1.175e9 x 0.3 = 352.5 MB. Stop-copy 298.7 MB = 0.254 s downtime.
    //      Total 48.23 s.
    // 40g: goodput 4.7e9 B/s. Pass 1: 3.662 s -> 3,298.4 MB; pass 2: 3,304.8 MB in 0.703 s
    //      -> 689.0 MB <= 1,410 MB. Stop-copy 0.147 s. Total 4.51 s.
    // Speedup 48.23 / 4.51 = 10.69x: far more than the 4x of the bandwidth.
    let w = Workload::synthetic(16.0 * GIB, 1e9, Some(16.0 * GIB), 1, 1.0, 0.0);
    let slow = simulate(&w, &qemu(10e9));
    let fast = simulate(&w, &qemu(40e9));
    assert!(slow.converges && fast.converges);
    assert_eq!(slow.passes.len(), 17);
    assert_eq!(fast.passes.len(), 2);
    assert!((slow.passes[0].duration_s - 14.650).abs() < 1e-3);
    assert!((slow.passes[0].dirtied_bytes / 1e6 - 9856.9).abs() < 0.1);
    assert!((fast.passes[1].dirtied_bytes / 1e6 - 689.0).abs() < 0.1);
    assert!(
        (slow.total_time_s - 48.233).abs() < 0.01,
        "{}",
        slow.total_time_s
    );
    assert!(
        (fast.total_time_s - 4.512).abs() < 0.01,
        "{}",
        fast.total_time_s
    );
    assert!((slow.downtime_s - 0.254).abs() < 1e-3);
    assert!((fast.downtime_s - 0.147).abs() < 1e-3);
    let speedup = slow.total_time_s / fast.total_time_s;
    assert!(speedup > 4.0, "{speedup}");
    assert!((speedup - 10.69).abs() < 0.01, "{speedup}");
}

/// QEMU lifts max-bandwidth for the stop-and-copy (`migration_completion`): with the link
/// a 128 MiB/s cap and the stop-and-copy at 10 Gbit/s, the live passes and the switchover
/// (decided at the capped bandwidth x downtime-limit) are the same, and only the downtime
/// shrinks, to the same bytes over the faster rate.
#[test]
fn stop_copy_rate_changes_the_downtime_not_the_passes_or_the_switchover() {
    // The back-test's guest: 512 MiB, 40 MiB/s at random over 128 MiB, 65 % zero pages.
    let w = Workload::synthetic(512.0 * MIB, 40.0 * MIB, Some(128.0 * MIB), 1, 1.0, 0.65);
    let capped = Scenario {
        efficiency: 1.0,
        ..qemu(128.0 * MIB * 8.0)
    };
    let fast = Scenario {
        stop_copy_bits: Some(10e9),
        ..capped
    };
    assert_eq!(fast.goodput(), capped.goodput());
    assert_eq!(fast.stop_copy_goodput(), 10e9 / 8.0);
    assert_eq!(capped.stop_copy_goodput(), capped.goodput());
    let (a, b) = (simulate(&w, &capped), simulate(&w, &fast));
    assert!(a.converges && b.converges);
    assert_eq!(a.passes.len(), b.passes.len());
    for (x, y) in a.passes.iter().zip(&b.passes) {
        assert_eq!((x.duration_s, x.bytes), (y.duration_s, y.bytes));
    }
    assert_eq!(
        a.reason, b.reason,
        "the switchover is decided at the capped rate"
    );
    assert_eq!(a.stop_copy_bytes, b.stop_copy_bytes);
    assert!((a.downtime_s - a.stop_copy_bytes / capped.goodput()).abs() < 1e-12);
    assert!((b.downtime_s - b.stop_copy_bytes / 1.25e9).abs() < 1e-12);
    let live = a.total_time_s - a.downtime_s;
    assert!((b.total_time_s - (live + b.downtime_s)).abs() < 1e-9);
    assert_eq!(a.total_bytes, b.total_bytes);
    // By hand: pass 1 sends 512 MiB with 35 % at 4104 B/page and 65 % at 9 B/page =
    // 180.28 MiB in 1.408 s; pass 2 resends U(1.408 s) = 128 MiB (1 - e^(-40 x 1.408 / 128))
    // = 45.57 MiB, with headers 45.66 MiB in 0.357 s; U(0.357 s) = 13.50 MiB, with headers
    // 13.53 MiB <= 38.4 MiB (128 MiB/s x 300 ms): switch over. Downtime 13.53 MiB at
    // 1.25 GB/s = 11.3 ms instead of 105.7 ms at the cap.
    assert_eq!(b.passes.len(), 2);
    assert!(
        (b.passes[0].duration_s - 1.408).abs() < 1e-3,
        "{:?}",
        b.passes
    );
    assert!(
        (b.passes[1].duration_s - 0.357).abs() < 1e-3,
        "{:?}",
        b.passes
    );
    assert!((a.downtime_s - 0.1057).abs() < 1e-3, "{}", a.downtime_s);
    assert!((b.downtime_s - 0.0113).abs() < 1e-3, "{}", b.downtime_s);
}

/// vMotion's switchover when pre-copy stalls, and its 100 s limit, are timed at the
/// stop-and-copy's rate: a faster one can turn a failure into a (late) switchover.
#[test]
fn a_stalled_vmotion_switches_over_at_the_stop_copy_rate() {
    let w = Workload::synthetic(256.0 * GIB, 2e9, Some(200.0 * GIB), 1, 1.0, 0.0);
    let slow = scenario(1e9, Policy::Vmotion, Throttle::None);
    assert_eq!(simulate(&w, &slow).ending, Ending::SwitchoverTooLong);
    let fast = simulate(
        &w,
        &Scenario {
            stop_copy_bits: Some(100e9),
            ..slow
        },
    );
    assert_eq!(fast.ending, Ending::ForcedStop, "{:?}", fast.reason);
    assert!((fast.downtime_s - fast.stop_copy_bytes / (100e9 / 8.0 * 0.94)).abs() < 1e-9);
}

#[test]
fn dirtying_faster_than_the_link_never_converges_under_qemu() {
    // 2 GB/s of new dirty pages against a 10 Gbit/s link (1.175 GB/s goodput).
    let w = Workload::synthetic(64.0 * GIB, 2e9, Some(32.0 * GIB), 8, 1.0, 0.0);
    let o = simulate(&w, &qemu(10e9));
    assert!(!o.converges);
    assert_eq!(o.ending, Ending::NeverConverges);
    assert_eq!(o.downtime_s, 0.0);
}

#[test]
fn auto_converge_schedule_matches_qemu_step_by_step() {
    // Worked example of QEMU's rules (migration/ram.c): checks only when more than 1 s has
    // passed since the period started; trigger when dirty > 50 % of sent, twice; then 20 %,
    // +10 % per trigger, capped at 99 %.
    let mut st = AutoConvergeState::new(AutoConverge::default());
    // t = 0.5 s: under one second, no check yet (the period accumulates).
    assert!(!st.sync(0.5, 100.0, 80.0));
    assert_eq!((st.pct, st.dirty_rate_high_cnt), (0.0, 0));
    // t = 1.2 s: period sent 200, dirtied 160 > 100: first hit, no throttle yet.
    assert!(!st.sync(1.2, 100.0, 80.0));
    assert_eq!((st.pct, st.dirty_rate_high_cnt), (0.0, 1));
    // t = 2.5 s: 100 sent, 60 dirtied > 50: second hit -> throttle starts at 20 %.
    assert!(st.sync(2.5, 100.0, 60.0));
    assert_eq!((st.pct, st.dirty_rate_high_cnt), (20.0, 0));
    // t = 3.6 s: 100 sent, 40 dirtied <= 50: no hit, counter NOT reset.
    assert!(!st.sync(3.6, 100.0, 40.0));
    assert_eq!((st.pct, st.dirty_rate_high_cnt), (20.0, 0));
    // Two more hits -> 30 %.
    assert!(!st.sync(4.7, 100.0, 90.0));
    assert_eq!(st.dirty_rate_high_cnt, 1);
    assert!(st.sync(5.8, 100.0, 90.0));
    assert_eq!(st.pct, 30.0);
    // A hit, a miss, a hit: the counter survives the miss -> 40 %.
    assert!(!st.sync(6.9, 100.0, 90.0));
    assert!(!st.sync(8.0, 100.0, 10.0));
    assert!(st.sync(9.1, 100.0, 90.0));
    assert_eq!(st.pct, 40.0);
    // Keep hitting: +10 each two hits, capped at 99.
    let mut t = 9.1;
    let mut seen = vec![];
    for _ in 0..14 {
        t += 1.1;
        if st.sync(t, 100.0, 90.0) {
            seen.push(st.pct);
        }
    }
    assert_eq!(seen, vec![50.0, 60.0, 70.0, 80.0, 90.0, 99.0, 99.0]);
    assert!(st.maxed());
}

#[test]
fn auto_converge_tailslow_steps_by_the_ideal_cpu_share() {
    let mut st = AutoConvergeState::new(AutoConverge {
        tailslow: true,
        ..AutoConverge::default()
    });
    st.sync(1.1, 100.0, 60.0);
    st.sync(2.2, 100.0, 60.0);
    assert_eq!(st.pct, 20.0);
    // dirty 60 vs threshold 50: cpu_now 80, ideal 80 * 50/60 = 66.67, step 13.33 -> capped 10.
    st.sync(3.3, 100.0, 60.0);
    st.sync(4.4, 100.0, 60.0);
    assert_eq!(st.pct, 30.0);
    // dirty 52 vs 50: cpu_now 70, ideal 70 * 50/52 = 67.31, step 2.69.
    st.sync(5.5, 100.0, 52.0);
    st.sync(6.6, 100.0, 52.0);
    assert!(
        (st.pct - (30.0 + 70.0 - 70.0 * 50.0 / 52.0)).abs() < 1e-9,
        "{}",
        st.pct
    );
}

#[test]
fn cpu_throttle_slows_a_writer_only_as_far_as_it_is_busy() {
    assert_eq!(cpu_throttle_factor(50.0, 1.0), 0.5);
    assert_eq!(cpu_throttle_factor(50.0, 0.2), 1.0);
    assert_eq!(cpu_throttle_factor(0.0, 1.0), 1.0);
    assert!((cpu_throttle_factor(90.0, 0.2) - 0.5).abs() < 1e-12);
    assert_eq!(cpu_throttle_factor(99.0, 0.0), 1.0);
}

#[test]
fn auto_converge_rescues_a_busy_writer_but_not_a_paced_one() {
    // Like the QEMU run on this machine: 512 MiB guest, 128 MiB working set rewritten at
    // 40 MB/s, a 32 MiB/s link: never converges without a throttle.
    let link = 32.0 * MIB * 8.0;
    let mk = |busy| Workload::synthetic(512.0 * MIB, 40e6, Some(128.0 * MIB), 1, busy, 0.6);
    let ac = Throttle::AutoConverge(AutoConverge::default());
    let s = Scenario {
        efficiency: 1.0,
        ..scenario(link, Policy::Qemu, ac)
    };
    let none = simulate(
        &mk(1.0),
        &Scenario {
            throttle: Throttle::None,
            ..s
        },
    );
    assert!(!none.converges);
    // A CPU-bound writer is slowed by the throttle and converges.
    let busy = simulate(&mk(1.0), &s);
    assert!(busy.converges, "{:?}", busy.reason);
    assert!(busy.peak_throttle_pct >= 20.0);
    // A paced writer on CPU 1 % of the time is not slowed even at 99 %: as seen on QEMU 7.2.
    let paced = simulate(&mk(0.01), &s);
    assert!(!paced.converges);
    assert_eq!(paced.peak_throttle_pct, 99.0, "{:?}", paced.reason);
}

#[test]
fn xen_legacy_forces_stop_after_29_iterations_or_3x_ram() {
    // Dirtying at about the link rate: Xen never sees < 50 pages and stops on its limits.
    let w = Workload::synthetic(4.0 * GIB, 1.5e9, Some(2.0 * GIB), 1, 1.0, 0.0);
    let o = simulate(&w, &scenario(10e9, Policy::Xen, Throttle::None));
    assert_eq!(o.ending, Ending::ForcedStop);
    let sent: f64 = o.passes.iter().map(|p| p.bytes).sum();
    assert!(o.passes.len() as u32 <= XEN_LEGACY_MAX_ITERS);
    assert!(o.passes.len() as u32 == XEN_LEGACY_MAX_ITERS || sent > 3.0 * w.mem);
    assert!(!o.converges, "a ~2 GiB stop-and-copy is far over 300 ms");
    let sr = simulate(&w, &scenario(10e9, Policy::XenSr, Throttle::None));
    assert_eq!(sr.passes.len(), 5);
}

#[test]
fn hyperv_stops_after_its_pass_limit() {
    let w = Workload::synthetic(8.0 * GIB, 1.1e9, Some(4.0 * GIB), 1, 1.0, 0.0);
    let o = simulate(&w, &scenario(10e9, Policy::HyperV, Throttle::None));
    assert_eq!(o.passes.len() as u32, HYPERV_MAX_PASSES);
    assert_eq!(o.ending, Ending::ForcedStop);
}

#[test]
fn vmotion_fails_past_a_100_s_switchover() {
    // 1 Gbit/s, 200 GiB working set dirtied faster than the link: a huge switchover.
    let w = Workload::synthetic(256.0 * GIB, 2e9, Some(200.0 * GIB), 1, 1.0, 0.0);
    let o = simulate(&w, &scenario(1e9, Policy::Vmotion, Throttle::None));
    assert_eq!(o.ending, Ending::SwitchoverTooLong);
    assert!(!o.converges);
    // A small overflow switches over anyway, over the 1 s target: completes, no SLA.
    let w = Workload::synthetic(8.0 * GIB, 2e9, Some(4.0 * GIB), 1, 1.0, 0.0);
    let s = Scenario {
        downtime_s: 1.0,
        ..scenario(10e9, Policy::Vmotion, Throttle::None)
    };
    let o = simulate(&w, &s);
    assert_eq!(o.ending, Ending::ForcedStop);
    assert!(o.downtime_s > 0.0 && !o.converges);
}

#[test]
fn max_passes_forces_a_stop_under_qemu_too() {
    let w = Workload::synthetic(16.0 * GIB, 1e9, Some(16.0 * GIB), 1, 1.0, 0.0);
    let s = Scenario {
        limits: Limits {
            max_passes: Some(3),
            ..Limits::default()
        },
        ..qemu(10e9)
    };
    let o = simulate(&w, &s);
    assert_eq!(o.passes.len(), 3);
    assert_eq!(o.ending, Ending::ForcedStop);
    assert!(!o.converges && o.downtime_s > 1.0);
}

#[test]
fn deadline_aborts() {
    let w = Workload::synthetic(16.0 * GIB, 1e9, Some(16.0 * GIB), 1, 1.0, 0.0);
    let s = Scenario {
        limits: Limits {
            deadline_s: Some(30.0),
            ..Limits::default()
        },
        ..qemu(10e9)
    };
    let o = simulate(&w, &s);
    assert_eq!(o.ending, Ending::Aborted, "{:?}", o.reason);
    assert!(!o.converges);
}

#[test]
fn dirty_limit_caps_each_vcpu() {
    let w = Workload::synthetic(16.0 * GIB, 2e9, Some(8.0 * GIB), 4, 0.005, 0.0);
    let s = scenario(10e9, Policy::Qemu, Throttle::None);
    assert!(!simulate(&w, &s).converges);
    // 4 vCPUs at 500 MB/s each, paced (0.5 % busy): a CPU throttle cannot help...
    let ac = simulate(
        &w,
        &Scenario {
            throttle: Throttle::AutoConverge(AutoConverge::default()),
            ..s
        },
    );
    assert!(!ac.converges);
    // ...but a 50 MB/s per-vCPU limit can.
    let dl = simulate(
        &w,
        &Scenario {
            throttle: Throttle::DirtyLimit {
                bytes_per_sec_per_vcpu: 50.0 * MIB,
            },
            ..s
        },
    );
    assert!(dl.converges, "{:?}", dl.reason);
}

#[test]
fn recommendation_is_the_smallest_converging_throttle() {
    let w = Workload::synthetic(64.0 * GIB, 1.5e9, Some(16.0 * GIB), 8, 1.0, 0.0);
    let s = scenario(10e9, Policy::Qemu, Throttle::None);
    let base = simulate(&w, &s);
    assert!(!base.converges);
    let r = recommend(
        &w,
        &s,
        &base,
        &[ThrottleKind::AutoConverge],
        &SettingsContext::default(),
    );
    assert_eq!(r.kind, RecommendationKind::AutoConverge);
    assert!(r.converges);
    let lvl = r.level.unwrap();
    // The level converges, one percent less does not.
    let at = |p: f64| {
        simulate(
            &w,
            &Scenario {
                throttle: recommend::throttle_at(ThrottleKind::AutoConverge, p),
                ..s
            },
        )
    };
    assert!(at(lvl).converges);
    assert!(!at(lvl - 1.0).converges);
    let Settings::Qemu(q) = &r.settings else {
        panic!("QEMU settings expected: {:?}", r.settings)
    };
    assert_eq!(q.parameters.max_cpu_throttle, Some(lvl as u64));
    assert_eq!(q.parameters.downtime_limit_ms, 300);
}

#[test]
fn no_throttle_needed_is_said_so() {
    let w = Workload::synthetic(4.0 * GIB, 1e8, Some(GIB), 1, 1.0, 0.0);
    let s = qemu(40e9);
    let base = simulate(&w, &s);
    let r = recommend(
        &w,
        &s,
        &base,
        &[ThrottleKind::AutoConverge],
        &SettingsContext::default(),
    );
    assert_eq!(r.kind, RecommendationKind::None);
    assert!(r.converges);
}

#[test]
fn paced_writer_gets_dirty_limit_or_unreachable() {
    let w = Workload::synthetic(16.0 * GIB, 2e9, Some(8.0 * GIB), 4, 0.005, 0.0);
    let s = qemu(10e9);
    let base = simulate(&w, &s);
    let kinds = recommend::candidates(Policy::Qemu);
    let r = recommend(&w, &s, &base, kinds, &SettingsContext::default());
    assert_eq!(r.kind, RecommendationKind::DirtyLimit, "{:?}", r.note);
    let only_cpu = recommend(
        &w,
        &s,
        &base,
        &[ThrottleKind::AutoConverge],
        &SettingsContext::default(),
    );
    assert_eq!(only_cpu.kind, RecommendationKind::Unreachable);
    assert_eq!(
        only_cpu.note,
        recommend::Note::Unreachable {
            tried: vec![ThrottleKind::AutoConverge],
            cpu_busy: Some(0.005)
        }
    );
}

#[test]
fn xen_and_hyperv_settings_are_caps() {
    let s = scenario(10e9, Policy::Xen, Throttle::None);
    let ctx = SettingsContext {
        vcpus: 4,
        ..SettingsContext::default()
    };
    let v = settings(ThrottleKind::Sdps, 30.0, &s, &ctx);
    assert_eq!(
        v,
        Settings::Xen {
            credit_cap: Some(280)
        }
    );
    let h = settings(
        ThrottleKind::Sdps,
        30.0,
        &Scenario {
            policy: Policy::HyperV,
            ..s
        },
        &ctx,
    );
    assert_eq!(h, Settings::HyperV { max_pct: Some(70) });
}

#[test]
fn grid_speedup_is_against_the_slowest_link() {
    let w = Workload::synthetic(16.0 * GIB, 1e9, Some(16.0 * GIB), 1, 1.0, 0.0);
    let input = GridInput {
        links_bits: vec![40e9, 10e9],
        stop_copy_bits: None,
        downtimes_s: vec![0.3, 1.0],
        efficiency: 0.94,
        policy: Policy::Qemu,
        throttle: Throttle::None,
        recommend_kinds: vec![ThrottleKind::AutoConverge],
        limits: Limits::default(),
        settings: SettingsContext::default(),
    };
    let g = grid(&w, &input);
    assert_eq!(g.len(), 4);
    assert_eq!(g[1].speedup_vs_slowest, Some(1.0));
    let s = g[0].speedup_vs_slowest.unwrap();
    assert!((s - 10.69).abs() < 0.01, "{s}");
    // A longer downtime target never needs more passes.
    assert!(g[2].outcome.passes.len() <= g[0].outcome.passes.len());
    let e = explain(&w, &g);
    assert_eq!(e.dirty_rate, 1e9);
    assert_eq!(e.rows.len(), 4);
    assert_eq!(e.rows[0].speedup_vs_slowest, g[0].speedup_vs_slowest);
    // The slower link (second) sees the larger dirty/goodput ratio.
    assert!(e.rows[1].dirty_over_goodput > 3.9 * e.rows[0].dirty_over_goodput);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// More bandwidth is never slower (for migrations that complete), and never turns a
    /// converging migration into a non-converging one.
    #[test]
    fn more_bandwidth_is_never_slower(
        mem_gib in 1.0f64..256.0,
        rate in 0.0f64..4e9,
        wws_frac in 0.01f64..1.0,
        link in 1e9f64..100e9,
        factor in 1.0f64..8.0,
        dt in 0.05f64..2.0,
        busy in 0.0f64..1.0,
        auto in any::<bool>(),
    ) {
        let mem = mem_gib * GIB;
        let w = Workload::synthetic(mem, rate, Some(mem * wws_frac), 4, busy, 0.0);
        let th = if auto { Throttle::AutoConverge(AutoConverge::default()) } else { Throttle::None };
        let s1 = Scenario { downtime_s: dt, ..scenario(link, Policy::Qemu, th) };
        let s2 = Scenario { link_bits: link * factor, ..s1 };
        let a = simulate(&w, &s1);
        let b = simulate(&w, &s2);
        if a.converges && !auto {
            prop_assert!(b.converges);
            prop_assert!(b.total_time_s <= a.total_time_s * (1.0 + 1e-9),
                "{} then {}", a.total_time_s, b.total_time_s);
        }
        if !auto && a.converges && b.converges {
            prop_assert!(b.downtime_s <= dt + 1e-9);
        }
        // Bulk pass alone is a lower bound, and the pass count is finite.
        prop_assert!(a.total_time_s >= 0.0 && a.passes.len() as u32 <= MAX_SIM_PASSES);
    }

    /// A stop-and-copy faster than the live passes never changes the passes, the ending or
    /// the bytes, and never lengthens the downtime or the total.
    #[test]
    fn a_faster_stop_copy_only_shortens_the_downtime(
        mem_gib in 1.0f64..64.0,
        rate in 0.0f64..3e9,
        wws_frac in 0.01f64..1.0,
        link in 1e9f64..40e9,
        factor in 1.0f64..20.0,
        dt in 0.05f64..2.0,
        auto in any::<bool>(),
        vmotion in any::<bool>(),
    ) {
        let mem = mem_gib * GIB;
        let w = Workload::synthetic(mem, rate, Some(mem * wws_frac), 2, 1.0, 0.0);
        let th = if auto { Throttle::AutoConverge(AutoConverge::default()) } else { Throttle::None };
        let policy = if vmotion { Policy::Vmotion } else { Policy::Qemu };
        let th = if vmotion { Throttle::None } else { th };
        let a = simulate(&w, &Scenario { downtime_s: dt, ..scenario(link, policy, th) });
        let b = simulate(&w, &Scenario {
            downtime_s: dt,
            stop_copy_bits: Some(link * factor),
            ..scenario(link, policy, th)
        });
        prop_assert_eq!(a.passes.len(), b.passes.len());
        // A vMotion switchover too long at the live rate may fit its 100 s at a faster
        // one: then it completes (late), where it failed before.
        if a.ending != Ending::SwitchoverTooLong {
            prop_assert_eq!(a.ending, b.ending);
            prop_assert!(!a.converges || b.converges);
            prop_assert_eq!(a.stop_copy_bytes, b.stop_copy_bytes);
            prop_assert!(b.downtime_s <= a.downtime_s * (1.0 + 1e-12));
            prop_assert!(b.total_time_s <= a.total_time_s * (1.0 + 1e-12));
        }
    }

    /// Zero dirtying is always exactly one pass of mem / goodput.
    #[test]
    fn zero_dirtying_one_pass(mem_gib in 0.1f64..1024.0, link in 1e8f64..400e9, zero in 0.0f64..1.0) {
        let w = Workload::synthetic(mem_gib * GIB, 0.0, None, 1, 1.0, zero);
        let s = qemu(link);
        let o = simulate(&w, &s);
        prop_assert!(o.converges);
        prop_assert_eq!(o.passes.len(), 1);
        prop_assert!((o.total_time_s - w.bulk_bytes() / s.goodput()).abs() <= 1e-9 * o.total_time_s);
    }

    /// Dirtying faster than the link never converges under QEMU without a throttle. "Faster"
    /// at the scale that matters: within one downtime window the guest dirties more unique
    /// bytes than the link sends in it, U(D) > goodput x D. (A saturating curve cannot
    /// outrun the link over a whole bulk pass, so the initial slope alone is not enough.)
    #[test]
    fn faster_than_link_never_converges(
        link in 1e9f64..100e9,
        over in 1.01f64..4.0,
        wws_gib in 1.0f64..64.0,
        dt in 0.05f64..1.0,
        vcpus in 1u32..16,
    ) {
        let g = link / 8.0 * 0.94;
        let w = Workload::synthetic(128.0 * GIB, g * over, Some(wws_gib * GIB), vcpus, 1.0, 0.0);
        prop_assume!(w.dirtied(dt, &vec![1.0; vcpus as usize]) > g * dt * (1.0 + 8.0 / 4096.0));
        let o = simulate(&w, &Scenario { downtime_s: dt, ..qemu(link) });
        prop_assert!(!o.converges);
        prop_assert_eq!(o.ending, Ending::NeverConverges);
        prop_assert_eq!(o.downtime_s, 0.0);
    }

    /// The dirtied bytes never exceed the memory, and the growth curve is monotone.
    #[test]
    fn curve_is_monotone_and_bounded(rate in 0.0f64..1e10, wws_gib in 0.1f64..64.0, t in 0.0f64..1e4, dt in 0.0f64..100.0) {
        let w = Workload::synthetic(64.0 * GIB, rate, Some(wws_gib * GIB), 1, 1.0, 0.0);
        let a = w.dirtied(t, &[1.0]);
        let b = w.dirtied(t + dt, &[1.0]);
        prop_assert!(a <= b + 1e-6 && b <= w.mem);
    }
}
