//! Throttle recommendations: the smallest throttle that makes a scenario converge within the
//! downtime target (and the deadline, if any), and the exact settings that apply it in QEMU
//! (`migrate-set-parameters` / `migrate-set-capabilities`), libvirt (`virsh`), KubeVirt
//! (`MigrationPolicy`), vSphere, Xen and Hyper-V. Pure: it only runs the simulator.
use serde::Serialize;

use super::sim::{simulate, AutoConverge, Outcome, Policy, Scenario, Throttle};
use super::workload::Workload;

/// Which throttle family to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleKind {
    None,
    AutoConverge,
    /// A constant CPU throttle: vMotion SDPS, a Xen credit cap, a Hyper-V processor limit.
    Sdps,
    DirtyLimit,
}

impl ThrottleKind {
    pub fn name(self) -> &'static str {
        match self {
            ThrottleKind::None => "none",
            ThrottleKind::AutoConverge => "auto-converge",
            ThrottleKind::Sdps => "sdps",
            ThrottleKind::DirtyLimit => "dirty-limit",
        }
    }
}

/// QEMU counts the `vcpu-dirty-limit` megabyte as 2^20 bytes (`system/dirtylimit.c` works
/// in `>> 20` units).
pub const DIRTY_LIMIT_MB: f64 = 1024.0 * 1024.0;

/// What is recommended: no throttle, a throttle family, or nothing that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecommendationKind {
    /// Converges without a throttle.
    None,
    AutoConverge,
    Sdps,
    DirtyLimit,
    /// No throttle the policy offers makes it converge.
    Unreachable,
}

impl RecommendationKind {
    /// Name as in the JSON output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RecommendationKind::None => "none",
            RecommendationKind::AutoConverge => "auto-converge",
            RecommendationKind::Sdps => "sdps",
            RecommendationKind::DirtyLimit => "dirty-limit",
            RecommendationKind::Unreachable => "unreachable",
        }
    }
}

impl From<ThrottleKind> for RecommendationKind {
    fn from(k: ThrottleKind) -> Self {
        match k {
            ThrottleKind::None => RecommendationKind::None,
            ThrottleKind::AutoConverge => RecommendationKind::AutoConverge,
            ThrottleKind::Sdps => RecommendationKind::Sdps,
            ThrottleKind::DirtyLimit => RecommendationKind::DirtyLimit,
        }
    }
}

/// The recommendation for one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub kind: RecommendationKind,
    /// Throttle level: % for CPU throttles, MB/s per vCPU for dirty-limit.
    pub level: Option<f64>,
    pub level_unit: Option<String>,
    /// Settings to apply, per tool. Not serialised with the rest: `output::predict` renders them.
    #[serde(skip)]
    pub settings: Settings,
    /// The simulation with the recommended throttle.
    pub converges: bool,
    pub passes: usize,
    pub total_time_s: f64,
    pub downtime_s: f64,
    pub peak_throttle_pct: f64,
    /// Why this recommendation. Not serialised with the rest: `output::predict` puts it into words.
    #[serde(skip)]
    pub note: Note,
}

/// Why a recommendation is what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    /// It converges without a throttle.
    NoThrottleNeeded,
    /// The smallest CPU throttle that converges, %.
    SmallestCpuThrottle { pct: f64 },
    /// The loosest dirty limit that converges, MB/s per vCPU.
    LoosestDirtyLimit { mb_per_sec: f64 },
    /// No level of the families tried converges; `cpu_busy` is the busiest writer's time
    /// on CPU when it is low enough (under 0.5) to explain why a CPU throttle fails.
    Unreachable {
        tried: Vec<ThrottleKind>,
        cpu_busy: Option<f64>,
    },
}

/// The throttle with a level, as the simulator runs it, for each family.
pub fn throttle_at(kind: ThrottleKind, level: f64) -> Throttle {
    match kind {
        ThrottleKind::None => Throttle::None,
        // Keep QEMU's ramp (start at 20 %, +10 % per trigger) but never go past `level`:
        // `max-cpu-throttle` is the level.
        ThrottleKind::AutoConverge => Throttle::AutoConverge(AutoConverge {
            initial_pct: level.min(20.0),
            max_pct: level,
            ..AutoConverge::default()
        }),
        ThrottleKind::Sdps => Throttle::Cpu { pct: level },
        ThrottleKind::DirtyLimit => Throttle::DirtyLimit {
            bytes_per_sec_per_vcpu: level * DIRTY_LIMIT_MB,
        },
    }
}

/// Families to try, in order, when the user did not choose one.
pub fn candidates(policy: Policy) -> &'static [ThrottleKind] {
    match policy {
        // QEMU: auto-converge first (works everywhere, also through libvirt and KubeVirt),
        // then dirty-limit (QEMU 8.1+, needs the KVM dirty ring) which also slows writers
        // that a CPU throttle cannot, such as paced ones.
        Policy::Qemu => &[ThrottleKind::AutoConverge, ThrottleKind::DirtyLimit],
        // vMotion has SDPS; Xen and Hyper-V have only a CPU cap.
        _ => &[ThrottleKind::Sdps],
    }
}

/// Smallest integer CPU throttle % in 1..=99 that converges, by bisection (convergence is
/// monotone in the throttle for these models; the final level is re-simulated, so a
/// non-monotone case can only make the search miss a level, never report a wrong one).
fn search_pct(w: &Workload, base: &Scenario, kind: ThrottleKind) -> Option<(f64, Outcome)> {
    let run = |pct: f64| {
        simulate(
            w,
            &Scenario {
                throttle: throttle_at(kind, pct),
                ..*base
            },
        )
    };
    let top = run(99.0);
    if !top.converges {
        return None;
    }
    let (mut lo, mut hi) = (0u32, 99u32); // lo fails (0 = no throttle), hi converges
    let mut best = top;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let o = run(mid as f64);
        if o.converges {
            hi = mid;
            best = o;
        } else {
            lo = mid;
        }
    }
    Some((hi as f64, best))
}

/// Largest integer dirty limit (MB/s per vCPU, at least 1, QEMU's minimum) that converges.
fn search_dirty_limit(w: &Workload, base: &Scenario) -> Option<(f64, Outcome)> {
    let run = |mb: f64| {
        simulate(
            w,
            &Scenario {
                throttle: throttle_at(ThrottleKind::DirtyLimit, mb),
                ..*base
            },
        )
    };
    let low = run(1.0);
    if !low.converges {
        return None;
    }
    let max_share = w.writers.iter().map(|x| x.share).fold(0.0, f64::max);
    // Past the busiest writer's own rate the limit does nothing.
    let top = ((w.curve.rate() * max_share) / DIRTY_LIMIT_MB)
        .ceil()
        .max(1.0) as u64;
    let (mut lo, mut hi) = (1u64, top + 1); // lo converges, hi is "no limit"
    let mut best = low;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let o = run(mid as f64);
        if o.converges {
            lo = mid;
            best = o;
        } else {
            hi = mid;
        }
    }
    Some((lo as f64, best))
}

/// Finds the recommendation for `base` (whose own throttle is ignored). `baseline` is the
/// simulation without any throttle; `kinds` the families to try, in order.
pub fn recommend(
    w: &Workload,
    base: &Scenario,
    baseline: &Outcome,
    kinds: &[ThrottleKind],
    ctx: &SettingsContext,
) -> Recommendation {
    if baseline.converges {
        return build(
            ThrottleKind::None,
            None,
            baseline,
            base,
            ctx,
            Note::NoThrottleNeeded,
        );
    }
    let mut tried = Vec::new();
    for &k in kinds {
        let found = match k {
            ThrottleKind::None => None,
            ThrottleKind::AutoConverge | ThrottleKind::Sdps => search_pct(w, base, k),
            ThrottleKind::DirtyLimit => search_dirty_limit(w, base),
        };
        tried.push(k);
        if let Some((level, o)) = found {
            let note = match k {
                ThrottleKind::DirtyLimit => Note::LoosestDirtyLimit { mb_per_sec: level },
                _ => Note::SmallestCpuThrottle { pct: level },
            };
            return build(k, Some(level), &o, base, ctx, note);
        }
    }
    let busy = w.writers.iter().map(|x| x.busy).fold(0.0, f64::max);
    let cpu_kinds = kinds
        .iter()
        .any(|k| matches!(k, ThrottleKind::AutoConverge | ThrottleKind::Sdps));
    let note = Note::Unreachable {
        tried,
        cpu_busy: (busy < 0.5 && cpu_kinds).then_some(busy),
    };
    Recommendation {
        kind: RecommendationKind::Unreachable,
        level: None,
        level_unit: None,
        settings: Settings::Nothing,
        converges: false,
        passes: baseline.passes.len(),
        total_time_s: baseline.total_time_s,
        downtime_s: baseline.downtime_s,
        peak_throttle_pct: baseline.peak_throttle_pct,
        note,
    }
}

/// What the settings mapping needs besides the throttle.
#[derive(Clone, Debug, Default)]
pub struct SettingsContext {
    /// Number of vCPUs (for the Xen credit cap).
    pub vcpus: u32,
    /// KubeVirt `completionTimeoutPerGiB`, when `--kubevirt`.
    pub kubevirt_completion_per_gib: Option<u64>,
    /// Nova `live_migration_completion_timeout`, when `--nova`.
    pub nova_completion_timeout: Option<u64>,
}

fn build(
    kind: ThrottleKind,
    level: Option<f64>,
    o: &Outcome,
    base: &Scenario,
    ctx: &SettingsContext,
    note: Note,
) -> Recommendation {
    Recommendation {
        kind: kind.into(),
        level,
        level_unit: level.map(|_| {
            if kind == ThrottleKind::DirtyLimit {
                "MB/s per vCPU".into()
            } else {
                "%".into()
            }
        }),
        settings: settings(kind, level.unwrap_or(0.0), base, ctx),
        converges: o.converges,
        passes: o.passes.len(),
        total_time_s: o.total_time_s,
        downtime_s: o.downtime_s,
        peak_throttle_pct: o.peak_throttle_pct,
        note,
    }
}

/// The exact settings that apply a throttle, per tool, as data; `output::predict` renders
/// them as JSON and as shell commands.
#[derive(Clone, Debug, PartialEq)]
pub enum Settings {
    /// Nothing to apply: no throttle the policy offers makes it converge.
    Nothing,
    /// QEMU over QMP, libvirt (`virsh`), KubeVirt and, with `--nova`, nova.conf.
    Qemu(Box<QemuSettings>),
    /// vSphere: SDPS at the level the model needed (`None`: no change needed).
    Vsphere { sdps_pct: Option<u64> },
    /// Xen: a credit scheduler cap during the migration (`None`: no change needed).
    Xen { credit_cap: Option<u64> },
    /// Hyper-V: a processor maximum, % (`None`: no change needed).
    HyperV { max_pct: Option<u64> },
}

/// QEMU's settings and their libvirt, KubeVirt and Nova equivalents.
#[derive(Clone, Debug, PartialEq)]
pub struct QemuSettings {
    /// Capabilities to enable with `migrate-set-capabilities`.
    pub capabilities: Vec<&'static str>,
    pub parameters: QmpParameters,
    /// The libvirt commands, in order.
    pub virsh: Vec<Virsh>,
    pub kubevirt: KubevirtSpec,
    pub nova: Option<NovaConf>,
    /// What the settings cannot do, in plain words.
    pub notes: Vec<&'static str>,
}

/// QMP `migrate-set-parameters` arguments; `None` is not set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QmpParameters {
    pub downtime_limit_ms: u64,
    /// Bytes per second.
    pub max_bandwidth: u64,
    pub cpu_throttle_initial: Option<u64>,
    pub cpu_throttle_increment: Option<u64>,
    pub max_cpu_throttle: Option<u64>,
    /// MB/s per vCPU.
    pub vcpu_dirty_limit: Option<u64>,
    /// Milliseconds.
    pub vcpu_dirty_limit_period_ms: Option<u64>,
}

impl QmpParameters {
    /// The parameters that are set, under their QMP names, sorted by name.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("downtime-limit", Some(self.downtime_limit_ms)),
            ("max-bandwidth", Some(self.max_bandwidth)),
            ("cpu-throttle-initial", self.cpu_throttle_initial),
            ("cpu-throttle-increment", self.cpu_throttle_increment),
            ("max-cpu-throttle", self.max_cpu_throttle),
            ("vcpu-dirty-limit", self.vcpu_dirty_limit),
            ("x-vcpu-dirty-limit-period", self.vcpu_dirty_limit_period_ms),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect::<Vec<_>>();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

/// One libvirt command.
#[derive(Clone, Debug, PartialEq)]
pub enum Virsh {
    /// `virsh migrate-setmaxdowntime`, milliseconds.
    SetMaxDowntime { ms: u64 },
    /// A QMP parameter libvirt has no flag for, set through `virsh qemu-monitor-command`
    /// (this taints the domain).
    QmpParameter { name: &'static str, value: u64 },
    /// `virsh migrate --live`, with the bandwidth in MiB/s and, for auto-converge, its
    /// initial step and increment, %.
    Migrate {
        bandwidth_mib: u64,
        auto_converge: Option<(u64, u64)>,
    },
}

/// The `spec` of a KubeVirt `MigrationPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct KubevirtSpec {
    /// `allowAutoConverge`, set only when the throttle is a CPU throttle.
    pub allow_auto_converge: Option<bool>,
    /// `bandwidthPerMigration`, MiB/s.
    pub bandwidth_mib: u64,
    /// `completionTimeoutPerGiB`, when `--kubevirt`.
    pub completion_timeout_per_gib: Option<u64>,
}

/// The `[libvirt]` options of nova.conf, when `--nova`.
#[derive(Clone, Debug, PartialEq)]
pub struct NovaConf {
    pub completion_timeout: u64,
    pub permit_auto_converge: bool,
    /// MiB/s.
    pub bandwidth_mib: u64,
}

/// The exact settings for a throttle, per tool.
pub fn settings(
    kind: ThrottleKind,
    level: f64,
    base: &Scenario,
    ctx: &SettingsContext,
) -> Settings {
    let lvl = level.round() as u64;
    let changed = (kind != ThrottleKind::None).then_some(lvl);
    match base.policy {
        Policy::Qemu => Settings::Qemu(Box::new(qemu_settings(kind, lvl, base, ctx))),
        Policy::Vmotion => Settings::Vsphere { sdps_pct: changed },
        // Credit scheduler cap: % of one physical CPU for the whole domain, 0 = none.
        Policy::Xen | Policy::XenSr => Settings::Xen {
            credit_cap: changed.map(|l| (100 - l.min(99)) * ctx.vcpus.max(1) as u64),
        },
        Policy::HyperV => Settings::HyperV {
            max_pct: changed.map(|l| 100 - l.min(99)),
        },
    }
}

/// QEMU's settings for a throttle at level `lvl` (% or MB/s per vCPU).
fn qemu_settings(
    kind: ThrottleKind,
    lvl: u64,
    base: &Scenario,
    ctx: &SettingsContext,
) -> QemuSettings {
    let downtime_ms = (base.downtime_s * 1000.0).round() as u64;
    // The model assumes the link is the only limit; QEMU's own default `max-bandwidth` is
    // 128 MiB/s (MAX_THROTTLE in migration/options.c), so it must be raised to the link.
    let link_bytes = (base.link_bits / 8.0).round() as u64;
    // Whole MiB/s for libvirt, KubeVirt and Nova, where 0 means "no limit": at least 1.
    let link_mib = (link_bytes / (1024 * 1024)).max(1);
    let mut q = QemuSettings {
        capabilities: Vec::new(),
        parameters: QmpParameters {
            downtime_limit_ms: downtime_ms,
            max_bandwidth: link_bytes,
            ..QmpParameters::default()
        },
        virsh: vec![Virsh::SetMaxDowntime { ms: downtime_ms }],
        kubevirt: KubevirtSpec {
            allow_auto_converge: None,
            bandwidth_mib: link_mib,
            completion_timeout_per_gib: ctx.kubevirt_completion_per_gib,
        },
        nova: ctx.nova_completion_timeout.map(|n| NovaConf {
            completion_timeout: n,
            permit_auto_converge: kind == ThrottleKind::AutoConverge,
            bandwidth_mib: link_mib,
        }),
        notes: Vec::new(),
    };
    let mut auto_converge = None;
    match kind {
        ThrottleKind::None => {}
        ThrottleKind::AutoConverge | ThrottleKind::Sdps => {
            let initial = lvl.min(20);
            q.capabilities.push("auto-converge");
            q.parameters.cpu_throttle_initial = Some(initial);
            q.parameters.cpu_throttle_increment = Some(10);
            q.parameters.max_cpu_throttle = Some(lvl);
            auto_converge = Some((initial, 10));
            if lvl != 99 {
                q.virsh.push(Virsh::QmpParameter {
                    name: "max-cpu-throttle",
                    value: lvl,
                });
                q.notes.push("libvirt has no flag for max-cpu-throttle; set it over QMP as shown (this taints the domain)");
            }
            q.kubevirt.allow_auto_converge = Some(true);
            q.notes.push("KubeVirt's allowAutoConverge uses QEMU's defaults (20 %, +10 %, up to 99 %): it cannot cap the throttle");
        }
        ThrottleKind::DirtyLimit => {
            q.capabilities.push("dirty-limit");
            q.parameters.vcpu_dirty_limit = Some(lvl);
            q.parameters.vcpu_dirty_limit_period_ms = Some(1000);
            q.virsh.push(Virsh::QmpParameter {
                name: "vcpu-dirty-limit",
                value: lvl,
            });
            q.notes.push("dirty-limit needs QEMU 8.1+ with the KVM dirty ring (-accel kvm,dirty-ring-size=...); libvirt and KubeVirt expose no setting for it");
        }
    }
    q.virsh.push(Virsh::Migrate {
        bandwidth_mib: link_mib,
        auto_converge,
    });
    q
}
