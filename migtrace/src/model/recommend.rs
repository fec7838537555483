//! Throttle recommendations: the smallest throttle that makes a scenario converge within the
//! downtime target (and the deadline, if any), and the exact settings that apply it in QEMU
//! (`migrate-set-parameters` / `migrate-set-capabilities`), libvirt (`virsh`), KubeVirt
//! (`MigrationPolicy`), vSphere, Xen and Hyper-V. Pure: it only runs the simulator.
use serde::Serialize;
use serde_json::{json, Value};

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

/// The recommendation for one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    /// `none` (no throttle needed), `auto-converge`, `sdps`, `dirty-limit`, or
    /// `unreachable` (no throttle the policy offers makes it converge).
    pub kind: String,
    /// Throttle level: % for CPU throttles, MB/s per vCPU for dirty-limit.
    pub level: Option<f64>,
    pub level_unit: Option<String>,
    /// Settings to apply, per tool.
    pub settings: Value,
    /// The simulation with the recommended throttle.
    pub converges: bool,
    pub passes: usize,
    pub total_time_s: f64,
    pub downtime_s: f64,
    pub peak_throttle_pct: f64,
    /// Plain-words explanation.
    pub note: String,
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
            "converges without a throttle".into(),
        );
    }
    let mut tried = Vec::new();
    for &k in kinds {
        let found = match k {
            ThrottleKind::None => None,
            ThrottleKind::AutoConverge | ThrottleKind::Sdps => search_pct(w, base, k),
            ThrottleKind::DirtyLimit => search_dirty_limit(w, base),
        };
        tried.push(k.name());
        if let Some((level, o)) = found {
            let note = match k {
                ThrottleKind::DirtyLimit => format!(
                    "a dirty limit of {level:.0} MB/s per vCPU is the loosest that converges"
                ),
                _ => format!("{level:.0} % is the smallest CPU throttle that converges"),
            };
            return build(k, Some(level), &o, base, ctx, note);
        }
    }
    let busy = w.writers.iter().map(|x| x.busy).fold(0.0, f64::max);
    let mut note = format!(
        "no {} level makes it converge within the targets",
        tried.join(" or ")
    );
    if busy < 0.5
        && kinds
            .iter()
            .any(|k| matches!(k, ThrottleKind::AutoConverge | ThrottleKind::Sdps))
    {
        note.push_str(&format!(
            "; the writers are on CPU only {:.1} % of the time, so a CPU throttle barely slows them",
            busy * 100.0
        ));
    }
    note.push_str("; use a faster link, post-copy, or a longer downtime");
    Recommendation {
        kind: "unreachable".into(),
        level: None,
        level_unit: None,
        settings: json!({}),
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
    note: String,
) -> Recommendation {
    Recommendation {
        kind: kind.name().into(),
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

/// The exact settings for a throttle, per tool.
pub fn settings(kind: ThrottleKind, level: f64, base: &Scenario, ctx: &SettingsContext) -> Value {
    let downtime_ms = (base.downtime_s * 1000.0).round() as u64;
    // The model assumes the link is the only limit; QEMU's own default `max-bandwidth` is
    // 128 MiB/s (MAX_THROTTLE in migration/options.c), so it must be raised to the link.
    let link_bytes = (base.link_bits / 8.0).round() as u64;
    let link_mib = link_bytes / (1024 * 1024);
    let lvl = level.round() as u64;
    match base.policy {
        Policy::Qemu => {
            let mut params = json!({
                "downtime-limit": downtime_ms,
                "max-bandwidth": link_bytes,
            });
            let mut caps: Vec<Value> = Vec::new();
            let mut virsh = vec![format!("virsh migrate-setmaxdowntime DOMAIN {downtime_ms}")];
            let mut flags = format!("virsh migrate --live --bandwidth {link_mib}");
            let mut kubevirt = json!({});
            let mut notes: Vec<String> = Vec::new();
            match kind {
                ThrottleKind::None => {}
                ThrottleKind::AutoConverge | ThrottleKind::Sdps => {
                    let initial = lvl.min(20);
                    caps.push(json!({"capability": "auto-converge", "state": true}));
                    params["cpu-throttle-initial"] = json!(initial);
                    params["cpu-throttle-increment"] = json!(10);
                    params["max-cpu-throttle"] = json!(lvl);
                    flags.push_str(&format!(
                        " --auto-converge --auto-converge-initial {initial} --auto-converge-increment 10"
                    ));
                    if lvl != 99 {
                        virsh.push(format!(
                            "virsh qemu-monitor-command DOMAIN '{{\"execute\":\"migrate-set-parameters\",\"arguments\":{{\"max-cpu-throttle\":{lvl}}}}}'"
                        ));
                        notes.push("libvirt has no flag for max-cpu-throttle; set it over QMP as shown (this taints the domain)".into());
                    }
                    kubevirt["allowAutoConverge"] = json!(true);
                    notes.push("KubeVirt's allowAutoConverge uses QEMU's defaults (20 %, +10 %, up to 99 %): it cannot cap the throttle".into());
                }
                ThrottleKind::DirtyLimit => {
                    caps.push(json!({"capability": "dirty-limit", "state": true}));
                    params["vcpu-dirty-limit"] = json!(lvl);
                    params["x-vcpu-dirty-limit-period"] = json!(1000);
                    virsh.push(format!(
                        "virsh qemu-monitor-command DOMAIN '{{\"execute\":\"migrate-set-parameters\",\"arguments\":{{\"vcpu-dirty-limit\":{lvl}}}}}'"
                    ));
                    notes.push("dirty-limit needs QEMU 8.1+ with the KVM dirty ring (-accel kvm,dirty-ring-size=...); libvirt and KubeVirt expose no setting for it".into());
                }
            }
            flags.push_str(" DOMAIN qemu+ssh://DEST/system");
            virsh.push(flags);
            if let Some(c) = ctx.kubevirt_completion_per_gib {
                kubevirt["completionTimeoutPerGiB"] = json!(c);
            }
            kubevirt["bandwidthPerMigration"] = json!(format!("{link_mib}Mi"));
            let mut out = json!({
                "qemu": {
                    "migrate-set-capabilities": caps,
                    "migrate-set-parameters": params,
                },
                "virsh": virsh,
                "kubevirt_migration_policy": {
                    "apiVersion": "migrations.kubevirt.io/v1alpha1",
                    "kind": "MigrationPolicy",
                    "spec": kubevirt,
                },
                "notes": notes,
            });
            if let Some(n) = ctx.nova_completion_timeout {
                out["nova"] = json!({
                    "[libvirt] live_migration_completion_timeout": n,
                    "[libvirt] live_migration_permit_auto_converge": kind == ThrottleKind::AutoConverge,
                    "[libvirt] live_migration_bandwidth": link_mib,
                });
            }
            out
        }
        Policy::Vmotion => json!({
            "vsphere": if kind == ThrottleKind::None {
                "no change needed".to_string()
            } else {
                format!("SDPS (Stun During Page Send) is on by default since vSphere 5.0 (advanced setting Migrate.SdpsEnabled = 1); vMotion chooses the level itself, the model needed {lvl} %")
            }
        }),
        Policy::Xen | Policy::XenSr => {
            // Credit scheduler cap: % of one physical CPU for the whole domain, 0 = none.
            let cap = (100 - lvl.min(99)) * ctx.vcpus.max(1) as u64;
            if kind == ThrottleKind::None {
                json!({"xl": []})
            } else {
                json!({"xl": [
                    format!("xl sched-credit -d DOMAIN -c {cap}"),
                    "xl migrate DOMAIN DEST".to_string(),
                    "xl sched-credit -d DOMAIN -c 0   # remove the cap after migration".to_string(),
                ]})
            }
        }
        Policy::HyperV => {
            if kind == ThrottleKind::None {
                json!({"powershell": []})
            } else {
                json!({"powershell": [
                    format!("Set-VMProcessor -VMName NAME -Maximum {}", 100 - lvl.min(99)),
                    "Move-VM -Name NAME -DestinationHost DEST".to_string(),
                    "Set-VMProcessor -VMName NAME -Maximum 100".to_string(),
                ]})
            }
        }
    }
}
