//! The iterative pre-copy simulator: pass after pass, each pass sends what the previous one
//! left dirty, at the link's goodput, until the policy's stop rule switches over to the
//! final stop-and-copy, gives up, or a deadline aborts it. Pure and deterministic.
//!
//! [`simulate`] steps a small state machine, `Sim`: the clock, the passes so far, the
//! throttle state and the writers' speed factors, with one method per step (a pass, the
//! dirty bitmap sync, the policy's stop rule, the stall and limit checks, the stop-and-copy).
//!
//! The stop rules, per policy, with their sources:
//! - QEMU: switch over when the pending bytes fit in `bandwidth x downtime-limit`, with no
//!   pass limit ([`Policy::Qemu`]);
//! - Xen (legacy `xc_domain_save`): at most 29 iterations, or 3x RAM sent, or fewer than
//!   50 dirty pages, then a forced stop-and-copy ([`Policy::Xen`]); Xen 4.6+ (`xg_sr_save.c`):
//!   5 iterations or 50 pages ([`Policy::XenSr`]);
//! - Hyper-V: at most 10 passes, then a forced stop-and-copy ([`Policy::HyperV`]);
//! - vMotion: switch over when the remainder takes under the target (1 s by default); past
//!   a 100 s switchover vMotion fails ([`Policy::Vmotion`]).
//!
//! Throttles ([`Throttle`]) slow the writers: a CPU throttle only as far as a writer is on
//! CPU ([`cpu_throttle_factor`]), a dirty limit by capping each writer's rate.
use serde::Serialize;

use super::workload::{Workload, PAGE_HEADER};

/// Whose stop rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Qemu,
    Vmotion,
    Xen,
    XenSr,
    HyperV,
}

impl Policy {
    /// Name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Qemu => "qemu",
            Policy::Vmotion => "vmotion",
            Policy::Xen => "xen",
            Policy::XenSr => "xen-sr",
            Policy::HyperV => "hyperv",
        }
    }

    /// The downtime target when the user gives none.
    pub fn default_downtime_s(self) -> f64 {
        match self {
            // QEMU: `downtime-limit` defaults to 300 ms (DEFAULT_MIGRATE_SET_DOWNTIME in
            // migration/options.c; migration/migration.c before QEMU 8.0).
            Policy::Qemu => 0.3,
            // vMotion aims for a switchover ("stun") under one second: VMware, "VMware vSphere
            // vMotion Architecture, Performance and Best Practices in VMware vSphere 5".
            Policy::Vmotion => 1.0,
            // Xen and Hyper-V have no downtime target; 300 ms is our SLA default, the same
            // as QEMU's so that policies compare on one scale.
            Policy::Xen | Policy::XenSr | Policy::HyperV => 0.3,
        }
    }

    /// The pass limit of the policy's own rule (QEMU and vMotion have none: the horizon).
    pub fn max_passes(self) -> u32 {
        match self {
            Policy::Qemu | Policy::Vmotion => MAX_SIM_PASSES,
            Policy::Xen => XEN_LEGACY_MAX_ITERS,
            Policy::XenSr => XEN_SR_MAX_ITERS,
            Policy::HyperV => HYPERV_MAX_PASSES,
        }
    }

    /// The fraction by which a pass must shrink the pending bytes to count as progress.
    /// vMotion's own rule is not public; we take "shrank by less than 5 %"
    /// ([`VMOTION_MIN_PROGRESS`]) for it, and "not at all" for the others.
    pub fn min_shrink(self) -> f64 {
        if self == Policy::Vmotion {
            VMOTION_MIN_PROGRESS
        } else {
            1e-6
        }
    }
}

/// QEMU's auto-converge parameters (`migrate-set-parameters`), defaults from
/// `migration/options.c` (`migration/migration.c` in QEMU 7.2):
/// `DEFAULT_MIGRATE_CPU_THROTTLE_INITIAL` 20, `..._INCREMENT` 10, `DEFAULT_MIGRATE_MAX_CPU_THROTTLE`
/// 99, `DEFAULT_MIGRATE_THROTTLE_TRIGGER_THRESHOLD` 50, tailslow off.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AutoConverge {
    pub initial_pct: f64,
    pub increment_pct: f64,
    pub max_pct: f64,
    pub trigger_threshold_pct: f64,
    pub tailslow: bool,
}

impl Default for AutoConverge {
    fn default() -> Self {
        AutoConverge {
            initial_pct: 20.0,
            increment_pct: 10.0,
            max_pct: 99.0,
            trigger_threshold_pct: 50.0,
            tailslow: false,
        }
    }
}

/// How the guest is slowed while pre-copy runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Throttle {
    None,
    /// QEMU auto-converge, simulated step by step (see [`AutoConvergeState`]).
    AutoConverge(AutoConverge),
    /// A constant CPU throttle of `pct` %, engaged from the first iterative pass (after the
    /// bulk copy): vMotion's SDPS, a Xen credit cap, a Hyper-V processor limit.
    Cpu {
        pct: f64,
    },
    /// QEMU dirty-limit (QEMU 8.1+): each vCPU dirties at most `bytes_per_sec_per_vcpu`,
    /// engaged by the same trigger as auto-converge (`migration_trigger_throttle` in
    /// `migration/ram.c` calls `migration_dirty_limit_guest` instead of the CPU throttle).
    DirtyLimit {
        bytes_per_sec_per_vcpu: f64,
    },
}

/// Speed of a writer that is on CPU `busy` of the wall time, under a CPU throttle of `pct`
/// %. The throttle leaves the vCPU `1 - pct` of the wall time (QEMU's `cpu_throttle_thread`
/// sleeps `pct / (1 - pct)` of each timeslice it lets run); a writer that needs only `busy`
/// of it is not slowed until `1 - pct < busy`, then runs at `(1 - pct) / busy`. So a fully
/// busy vCPU slows to `1 - pct`, a vCPU busy 20 % is untouched by a 50 % throttle, and a
/// wall-clock-paced writer with little CPU use is untouched even at 99 % -- which is what
/// real QEMU 7.2 showed on this machine (32 MiB/s link, 40 MB/s paced writer, auto-converge
/// up to 99 %: never converged).
pub fn cpu_throttle_factor(pct: f64, busy: f64) -> f64 {
    let left = (1.0 - pct / 100.0).clamp(0.0, 1.0);
    if busy <= left || busy <= 0.0 {
        1.0
    } else {
        left / busy
    }
}

/// Limits on the whole migration, from the user or an orchestrator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Limits {
    /// Abort when the migration has not completed by then (seconds).
    pub deadline_s: Option<f64>,
    /// Abort when the pending bytes have not reached a new low for this long (KubeVirt's
    /// `progressTimeout`).
    pub progress_timeout_s: Option<f64>,
    /// Override of the policy's pass limit.
    pub max_passes: Option<u32>,
}

/// KubeVirt `MigrationConfiguration` defaults (kubevirt.io/api `MigrationConfiguration`,
/// pkg/virt-config: `MigrationCompletionTimeoutPerGiB = 150`, `MigrationProgressTimeout =
/// 150`): abort when the migration takes longer than 150 s per GiB of migrated data, or
/// makes no progress for 150 s.
pub const KUBEVIRT_COMPLETION_PER_GIB: u64 = 150;
pub const KUBEVIRT_PROGRESS_TIMEOUT_S: f64 = 150.0;
/// OpenStack Nova `[libvirt] live_migration_completion_timeout` default 800: seconds per GiB
/// of guest RAM + disk to transfer, with a lower bound of 2 GiB (nova/conf/libvirt.py; used
/// in nova/virt/libvirt/migration.py).
pub const NOVA_COMPLETION_PER_GIB: u64 = 800;
/// Nova counts at least this many GiB when it scales its completion timeout.
pub const NOVA_MIN_GIB: f64 = 2.0;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

impl Limits {
    /// KubeVirt's limits for a guest of `mem_bytes`: the completion timeout scales with the
    /// migrated data in GiB (memory and local disks; only the memory is known here), and the
    /// progress timeout.
    pub fn kubevirt(mem_bytes: f64) -> Limits {
        Limits {
            deadline_s: Some(KUBEVIRT_COMPLETION_PER_GIB as f64 * Self::kubevirt_gib(mem_bytes)),
            progress_timeout_s: Some(KUBEVIRT_PROGRESS_TIMEOUT_S),
            max_passes: None,
        }
    }

    /// Nova's completion timeout for a guest of `mem_bytes` (RAM; disk would add to it).
    pub fn nova(mem_bytes: f64) -> Limits {
        Limits {
            deadline_s: Some(NOVA_COMPLETION_PER_GIB as f64 * Self::nova_gib(mem_bytes)),
            progress_timeout_s: None,
            max_passes: None,
        }
    }

    /// The GiB KubeVirt scales its completion timeout by.
    pub fn kubevirt_gib(mem_bytes: f64) -> f64 {
        mem_bytes / GIB
    }

    /// The GiB Nova scales its completion timeout by: at least [`NOVA_MIN_GIB`].
    pub fn nova_gib(mem_bytes: f64) -> f64 {
        (mem_bytes / GIB).max(NOVA_MIN_GIB)
    }
}

/// One simulated scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Link rate of the live passes, bits per second: the link, or QEMU's `max-bandwidth`
    /// when that caps the stream.
    pub link_bits: f64,
    /// Fraction of the link rate that carries migration payload (see `docs/predict.md`).
    pub efficiency: f64,
    pub downtime_s: f64,
    pub policy: Policy,
    pub throttle: Throttle,
    pub limits: Limits,
    /// Rate of the final stop-and-copy, bits per second; `None`: the same as the live
    /// passes. QEMU 7.2 lifts `max-bandwidth` for it (`migration_completion` calls
    /// `qemu_file_set_rate_limit(s->to_dst_file, INT64_MAX)` before
    /// `qemu_savevm_state_complete_precopy`), so when `link_bits` is a `max-bandwidth` cap
    /// the guest is paused only for the stop-and-copy at the link's own rate. The switchover
    /// test stays at the live rate: QEMU's threshold is the bandwidth it measured while
    /// capped ([`Scenario::goodput`]) times `downtime-limit`.
    pub stop_copy_bits: Option<f64>,
}

impl Scenario {
    /// Goodput of the migration stream in the live passes, bytes per second.
    pub fn goodput(&self) -> f64 {
        self.link_bits / 8.0 * self.efficiency
    }

    /// Goodput of the stop-and-copy, bytes per second (the live goodput unless
    /// [`Scenario::stop_copy_bits`] says otherwise).
    pub fn stop_copy_goodput(&self) -> f64 {
        self.stop_copy_bits.unwrap_or(self.link_bits) / 8.0 * self.efficiency
    }
}

/// One live pre-copy pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pass {
    /// 1 is the bulk pass over all memory.
    pub index: u32,
    pub duration_s: f64,
    /// Bytes on the wire.
    pub bytes: f64,
    /// Unique bytes the guest dirtied while this pass ran (what the next pass resends).
    pub dirtied_bytes: f64,
    /// The same in pages.
    pub dirtied_pages: f64,
    /// CPU throttle in force during the pass, %.
    pub throttle_pct: f64,
}

/// How a simulation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Switched over within the downtime target.
    Converged,
    /// The policy forced a stop-and-copy (pass or volume limit) with whatever was pending;
    /// the migration completes but the downtime may exceed the target.
    ForcedStop,
    /// vMotion gave up: the switchover would take more than 100 s.
    SwitchoverTooLong,
    /// Each pass dirties about as much as it sends and no throttle is left to raise: QEMU
    /// would iterate forever.
    NeverConverges,
    /// The deadline (or KubeVirt's progress timeout) aborted the migration.
    Aborted,
    /// The simulation horizon (passes or simulated time) ran out first.
    Horizon,
}

/// Result of one simulation.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub passes: Vec<Pass>,
    /// The final stop-and-copy: bytes sent with the guest paused.
    pub stop_copy_bytes: f64,
    /// Its duration, which is the (RAM part of the) downtime.
    pub downtime_s: f64,
    /// Live passes plus the stop-and-copy, seconds. For a migration that does not complete,
    /// the time simulated until it was given up.
    pub total_time_s: f64,
    pub total_bytes: f64,
    pub ending: Ending,
    /// True when the migration completes with a downtime within the target and within the
    /// deadline, if any.
    pub converges: bool,
    /// The largest CPU throttle reached, %.
    pub peak_throttle_pct: f64,
    /// Why it ended as it did. Not serialised with the rest: the sink puts it into words.
    #[serde(skip)]
    pub reason: Reason,
}

/// Why a simulation ended, with the numbers the sentence needs (bytes, seconds).
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The goodput is zero.
    NoLink,
    /// QEMU's (and Hyper-V's) switchover: the pending bytes fit in the downtime target.
    Fits {
        pass: u32,
        pending: f64,
        downtime_s: f64,
    },
    /// vMotion's switchover within its target.
    SwitchoverFits {
        pass: u32,
        pending: f64,
        downtime_s: f64,
    },
    /// Xen suspends the guest after `pass`.
    Xen {
        pass: u32,
        why: XenStop,
        pending: f64,
    },
    /// Hyper-V suspends the guest after its pass limit.
    HyperVPassLimit { passes: u32, pending: f64 },
    /// `--max-passes` forced the stop-and-copy.
    MaxPasses { pass: u32, pending: f64 },
    /// vMotion stopped shrinking and the switchover would exceed its maximum.
    SwitchoverTooLong { pending: f64, switchover_s: f64 },
    /// vMotion stopped shrinking and switches over anyway.
    SwitchoverAnyway { pending: f64, switchover_s: f64 },
    /// QEMU: each pass dirties as much as it sends.
    IteratesForever {
        pending: f64,
        threshold: f64,
        downtime_s: f64,
    },
    /// No new low of the pending bytes within the progress timeout.
    NoProgress { timeout_s: f64 },
    /// The deadline passes before the migration can complete.
    Deadline { deadline_s: f64 },
    /// Not complete after a simulated day.
    SimulatedDay,
    /// Not complete after [`MAX_SIM_PASSES`] passes.
    PassHorizon { passes: u32 },
    /// It would complete, but past the deadline.
    PastDeadline { total_s: f64, deadline_s: f64 },
}

/// Which of Xen's rules ended the iterative phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenStop {
    /// Fewer than 50 pages dirtied in the last pass.
    FewPages,
    /// More than 3x the memory sent (legacy only).
    Volume,
    /// The iteration limit.
    IterationLimit(u32),
}

/// Simulation horizon: no real migration runs this many passes, and QEMU's own rule has no
/// limit, so past this the answer is "does not converge" anyway.
pub const MAX_SIM_PASSES: u32 = 2000;
/// Simulation horizon in simulated time when no deadline is given: one day.
pub const MAX_SIM_TIME_S: f64 = 86_400.0;
/// vMotion fails when the switchover would take longer than this: the VMware KB message
/// "The migration has exceeded the maximum switchover time of 100 second(s)"
/// (`vmotion.maxSwitchoverSeconds`, default 100).
pub const VMOTION_MAX_SWITCHOVER_S: f64 = 100.0;
/// vMotion switches over when a pass shrinks the remainder by less than this fraction (a
/// model choice: VMware documents that vMotion switches over when pre-copy stops making
/// progress, not the exact threshold).
pub const VMOTION_MIN_PROGRESS: f64 = 0.05;
/// Xen's legacy save loop, `tools/libxc/xc_domain_save.c`: `DEF_MAX_ITERS 29` ("limit us to
/// 30 times round loop"), `DEF_MAX_FACTOR 3` ("never send more than 3x p2m_size"), and the
/// last iteration once fewer than 50 pages were sent in one.
pub const XEN_LEGACY_MAX_ITERS: u32 = 29;
pub const XEN_LEGACY_MAX_FACTOR: f64 = 3.0;
/// Xen 4.6+ migration v2, `tools/libs/guest/xg_sr_save.c` (`xc_sr_save.c` before 4.14):
/// `ctx.save.max_iterations = 5; ctx.save.dirty_threshold = 50;`.
pub const XEN_SR_MAX_ITERS: u32 = 5;
pub const XEN_DIRTY_THRESHOLD_PAGES: f64 = 50.0;
/// Hyper-V: "Hyper-V repeats the copying process ... until it has made 10 passes through
/// the memory pages ... If the copy cannot be completed in 10 iterations, Hyper-V suspends
/// the VM" (Directions on Microsoft, "Live Migration Switch Over", on Windows Server 2008 R2
/// Hyper-V). A limit of 5 passes is also quoted without a source; we follow the source, and
/// `--max-passes 5` gives that rule.
pub const HYPERV_MAX_PASSES: u32 = 10;

/// QEMU's auto-converge state machine, as `migration_trigger_throttle` and
/// `mig_throttle_guest_down` in `migration/ram.c` (QEMU 7.2 .. 9.x) run it at each dirty
/// bitmap sync:
///
/// - a "period" lasts from one check to the next, and the check runs only when at least
///   one second has passed since the period started (`migration_bitmap_sync`:
///   `if (end_time > rs->time_last_bitmap_sync + 1000)`);
/// - at a check, if the bytes dirtied in the period exceed `throttle-trigger-threshold` %
///   (50) of the bytes sent in it, `dirty_rate_high_cnt` is incremented, and when it reaches
///   2 it is reset and the guest is throttled down (it is not reset when the condition is
///   false);
/// - throttling down starts at `cpu-throttle-initial` (20) and then adds
///   `cpu-throttle-increment` (10), capped at `max-cpu-throttle` (99); with
///   `cpu-throttle-tailslow` the step is `min(cpu_now - cpu_ideal, increment)` where
///   `cpu_now = 100 - throttle` and `cpu_ideal = cpu_now * threshold_bytes / dirty_bytes`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoConvergeState {
    pub params: AutoConverge,
    /// Current throttle, %; 0 when not active.
    pub pct: f64,
    pub dirty_rate_high_cnt: u32,
    period_start_s: f64,
    period_dirty: f64,
    period_sent: f64,
}

impl AutoConvergeState {
    pub fn new(params: AutoConverge) -> Self {
        AutoConvergeState {
            params,
            pct: 0.0,
            dirty_rate_high_cnt: 0,
            period_start_s: 0.0,
            period_dirty: 0.0,
            period_sent: 0.0,
        }
    }

    /// A dirty bitmap sync at time `now_s`, after a pass that sent `sent` bytes while
    /// `dirtied` bytes were dirtied. Returns true when this sync changed the throttle (or,
    /// for dirty-limit, when the trigger fired).
    pub fn sync(&mut self, now_s: f64, sent: f64, dirtied: f64) -> bool {
        self.period_dirty += dirtied;
        self.period_sent += sent;
        if now_s <= self.period_start_s + 1.0 {
            return false;
        }
        let threshold = self.period_sent * self.params.trigger_threshold_pct / 100.0;
        let dirty = self.period_dirty;
        let mut fired = false;
        if dirty > threshold {
            self.dirty_rate_high_cnt += 1;
            if self.dirty_rate_high_cnt >= 2 {
                self.dirty_rate_high_cnt = 0;
                self.throttle_down(dirty, threshold);
                fired = true;
            }
        }
        self.period_start_s = now_s;
        self.period_dirty = 0.0;
        self.period_sent = 0.0;
        fired
    }

    fn throttle_down(&mut self, dirty: f64, threshold: f64) {
        let p = self.params;
        if self.pct <= 0.0 {
            self.pct = p.initial_pct.min(p.max_pct);
        } else {
            let inc = if p.tailslow {
                let cpu_now = 100.0 - self.pct;
                let cpu_ideal = cpu_now * (threshold / dirty);
                (cpu_now - cpu_ideal).min(p.increment_pct)
            } else {
                p.increment_pct
            };
            self.pct = (self.pct + inc).min(p.max_pct);
        }
    }

    /// True when the throttle cannot rise any more.
    pub fn maxed(&self) -> bool {
        self.pct >= self.params.max_pct
    }
}

/// Runs one scenario to its end: a [`Sim`] stepped pass by pass until a rule ends it.
pub fn simulate(w: &Workload, s: &Scenario) -> Outcome {
    let mut sim = Sim::new(w, s);
    if sim.g <= 0.0 {
        return sim.finish(Stop::abandon(Ending::NeverConverges, Reason::NoLink));
    }
    loop {
        let (index, pending) = sim.pass();
        let changed = sim.dirty_sync(pending);
        let stop = sim
            .policy_stop(index, pending)
            .or_else(|| sim.stalled_stop(index, pending, changed));
        if let Some(stop) = stop {
            return sim.finish(stop);
        }
        sim.prev_pending = pending;
        if let Some(stop) = sim.limit_stop(index, pending) {
            return sim.finish(stop);
        }
        sim.to_send = sim.wire(pending);
    }
}

/// How a simulation ends: the bytes left for the stop-and-copy (0 when it never gets
/// there), the ending and the sentence that says why.
struct Stop {
    stop_bytes: f64,
    ending: Ending,
    reason: Reason,
}

impl Stop {
    /// A switchover with `pending` bytes left to copy with the guest paused.
    fn switch(pending: f64, ending: Ending, reason: Reason) -> Stop {
        Stop {
            stop_bytes: pending,
            ending,
            reason,
        }
    }

    /// The migration is given up: nothing goes out with the guest paused.
    fn abandon(ending: Ending, reason: Reason) -> Stop {
        Stop {
            stop_bytes: 0.0,
            ending,
            reason,
        }
    }
}

/// The simulator's state between passes: the clock, the passes so far, the throttle in
/// force and the resulting speed of each writer.
struct Sim<'a> {
    w: &'a Workload,
    s: &'a Scenario,
    /// Goodput of the live passes, bytes per second.
    g: f64,
    /// Goodput of the stop-and-copy (QEMU sends it uncapped), bytes per second.
    g_stop: f64,
    /// The switchover threshold: bytes that fit in the downtime target at the live goodput,
    /// as QEMU's `threshold_size = bandwidth x downtime-limit` with the bandwidth it
    /// measured in the last 100 ms window of the (capped) live phase.
    threshold: f64,
    /// Simulated time past which the migration is given up (deadline, else a day).
    horizon_s: f64,
    /// The policy's pass limit, or `--max-passes`.
    max_passes: u32,
    /// Auto-converge's state machine; dirty-limit uses its trigger too.
    ac: Option<AutoConvergeState>,
    dirty_limit_on: bool,
    /// CPU throttle in force, %, and the largest reached.
    cpu_pct: f64,
    peak: f64,
    /// Speed of each writer under the throttle in force (1 = unthrottled).
    factors: Vec<f64>,
    passes: Vec<Pass>,
    /// Bytes the next pass puts on the wire.
    to_send: f64,
    now: f64,
    sent_total: f64,
    /// Lowest pending bytes so far and when they were reached (progress timeout).
    best_pending: f64,
    best_at: f64,
    prev_pending: f64,
}

impl<'a> Sim<'a> {
    fn new(w: &'a Workload, s: &'a Scenario) -> Self {
        let g = s.goodput();
        let ac = match s.throttle {
            Throttle::AutoConverge(p) => Some(AutoConvergeState::new(p)),
            Throttle::DirtyLimit { .. } => Some(AutoConvergeState::new(AutoConverge::default())),
            _ => None,
        };
        Sim {
            w,
            s,
            g,
            g_stop: s.stop_copy_goodput(),
            threshold: g * s.downtime_s,
            horizon_s: s.limits.deadline_s.unwrap_or(MAX_SIM_TIME_S),
            max_passes: s.limits.max_passes.unwrap_or(s.policy.max_passes()),
            ac,
            dirty_limit_on: false,
            cpu_pct: 0.0,
            peak: 0.0,
            factors: vec![1.0; w.writers.len()],
            passes: Vec::new(),
            to_send: w.bulk_bytes(),
            now: 0.0,
            sent_total: 0.0,
            best_pending: f64::INFINITY,
            best_at: 0.0,
            prev_pending: f64::INFINITY,
        }
    }

    /// Bytes on the wire for `bytes` of dirty pages: each page goes with its header.
    fn wire(&self, bytes: f64) -> f64 {
        bytes * (1.0 + PAGE_HEADER / self.w.page)
    }

    /// Speed of each writer under the throttle in force.
    fn set_factors(&mut self) {
        for (f, wr) in self.factors.iter_mut().zip(&self.w.writers) {
            *f = cpu_throttle_factor(self.cpu_pct, wr.busy);
            if let (
                true,
                Throttle::DirtyLimit {
                    bytes_per_sec_per_vcpu: cap,
                },
            ) = (self.dirty_limit_on, self.s.throttle)
            {
                let r = wr.share * self.w.curve.rate();
                if r > cap {
                    *f = f.min(cap / r);
                }
            }
        }
    }

    /// One live pass: sends `to_send` while the writers dirty. Returns the pass number and
    /// the bytes it left dirty.
    fn pass(&mut self) -> (u32, f64) {
        let index = self.passes.len() as u32 + 1;
        // Throttles other than auto-converge engage with the iterative phase (pass 2 on).
        if index >= 2 {
            if let Throttle::Cpu { pct } = self.s.throttle {
                self.cpu_pct = pct;
            }
        }
        self.set_factors();
        self.peak = self.peak.max(self.cpu_pct);
        let duration = self.to_send / self.g;
        let dirtied = self.w.dirtied(duration, &self.factors);
        self.passes.push(Pass {
            index,
            duration_s: duration,
            bytes: self.to_send,
            dirtied_bytes: dirtied,
            dirtied_pages: dirtied / self.w.page,
            throttle_pct: self.cpu_pct,
        });
        self.now += duration;
        self.sent_total += self.to_send;
        (index, dirtied)
    }

    /// The dirty bitmap sync at the end of a pass, where auto-converge and dirty-limit
    /// trigger. Returns true when it changed the throttle.
    fn dirty_sync(&mut self, dirtied: f64) -> bool {
        let Some(st) = self.ac.as_mut() else {
            return false;
        };
        if !st.sync(self.now, self.to_send, dirtied) {
            return false;
        }
        match self.s.throttle {
            Throttle::AutoConverge(_) => self.cpu_pct = st.pct,
            Throttle::DirtyLimit { .. } => self.dirty_limit_on = true,
            _ => {}
        }
        self.set_factors();
        self.peak = self.peak.max(self.cpu_pct);
        true
    }

    /// True when the pending bytes fit in the downtime target. Compared on the wire (with
    /// page headers) so that a switchover never overshoots the target; QEMU compares the
    /// raw RAM bytes, 0.2 % less -- immaterial.
    fn fits(&self, pending: f64) -> bool {
        self.wire(pending) <= self.threshold
    }

    /// The policy's own stop rule after pass `index`.
    fn policy_stop(&self, index: u32, pending: f64) -> Option<Stop> {
        match self.s.policy {
            Policy::Qemu => self
                .qemu_switch(index, pending)
                .or_else(|| self.max_passes_stop(index, pending)),
            Policy::Vmotion => self
                .vmotion_switch(index, pending)
                .or_else(|| self.max_passes_stop(index, pending)),
            Policy::Xen | Policy::XenSr => self.xen_stop(index, pending),
            Policy::HyperV => self
                .qemu_switch(index, pending)
                .or_else(|| self.hyperv_stop(index, pending)),
        }
    }

    /// QEMU, migration/migration.c `migration_iteration_run`: when the pending size is below
    /// `threshold_size = bandwidth * downtime_limit` (computed in
    /// `migration_update_counters`), complete; otherwise iterate, with no limit. Hyper-V
    /// switches over by the same rule.
    fn qemu_switch(&self, index: u32, pending: f64) -> Option<Stop> {
        self.fits(pending).then(|| {
            Stop::switch(
                pending,
                Ending::Converged,
                Reason::Fits {
                    pass: index,
                    pending,
                    downtime_s: self.s.downtime_s,
                },
            )
        })
    }

    /// vMotion: switch over once the remainder can be sent within the target.
    fn vmotion_switch(&self, index: u32, pending: f64) -> Option<Stop> {
        self.fits(pending).then(|| {
            Stop::switch(
                pending,
                Ending::Converged,
                Reason::SwitchoverFits {
                    pass: index,
                    pending,
                    downtime_s: self.s.downtime_s,
                },
            )
        })
    }

    /// Xen: the last iteration when fewer than 50 pages were dirtied, after the iteration
    /// limit, or once 3x RAM went out (legacy only).
    fn xen_stop(&self, index: u32, pending: f64) -> Option<Stop> {
        let few = pending < XEN_DIRTY_THRESHOLD_PAGES * self.w.page;
        let volume =
            self.s.policy == Policy::Xen && self.sent_total > XEN_LEGACY_MAX_FACTOR * self.w.mem;
        if !(few || index >= self.max_passes || volume) {
            return None;
        }
        let why = if few {
            XenStop::FewPages
        } else if volume {
            XenStop::Volume
        } else {
            XenStop::IterationLimit(self.max_passes)
        };
        let ending = if few {
            Ending::Converged
        } else {
            Ending::ForcedStop
        };
        Some(Stop::switch(
            pending,
            ending,
            Reason::Xen {
                pass: index,
                why,
                pending,
            },
        ))
    }

    /// Hyper-V: a forced stop-and-copy after its pass limit.
    fn hyperv_stop(&self, index: u32, pending: f64) -> Option<Stop> {
        (index >= self.max_passes).then(|| {
            Stop::switch(
                pending,
                Ending::ForcedStop,
                Reason::HyperVPassLimit {
                    passes: self.max_passes,
                    pending,
                },
            )
        })
    }

    /// `--max-passes` on QEMU or vMotion: not their rule, a what-if the user asked for.
    fn max_passes_stop(&self, index: u32, pending: f64) -> Option<Stop> {
        let limit = self.s.limits.max_passes.is_some_and(|n| index >= n);
        limit.then(|| {
            Stop::switch(
                pending,
                Ending::ForcedStop,
                Reason::MaxPasses {
                    pass: index,
                    pending,
                },
            )
        })
    }

    /// True while the throttle in force can still rise.
    fn throttle_can_rise(&self, index: u32) -> bool {
        match (&self.s.throttle, &self.ac) {
            (Throttle::AutoConverge(_), Some(st)) => !st.maxed(),
            (Throttle::DirtyLimit { .. }, _) => !self.dirty_limit_on,
            (Throttle::Cpu { .. }, _) => index < 2,
            _ => false,
        }
    }

    /// Not converging: the pending set no longer shrinks and no throttle can still rise.
    /// vMotion then switches over anyway (or fails); QEMU would iterate forever.
    fn stalled_stop(&self, index: u32, pending: f64, changed: bool) -> Option<Stop> {
        if self.throttle_can_rise(index) {
            return None;
        }
        // No progress: the pass left (almost) as much as the one before.
        let stalled = pending >= self.prev_pending * (1.0 - self.s.policy.min_shrink());
        // Exact test for QEMU: with the throttle fixed from now on, the next pending is
        // f(p) = U(wire(p) / g), increasing in p. If f(threshold) > threshold, then every
        // p > threshold gives f(p) >= f(threshold) > threshold: it can never fit.
        let hopeless = self.s.policy == Policy::Qemu
            && self.wire(
                self.w
                    .dirtied(self.wire(self.threshold) / self.g, &self.factors),
            ) > self.threshold;
        if !(hopeless || (stalled && !changed)) {
            return None;
        }
        match self.s.policy {
            Policy::Vmotion => Some(self.vmotion_switch_anyway(pending)),
            Policy::Qemu => Some(self.qemu_never(pending)),
            _ => None,
        }
    }

    /// vMotion switches over anyway when it cannot make progress, and fails if the
    /// switchover would exceed its 100 s maximum.
    fn vmotion_switch_anyway(&self, pending: f64) -> Stop {
        let sw = self.wire(pending) / self.g_stop;
        if sw > VMOTION_MAX_SWITCHOVER_S {
            return Stop::switch(
                pending,
                Ending::SwitchoverTooLong,
                Reason::SwitchoverTooLong {
                    pending,
                    switchover_s: sw,
                },
            );
        }
        Stop::switch(
            pending,
            Ending::ForcedStop,
            Reason::SwitchoverAnyway {
                pending,
                switchover_s: sw,
            },
        )
    }

    /// QEMU has no give-up rule: it would iterate forever.
    fn qemu_never(&self, pending: f64) -> Stop {
        Stop::switch(
            pending,
            Ending::NeverConverges,
            Reason::IteratesForever {
                pending,
                threshold: self.threshold,
                downtime_s: self.s.downtime_s,
            },
        )
    }

    /// Limits on the whole migration: KubeVirt-style progress timeout (no new low of the
    /// pending bytes for too long), the deadline or the horizon in time, the pass horizon.
    fn limit_stop(&mut self, index: u32, pending: f64) -> Option<Stop> {
        if pending < self.best_pending * (1.0 - 1e-6) {
            self.best_pending = pending;
            self.best_at = self.now;
        }
        if let Some(pt) = self.s.limits.progress_timeout_s {
            if self.now - self.best_at > pt {
                return Some(Stop::abandon(
                    Ending::Aborted,
                    Reason::NoProgress { timeout_s: pt },
                ));
            }
        }
        if self.now + pending / self.g_stop > self.horizon_s {
            return Some(match self.s.limits.deadline_s {
                Some(d) => Stop::abandon(Ending::Aborted, Reason::Deadline { deadline_s: d }),
                None => Stop::abandon(Ending::Horizon, Reason::SimulatedDay),
            });
        }
        (index >= MAX_SIM_PASSES).then(|| {
            Stop::abandon(
                Ending::Horizon,
                Reason::PassHorizon {
                    passes: MAX_SIM_PASSES,
                },
            )
        })
    }

    /// The stop-and-copy, and the outcome: downtime, totals, whether it converged within
    /// the target and the deadline.
    fn finish(self, stop: Stop) -> Outcome {
        let Stop {
            stop_bytes,
            ending,
            reason,
        } = stop;
        let (g, s) = (self.g_stop, self.s);
        let stop_bytes = self.wire(stop_bytes);
        let downtime = if stop_bytes.is_finite() && g > 0.0 {
            stop_bytes / g
        } else {
            0.0
        };
        let completes = matches!(ending, Ending::Converged | Ending::ForcedStop);
        let total = self.now + if completes { downtime } else { 0.0 };
        let within_deadline = s.limits.deadline_s.is_none_or(|d| total <= d);
        let converges = completes && downtime <= s.downtime_s * (1.0 + 1e-9) && within_deadline;
        let (ending, reason) = if completes && !within_deadline {
            (
                Ending::Aborted,
                Reason::PastDeadline {
                    total_s: total,
                    deadline_s: s.limits.deadline_s.unwrap_or(0.0),
                },
            )
        } else {
            (ending, reason)
        };
        Outcome {
            passes: self.passes,
            stop_copy_bytes: if completes { stop_bytes } else { 0.0 },
            downtime_s: if completes { downtime } else { 0.0 },
            total_time_s: total,
            total_bytes: self.sent_total + if completes { stop_bytes } else { 0.0 },
            ending,
            converges,
            peak_throttle_pct: self.peak,
            reason,
        }
    }
}
