//! The typed input of a prediction ([`PredictConfig`]: numbers and enums, no strings to
//! parse) and its lowering into the model's inputs ([`plan`]). `predict` builds the config
//! from its flags, `passes` from the migration's QMP parameters, `demo` from the profile it
//! just measured: one path into the grid for all three.
//!
//! What a plan notes about its input (an assumption it made, a limit it applied) comes back
//! as [`PlanNote`]s, which the renderers put in words; what is wrong with the input comes back
//! as a [`PlanError`], whose messages name the `predict` flag that sets the value, since
//! that is where users set it.
use std::path::PathBuf;

use thiserror::Error;

use super::recommend::{candidates, SettingsContext, ThrottleKind, DIRTY_LIMIT_MB};
use super::sim::{
    AutoConverge, Limits, Policy, Throttle, KUBEVIRT_COMPLETION_PER_GIB, NOVA_COMPLETION_PER_GIB,
};
use super::workload::Workload;
use super::GridInput;
use crate::profile::{Profile, ThreadCounts};
use crate::units;

/// Default fraction of the link rate that carries migration payload: Ethernet with a
/// 1500-byte MTU carries 1448 bytes of TCP payload (20 IP + 20 TCP + 12 timestamp option)
/// per 1538 bytes on the wire (preamble 8, header 14, FCS 4, gap 12): 1448/1538 = 0.941.
/// The 8-byte page headers of the migration stream are counted separately. Jumbo frames
/// (9000) give 0.99; `--efficiency` overrides.
pub const DEFAULT_EFFICIENCY: f64 = 0.94;

/// Most vCPUs: KVM on x86 allows up to 4096 (CONFIG_KVM_MAX_NR_VCPUS); more is a typo, and
/// the model keeps one entry per writer.
pub const MAX_VCPUS: u32 = 4096;

/// Most cells (links x downtimes) in one run. Each cell keeps its passes and its
/// recommendation search; past this the report is unreadable and a typo costs gigabytes
/// (1000 links x 100 downtimes took 1.5 GB and 5 s), so it is refused, not streamed.
pub const MAX_CELLS: usize = 1000;

/// What the guest does: a measured profile, or numbers.
#[derive(Clone, Debug)]
pub enum WorkloadInput {
    /// A `watch --profile-out` profile, loaded, and the path it was read from.
    Profile {
        profile: Box<Profile>,
        path: PathBuf,
    },
    /// A dirty rate in bytes per second over a writable working set (`None`: all memory),
    /// hit at random or in sweeps; needs [`PredictConfig::mem`].
    Rate {
        bytes_per_sec: f64,
        wws: Option<f64>,
        sweep: bool,
    },
}

/// The throttle to simulate, before its defaults are filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottleConfig {
    pub kind: ThrottleKind,
    /// The sdps level (default 50) or auto-converge's max-cpu-throttle (default 99), in %.
    pub pct: Option<f64>,
    /// auto-converge's cpu-throttle-tailslow.
    pub tailslow: bool,
    /// dirty-limit's per-vCPU cap in bytes per second (default QEMU's 1 MB/s).
    pub dirty_limit: Option<f64>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            kind: ThrottleKind::None,
            pct: None,
            tailslow: false,
            dirty_limit: None,
        }
    }
}

/// A limit on the whole migration, from the user or an orchestrator's rules.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Deadline {
    #[default]
    None,
    /// Abort when not complete within this many seconds.
    At(f64),
    /// KubeVirt's completion and progress timeouts.
    Kubevirt,
    /// OpenStack Nova's completion timeout.
    Nova,
}

/// Everything a prediction needs, typed.
#[derive(Clone, Debug)]
pub struct PredictConfig {
    pub workload: WorkloadInput,
    /// Link rates in bits per second; empty: the profile's measured headroom.
    pub links_bits: Vec<f64>,
    pub stop_copy_bits: Option<f64>,
    /// Downtime targets in seconds; empty: the policy's default.
    pub downtimes_s: Vec<f64>,
    pub policy: Policy,
    pub throttle: ThrottleConfig,
    pub deadline: Deadline,
    pub max_passes: Option<u32>,
    /// Fraction of the link that carries payload.
    pub efficiency: f64,
    /// Guest memory in bytes: with a profile, overrides its size.
    pub mem: Option<f64>,
    pub vcpus: Option<u32>,
    pub busy: Option<f64>,
    pub zero_share: Option<f64>,
}

impl PredictConfig {
    /// `predict --profile` with every other option at its default.
    pub fn for_profile(profile: Profile, path: PathBuf, links_bits: Vec<f64>) -> PredictConfig {
        let profile = Box::new(profile);
        PredictConfig::with_defaults(WorkloadInput::Profile { profile, path }, links_bits)
    }

    /// `predict --mem --dirty-rate [--wws]` (random writes) with every other option at its
    /// default.
    pub fn for_rate(
        mem: f64,
        bytes_per_sec: f64,
        wws: Option<f64>,
        links_bits: Vec<f64>,
    ) -> PredictConfig {
        let workload = WorkloadInput::Rate {
            bytes_per_sec,
            wws,
            sweep: false,
        };
        PredictConfig {
            mem: Some(mem),
            ..PredictConfig::with_defaults(workload, links_bits)
        }
    }

    fn with_defaults(workload: WorkloadInput, links_bits: Vec<f64>) -> PredictConfig {
        PredictConfig {
            workload,
            links_bits,
            stop_copy_bits: None,
            downtimes_s: Vec::new(),
            policy: Policy::Qemu,
            throttle: ThrottleConfig::default(),
            deadline: Deadline::None,
            max_passes: None,
            efficiency: DEFAULT_EFFICIENCY,
            mem: None,
            vcpus: None,
            busy: None,
            zero_share: None,
        }
    }
}

/// What a plan assumed or applied, for the report's caveats.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanNote {
    /// No link given: the profile's measured headroom, taken as a link of `as_link_bits`.
    HeadroomLink {
        iface: Option<String>,
        headroom_bytes_per_sec: f64,
        link_bits: Option<f64>,
        link_efficiency: f64,
        other_tx_bytes_per_sec: f64,
        as_link_bits: f64,
        efficiency: f64,
    },
    /// The profile has no growth curve.
    NoGrowthCurve,
    /// A caveat the profile carries from its watch.
    Profile(String),
    /// The per-thread shares are write-fault counts.
    WriteFaultShares,
    /// No working set given with a rate.
    NoWws,
    /// No busy fraction given with a rate.
    NoBusy,
    /// KubeVirt's timeouts for this much memory.
    Kubevirt { gib: f64 },
    /// Nova's timeout for this much memory.
    Nova { gib: f64 },
}

/// What is wrong with a config.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum PlanError {
    #[error("missing --link: give the link rate, e.g. --link 10g (the profile has no measured link headroom; `watch --iface IF` records one)")]
    NoHeadroom,
    #[error("missing --link: give the link rate, e.g. --link 10g or --link 10g,25g,40g")]
    NoLink,
    #[error("--stop-copy-rate ({}) is below --link ({}): QEMU lifts max-bandwidth for the stop-and-copy, so it never runs slower than the live passes", units::fmt_link(*.stop_copy), units::fmt_link(*.link))]
    StopCopyBelowLink { stop_copy: f64, link: f64 },
    #[error("{links} links x {downtimes} downtimes is {} cells; at most {MAX_CELLS} in one run (split the grid)", links * downtimes)]
    TooManyCells { links: usize, downtimes: usize },
    #[error("missing --mem: --dirty-rate needs the guest memory size, e.g. --mem 128GiB")]
    NoMem,
    #[error("--wws ({}) is larger than --mem ({})", units::fmt_bytes(*.wws), units::fmt_bytes(*.mem))]
    WwsOverMem { wws: f64, mem: f64 },
    #[error("--throttle {} is a QEMU feature; with --policy {} use --throttle sdps (a CPU throttle or cap)", .kind.name(), .policy.name())]
    QemuThrottle { kind: ThrottleKind, policy: Policy },
}

/// The model's inputs for a config, and what was noted on the way.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workload: Workload,
    pub input: GridInput,
    /// Where the workload came from, in words.
    pub source: String,
    pub notes: Vec<PlanNote>,
}

/// Checks a config and lowers it into the workload and the grid's input.
pub fn plan(cfg: &PredictConfig) -> Result<Plan, PlanError> {
    let mut notes = Vec::new();
    let links = links_or_headroom(cfg, &mut notes)?;
    if let Some(r) = cfg.stop_copy_bits {
        if let Some(l) = links.iter().copied().find(|&l| l > r) {
            return Err(PlanError::StopCopyBelowLink {
                stop_copy: r,
                link: l,
            });
        }
    }
    let mut downtimes = cfg.downtimes_s.clone();
    if downtimes.is_empty() {
        downtimes.push(cfg.policy.default_downtime_s());
    }
    if links.len().saturating_mul(downtimes.len()) > MAX_CELLS {
        return Err(PlanError::TooManyCells {
            links: links.len(),
            downtimes: downtimes.len(),
        });
    }
    let (workload, source) = workload(cfg, &mut notes)?;
    let throttle = throttle(cfg.policy, &cfg.throttle)?;
    let kind = cfg.throttle.kind;
    let recommend_kinds = if kind == ThrottleKind::None {
        candidates(cfg.policy).to_vec()
    } else {
        vec![kind]
    };
    let (limits, settings) = limits(cfg, &workload, &mut notes);
    let input = GridInput {
        links_bits: links,
        stop_copy_bits: cfg.stop_copy_bits,
        downtimes_s: downtimes,
        efficiency: cfg.efficiency,
        policy: cfg.policy,
        throttle,
        recommend_kinds,
        limits,
        settings,
    };
    Ok(Plan {
        workload,
        input,
        source,
        notes,
    })
}

/// The links; without them, a profile's measured headroom (`watch --iface`) as the one
/// link: the model sends at link x efficiency, so the link is headroom / efficiency.
fn links_or_headroom(
    cfg: &PredictConfig,
    notes: &mut Vec<PlanNote>,
) -> Result<Vec<f64>, PlanError> {
    if !cfg.links_bits.is_empty() {
        return Ok(cfg.links_bits.clone());
    }
    let WorkloadInput::Profile { profile, .. } = &cfg.workload else {
        return Err(PlanError::NoLink);
    };
    let Some((l, h)) = profile
        .link
        .as_ref()
        .and_then(|l| Some((l, l.headroom_bytes_per_sec.filter(|&h| h > 0.0)?)))
    else {
        return Err(PlanError::NoHeadroom);
    };
    let eff = cfg.efficiency;
    notes.push(PlanNote::HeadroomLink {
        iface: l.iface.clone(),
        headroom_bytes_per_sec: h,
        link_bits: l.link_bits,
        link_efficiency: l.efficiency,
        other_tx_bytes_per_sec: l.tx_bytes_per_sec.unwrap_or(0.0),
        as_link_bits: h * 8.0 / eff,
        efficiency: eff,
    });
    Ok(vec![h * 8.0 / eff])
}

/// The workload, and where it came from in words.
fn workload(
    cfg: &PredictConfig,
    notes: &mut Vec<PlanNote>,
) -> Result<(Workload, String), PlanError> {
    match &cfg.workload {
        WorkloadInput::Profile { profile: p, path } => {
            if p.growth.is_empty() {
                notes.push(PlanNote::NoGrowthCurve);
            }
            notes.extend(p.caveats.iter().cloned().map(PlanNote::Profile));
            if p.thread_counts == ThreadCounts::WriteFaults && !p.threads.is_empty() {
                notes.push(PlanNote::WriteFaultShares);
            }
            let w = Workload::from_profile(p, cfg.mem, cfg.busy, cfg.vcpus, cfg.zero_share);
            let source = format!(
                "profile {} (backend {}, {} pid {})",
                path.display(),
                p.backend,
                p.target.comm,
                p.target.pid
            );
            Ok((w, source))
        }
        &WorkloadInput::Rate {
            bytes_per_sec,
            wws,
            sweep,
        } => {
            let mem = cfg.mem.ok_or(PlanError::NoMem)?;
            match wws {
                Some(w) if w > mem => return Err(PlanError::WwsOverMem { wws: w, mem }),
                Some(_) => {}
                None => notes.push(PlanNote::NoWws),
            }
            if cfg.busy.is_none() {
                notes.push(PlanNote::NoBusy);
            }
            let w = Workload::synthetic_with(
                mem,
                bytes_per_sec,
                wws,
                cfg.vcpus.unwrap_or(1),
                cfg.busy.unwrap_or(1.0),
                cfg.zero_share.unwrap_or(0.0),
                sweep,
            );
            Ok((w, "numbers (--mem, --dirty-rate, --wws)".to_string()))
        }
    }
}

/// The throttle to simulate with its defaults, checked against the policy.
fn throttle(policy: Policy, t: &ThrottleConfig) -> Result<Throttle, PlanError> {
    if matches!(
        t.kind,
        ThrottleKind::AutoConverge | ThrottleKind::DirtyLimit
    ) && policy != Policy::Qemu
    {
        return Err(PlanError::QemuThrottle {
            kind: t.kind,
            policy,
        });
    }
    Ok(match t.kind {
        ThrottleKind::None => Throttle::None,
        ThrottleKind::AutoConverge => Throttle::AutoConverge(AutoConverge {
            max_pct: t.pct.unwrap_or(99.0),
            initial_pct: t.pct.unwrap_or(99.0).min(20.0),
            tailslow: t.tailslow,
            ..AutoConverge::default()
        }),
        ThrottleKind::Sdps => Throttle::Cpu {
            pct: t.pct.unwrap_or(50.0),
        },
        // QEMU's default vcpu-dirty-limit is 1 MB/s (DEFAULT_MIGRATE_VCPU_DIRTY_LIMIT).
        ThrottleKind::DirtyLimit => Throttle::DirtyLimit {
            bytes_per_sec_per_vcpu: t.dirty_limit.unwrap_or(DIRTY_LIMIT_MB),
        },
    })
}

/// The limits on the whole migration, and what the settings mapping needs to know of them.
fn limits(
    cfg: &PredictConfig,
    workload: &Workload,
    notes: &mut Vec<PlanNote>,
) -> (Limits, SettingsContext) {
    let mut settings = SettingsContext {
        vcpus: workload.writers.len() as u32,
        ..SettingsContext::default()
    };
    let mem = workload.mem;
    let limits = match cfg.deadline {
        Deadline::None => Limits::default(),
        Deadline::At(d) => Limits {
            deadline_s: Some(d),
            ..Limits::default()
        },
        Deadline::Kubevirt => {
            settings.kubevirt_completion_per_gib = Some(KUBEVIRT_COMPLETION_PER_GIB);
            notes.push(PlanNote::Kubevirt {
                gib: Limits::kubevirt_gib(mem),
            });
            Limits::kubevirt(mem)
        }
        Deadline::Nova => {
            settings.nova_completion_timeout = Some(NOVA_COMPLETION_PER_GIB);
            notes.push(PlanNote::Nova {
                gib: Limits::nova_gib(mem),
            });
            Limits::nova(mem)
        }
    };
    (
        Limits {
            max_passes: cfg.max_passes,
            ..limits
        },
        settings,
    )
}
