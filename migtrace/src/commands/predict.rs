//! `migtrace predict`: will an iterative pre-copy live migration converge over these links,
//! in how many passes, how long, how many bytes, with what downtime, and if not, which
//! throttle makes it converge. Thin: parses the arguments into the [`crate::model`] inputs
//! (one-line errors, exit 2), runs the grid, and hands the results to
//! [`crate::sink::predict_out`]. Needs no root and no eBPF.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::model::recommend::{candidates, SettingsContext, ThrottleKind, DIRTY_LIMIT_MB};
use crate::model::sim::{
    AutoConverge, Limits, Policy, Throttle, KUBEVIRT_COMPLETION_PER_GIB,
    KUBEVIRT_PROGRESS_TIMEOUT_S, MAX_SIM_PASSES, NOVA_COMPLETION_PER_GIB,
};
use crate::model::workload::Workload;
use crate::model::{grid, GridInput};
use crate::profile::{Profile, ThreadCounts};
use crate::sink::predict_out::{self, Report};
use crate::units::{self, UnitError};

/// Default fraction of the link rate that carries migration payload: Ethernet with a
/// 1500-byte MTU carries 1448 bytes of TCP payload (20 IP + 20 TCP + 12 timestamp option)
/// per 1538 bytes on the wire (preamble 8, header 14, FCS 4, gap 12): 1448/1538 = 0.941.
/// The 8-byte page headers of the migration stream are counted separately. Jumbo frames
/// (9000) give 0.99; `--efficiency` overrides.
pub const DEFAULT_EFFICIENCY: f64 = 0.94;

/// `--policy`: whose stop rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    #[value(alias = "kvm")]
    Qemu,
    #[value(alias = "vmware")]
    Vmotion,
    Xen,
    XenSr,
    #[value(alias = "hyper-v")]
    Hyperv,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Qemu => Policy::Qemu,
            PolicyArg::Vmotion => Policy::Vmotion,
            PolicyArg::Xen => Policy::Xen,
            PolicyArg::XenSr => Policy::XenSr,
            PolicyArg::Hyperv => Policy::HyperV,
        }
    }
}

/// `--throttle`: the throttle family to simulate and search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ThrottleArg {
    None,
    #[value(alias = "autoconverge")]
    AutoConverge,
    #[value(alias = "cpu")]
    Sdps,
    #[value(alias = "dirtylimit")]
    DirtyLimit,
}

impl From<ThrottleArg> for ThrottleKind {
    fn from(t: ThrottleArg) -> ThrottleKind {
        match t {
            ThrottleArg::None => ThrottleKind::None,
            ThrottleArg::AutoConverge => ThrottleKind::AutoConverge,
            ThrottleArg::Sdps => ThrottleKind::Sdps,
            ThrottleArg::DirtyLimit => ThrottleKind::DirtyLimit,
        }
    }
}

/// `--pattern`: how the writes fall on the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    Random,
    #[value(alias = "sequential")]
    Sweep,
}

/// Reads a [`ValueEnum`] as typed (any case, spaces around ignored), with our one-line
/// message naming the accepted values.
fn value_enum<T: ValueEnum>(s: &str, what: &str, expected: &str) -> Result<T, Error> {
    T::from_str(s.trim(), true).map_err(|_| {
        let other = s.trim().to_ascii_lowercase();
        Error::Usage(format!("unknown {what} {other:?} (expected {expected})"))
    })
}

fn policy_arg(s: &str) -> Result<PolicyArg, Error> {
    value_enum(s, "policy", "qemu, vmotion, xen, xen-sr or hyperv")
}

fn throttle_arg(s: &str) -> Result<ThrottleArg, Error> {
    value_enum(s, "throttle", "none, auto-converge, sdps or dirty-limit")
}

fn pattern_arg(s: &str) -> Result<PatternArg, Error> {
    value_enum(s, "pattern", "random or sweep")
}

/// Arguments of `migtrace predict`. The options live in a box so that the subcommand enum
/// stays small (clippy's `large_enum_variant` on [`crate::cli::Command`]).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  migtrace predict --link 10g,25g,40g,100g --mem 128GiB --dirty-rate 1.5GB/s --wws 16GiB\n  migtrace predict --link 40g --profile web.profile.json --kubevirt --json\n\nUnits: links in bits (10g = 10 Gbit/s), memory in bytes (128g = 128 GiB), rates in bytes per second (1.5GB/s). See docs/predict.md."
)]
pub struct PredictArgs {
    #[command(flatten)]
    pub opts: Box<PredictOpts>,
}

/// The options of `migtrace predict`. Values may start with `-` so that `--busy -0.1` or
/// `--link -10g` reach our own checks and get a one-line error, not clap's usage block.
#[derive(Debug, Args)]
pub struct PredictOpts {
    /// Link rate(s), bits per second: 10g, 40gbit, 25GbE, 100Gb/s (or bytes: 1.25GB/s).
    /// Repeat or separate with commas for a grid.
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub link: Vec<String>,
    /// Rate of the final stop-and-copy, as --link: default the link. QEMU lifts max-bandwidth
    /// for the stop-and-copy, so when --link is a max-bandwidth cap give the real link here.
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub stop_copy_rate: Option<String>,
    /// Guest memory: 128GiB, 128g (= GiB), 512MiB. With --profile, overrides its size.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub mem: Option<String>,
    /// Rate at which the guest dirties new pages: 1.5GB/s, 800MiB/s.
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub dirty_rate: Option<String>,
    /// Writable working set the dirtying saturates at (default: all of --mem).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub wws: Option<String>,
    /// How the writes fall on the working set: random (pages hit at random, hot pages
    /// rewritten: U(t) = W(1 - e^(-rt/W))) or sweep (in order, each page once per sweep:
    /// U(t) = min(rt, W)). Only with --dirty-rate.
    #[arg(long, value_name = "PATTERN", default_value = "random", value_parser = pattern_arg)]
    pub pattern: PatternArg,
    /// A profile written by `migtrace watch --profile-out` (instead of --dirty-rate).
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub profile: Option<PathBuf>,
    /// Downtime limit(s): 300ms, 1s. Default: 300 ms (QEMU), 1 s (vMotion). Commas for a grid.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub downtime: Vec<String>,
    /// Stop rules: qemu, vmotion, xen (legacy 29 iterations / 3x RAM), xen-sr (Xen 4.6+:
    /// 5 iterations), hyperv.
    #[arg(long, value_name = "POLICY", default_value = "qemu", value_parser = policy_arg)]
    pub policy: PolicyArg,
    /// Throttle to simulate: none, auto-converge, sdps (constant CPU throttle), dirty-limit.
    /// The recommendation searches this kind (all the policy offers when none).
    #[arg(long, value_name = "KIND", default_value = "none", value_parser = throttle_arg)]
    pub throttle: ThrottleArg,
    /// CPU throttle level in % for sdps (default 50), or max-cpu-throttle for auto-converge
    /// (default 99).
    #[arg(long, value_name = "PCT", allow_hyphen_values = true)]
    pub throttle_pct: Option<String>,
    /// Use cpu-throttle-tailslow with auto-converge.
    #[arg(long)]
    pub tailslow: bool,
    /// Per-vCPU dirty limit for --throttle dirty-limit: 50MiB/s (default QEMU's 1 MB/s).
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub dirty_limit: Option<String>,
    /// Abort the migration if not complete within this time: 15m.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub deadline: Option<String>,
    /// Apply KubeVirt's limits: 150 s per GiB to complete, 150 s without progress.
    #[arg(long)]
    pub kubevirt: bool,
    /// Apply OpenStack Nova's limit: 800 s per GiB (of RAM; at least 2 GiB) to complete.
    #[arg(long)]
    pub nova: bool,
    /// Fraction of the link rate carrying migration payload, in (0, 1] (default 0.94).
    #[arg(long, value_name = "FRACTION", allow_hyphen_values = true)]
    pub efficiency: Option<String>,
    /// Number of vCPUs (writers) when the profile does not attribute threads (default 1).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub vcpus: Option<String>,
    /// Fraction of time each vCPU is on CPU, in [0, 1] (default: the profile's, else 1).
    #[arg(long, value_name = "FRACTION", allow_hyphen_values = true)]
    pub busy: Option<String>,
    /// Fraction of memory that is zero pages, in [0, 1] (default: the profile's, else 0).
    #[arg(long, value_name = "FRACTION", allow_hyphen_values = true)]
    pub zero_share: Option<String>,
    /// Override the policy's pass limit.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_passes: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Explain in plain words why a faster link helps more than in proportion.
    #[arg(long)]
    pub explain: bool,
}

impl PredictOpts {
    /// The defaults of `migtrace predict --profile PROFILE --link LINKS`, for callers that
    /// predict from a profile they just measured (`demo`).
    pub fn for_profile(profile: PathBuf, links: &str) -> PredictOpts {
        PredictOpts {
            link: vec![links.to_string()],
            stop_copy_rate: None,
            mem: None,
            dirty_rate: None,
            wws: None,
            pattern: PatternArg::Random,
            profile: Some(profile),
            downtime: Vec::new(),
            policy: PolicyArg::Qemu,
            throttle: ThrottleArg::None,
            throttle_pct: None,
            tailslow: false,
            dirty_limit: None,
            deadline: None,
            kubevirt: false,
            nova: false,
            efficiency: None,
            vcpus: None,
            busy: None,
            zero_share: None,
            max_passes: None,
            json: false,
            explain: false,
        }
    }
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// Parses `--flag value` with `f`, prefixing errors with the flag.
fn opt<T>(
    flag: &str,
    v: &Option<String>,
    f: impl Fn(&str) -> Result<T, UnitError>,
) -> Result<Option<T>, Error> {
    v.as_deref()
        .map(|s| f(s).map_err(|e| usage(format!("--{flag}: {e}"))))
        .transpose()
}

/// A plain number in `[lo, hi]`, as `what` ("a fraction") describes it in the message.
fn number_in(lo: f64, hi: f64, what: &'static str) -> impl Fn(&str) -> Result<f64, UnitError> {
    move |s: &str| {
        let t = s.trim();
        // Only digits and a dot (and an exponent): Rust's own parser also reads "inf" and "NaN".
        let plain = t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
        match t.parse::<f64>() {
            Ok(v) if plain && v >= lo && v <= hi => Ok(v),
            _ => Err(UnitError::OutOfRange(format!(
                "{} must be {what} from {lo} to {hi}",
                units::quote(s)
            ))),
        }
    }
}

/// A whole number in `[1, max]`.
fn count(max: u32) -> impl Fn(&str) -> Result<u32, UnitError> {
    move |s: &str| match s.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(UnitError::OutOfRange(format!(
            "{} must be a whole number from 1 to {max} (at least 1, at most {max})",
            units::quote(s)
        ))),
    }
}

fn percent(s: &str) -> Result<f64, UnitError> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(v) if (1.0..=99.0).contains(&v) => Ok(v),
        _ => Err(UnitError::Invalid(format!(
            "{} must be a percentage from 1 to 99",
            units::quote(s)
        ))),
    }
}

/// Most vCPUs: KVM on x86 allows up to 4096 (CONFIG_KVM_MAX_NR_VCPUS); more is a typo, and
/// the model keeps one entry per writer.
pub const MAX_VCPUS: u32 = 4096;

/// Most cells (links x downtimes) in one run. Each cell keeps its passes and its
/// recommendation search; past this the report is unreadable and a typo costs gigabytes
/// (1000 links x 100 downtimes took 1.5 GB and 5 s), so it is refused, not streamed.
pub const MAX_CELLS: usize = 1000;

/// Everything `run` computes before printing; public so the benchmark runs exactly this.
pub struct Prepared {
    pub workload: Workload,
    pub input: GridInput,
    pub report: Report,
}

/// The numeric options shared by both kinds of workload.
struct Numbers {
    efficiency: f64,
    vcpus: Option<u32>,
    busy: Option<f64>,
    zero_share: Option<f64>,
    max_passes: Option<u32>,
    mem: Option<f64>,
}

/// Checks the arguments and builds the model inputs. All errors are [`Error`]s.
pub fn prepare(args: &PredictOpts) -> anyhow::Result<Prepared> {
    let mut caveats = Vec::new();
    let links = links_or_profile_headroom(args, &mut caveats)?;
    let stop_copy_bits = parse_stop_copy_rate(args, &links)?;
    let policy = Policy::from(args.policy);
    let kind = ThrottleKind::from(args.throttle);
    let downtimes = parse_downtimes(&args.downtime, policy)?;
    if links.len().saturating_mul(downtimes.len()) > MAX_CELLS {
        return Err(usage(format!(
            "{} links x {} downtimes is {} cells; at most {MAX_CELLS} in one run (split the grid)",
            links.len(),
            downtimes.len(),
            links.len() * downtimes.len()
        ))
        .into());
    }
    let n = parse_numbers(args)?;
    let (workload, source) = match (&args.profile, &args.dirty_rate) {
        (Some(_), Some(_)) => {
            return Err(usage("give either --profile or --dirty-rate (with --mem), not both").into())
        }
        (Some(path), None) => profile_workload(args, path, &n, &mut caveats)?,
        (None, Some(rate)) => numbers_workload(args, rate, &n, &mut caveats)?,
        (None, None) => return Err(usage(
            "missing input: give --mem and --dirty-rate (e.g. --mem 128GiB --dirty-rate 1.5GB/s), or --profile FILE",
        )
        .into()),
    };
    let throttle = parse_throttle(args, policy, kind)?;
    let recommend_kinds = if kind == ThrottleKind::None {
        candidates(policy).to_vec()
    } else {
        vec![kind]
    };
    let (limits, settings) = parse_limits(args, &workload, n.max_passes, &mut caveats)?;
    let input = GridInput {
        links_bits: links,
        stop_copy_bits,
        downtimes_s: downtimes,
        efficiency: n.efficiency,
        policy,
        throttle,
        recommend_kinds,
        limits,
        settings,
    };
    let report = Report {
        source,
        policy,
        throttle_kind: kind,
        caveats,
        explain: args.explain,
    };
    Ok(Prepared {
        workload,
        input,
        report,
    })
}

/// `--link`; without it, a profile's measured headroom (`watch --iface`) as the one link:
/// the model sends at link x efficiency, so the link is headroom / efficiency.
fn links_or_profile_headroom(
    args: &PredictOpts,
    caveats: &mut Vec<String>,
) -> anyhow::Result<Vec<f64>> {
    let (Some(path), true) = (&args.profile, args.link.is_empty()) else {
        return Ok(parse_links(&args.link)?);
    };
    let p = Profile::load(path).map_err(|e| Error::Input(e.to_string()))?;
    let Some((l, h)) = p
        .link
        .as_ref()
        .and_then(|l| Some((l, l.headroom_bytes_per_sec.filter(|&h| h > 0.0)?)))
    else {
        return Err(usage(
            "missing --link: give the link rate, e.g. --link 10g (the profile has no measured link headroom; `watch --iface IF` records one)",
        )
        .into());
    };
    let eff = parse_numbers(args)?.efficiency;
    caveats.push(format!(
        "no --link: the link is the profile's measured headroom on {}, {}/s ({} x {:.2} - {}/s of other traffic), taken as a {} link at efficiency {eff:.2}",
        l.iface.as_deref().unwrap_or("?"),
        units::fmt_bytes(h),
        l.link_bits.map_or("?".into(), units::fmt_link),
        l.efficiency,
        units::fmt_bytes(l.tx_bytes_per_sec.unwrap_or(0.0)),
        units::fmt_link(h * 8.0 / eff),
    ));
    Ok(vec![h * 8.0 / eff])
}

fn parse_links(args: &[String]) -> Result<Vec<f64>, Error> {
    if args.is_empty() {
        return Err(usage(
            "missing --link: give the link rate, e.g. --link 10g or --link 10g,25g,40g",
        ));
    }
    let mut links = Vec::new();
    for l in args {
        links.extend(
            units::parse_list(l, units::parse_link).map_err(|e| usage(format!("--link: {e}")))?,
        );
    }
    Ok(links)
}

/// `--stop-copy-rate`: the link the stop-and-copy runs at. QEMU lifts `max-bandwidth` for it
/// (`migration_completion`), so it is never slower than the live passes: a rate below a
/// `--link` is a mistake, refused.
fn parse_stop_copy_rate(args: &PredictOpts, links: &[f64]) -> Result<Option<f64>, Error> {
    let Some(r) = opt("stop-copy-rate", &args.stop_copy_rate, units::parse_link)? else {
        return Ok(None);
    };
    if let Some(l) = links.iter().copied().find(|&l| l > r) {
        return Err(usage(format!(
            "--stop-copy-rate ({}) is below --link ({}): QEMU lifts max-bandwidth for the stop-and-copy, so it never runs slower than the live passes",
            units::fmt_link(r),
            units::fmt_link(l)
        )));
    }
    Ok(Some(r))
}

/// Downtime targets in seconds; the policy's default when none is given.
fn parse_downtimes(args: &[String], policy: Policy) -> Result<Vec<f64>, Error> {
    let mut downtimes = Vec::new();
    for d in args {
        downtimes.extend(
            units::parse_list(d, |x| units::parse_secs_in(x, &units::DOWNTIME))
                .map_err(|e| usage(format!("--downtime: {e}")))?,
        );
    }
    if downtimes.is_empty() {
        downtimes.push(policy.default_downtime_s());
    }
    Ok(downtimes)
}

fn parse_numbers(args: &PredictOpts) -> Result<Numbers, Error> {
    // Under 1 % of the link carrying payload is a typo, and would simulate for ever.
    let efficiency = opt(
        "efficiency",
        &args.efficiency,
        number_in(0.01, 1.0, "a fraction"),
    )?
    .unwrap_or(DEFAULT_EFFICIENCY);
    let fraction = || number_in(0.0, 1.0, "a fraction");
    Ok(Numbers {
        efficiency,
        vcpus: opt("vcpus", &args.vcpus, count(MAX_VCPUS))?,
        busy: opt("busy", &args.busy, fraction())?,
        zero_share: opt("zero-share", &args.zero_share, fraction())?,
        max_passes: opt("max-passes", &args.max_passes, count(MAX_SIM_PASSES))?,
        mem: opt("mem", &args.mem, units::parse_mem)?,
    })
}

/// The workload from a profile file, and where it came from in words.
fn profile_workload(
    args: &PredictOpts,
    path: &Path,
    n: &Numbers,
    caveats: &mut Vec<String>,
) -> Result<(Workload, String), Error> {
    if args.wws.is_some() || args.pattern != PatternArg::Random {
        return Err(usage(
            "--wws and --pattern go with --dirty-rate; a profile carries its own growth curve",
        ));
    }
    let p = Profile::load(path).map_err(|e| Error::Input(e.to_string()))?;
    if p.growth.is_empty() {
        caveats.push(
            "the profile has no growth curve: dirtying is taken as its mean rate x time, which overstates what a long pass resends"
                .to_string(),
        );
    }
    caveats.extend(p.caveats.iter().map(|c| format!("profile: {c}")));
    if p.thread_counts == ThreadCounts::WriteFaults && !p.threads.is_empty() {
        caveats.push(
            "the profile's per-thread shares are write-fault counts (sample+fault), taken as each writer's share of the dirtying"
                .to_string(),
        );
    }
    let w = Workload::from_profile(&p, n.mem, n.busy, n.vcpus, n.zero_share);
    let source = format!(
        "profile {} (backend {}, {} pid {})",
        path.display(),
        p.backend,
        p.target.comm,
        p.target.pid
    );
    Ok((w, source))
}

/// The workload from `--mem`, `--dirty-rate`, `--wws` and `--pattern`.
fn numbers_workload(
    args: &PredictOpts,
    rate: &str,
    n: &Numbers,
    caveats: &mut Vec<String>,
) -> Result<(Workload, String), Error> {
    let Some(mem) = n.mem else {
        return Err(usage(
            "missing --mem: --dirty-rate needs the guest memory size, e.g. --mem 128GiB",
        ));
    };
    let rate = units::parse_byte_rate(rate).map_err(|e| usage(format!("--dirty-rate: {e}")))?;
    let wws = opt("wws", &args.wws, units::parse_mem)?;
    if let Some(w) = wws {
        if w > mem {
            return Err(usage(format!(
                "--wws ({}) is larger than --mem ({})",
                units::fmt_bytes(w),
                units::fmt_bytes(mem)
            )));
        }
    } else {
        caveats
            .push("no --wws: the dirtying is assumed to saturate only at the whole memory".into());
    }
    if n.busy.is_none() {
        caveats.push(
            "no --busy: vCPUs are assumed fully busy, the case where a CPU throttle helps most"
                .into(),
        );
    }
    let w = Workload::synthetic_with(
        mem,
        rate,
        wws,
        n.vcpus.unwrap_or(1),
        n.busy.unwrap_or(1.0),
        n.zero_share.unwrap_or(0.0),
        args.pattern == PatternArg::Sweep,
    );
    Ok((w, "numbers (--mem, --dirty-rate, --wws)".to_string()))
}

/// The throttle to simulate, checked against the policy and the throttle options.
fn parse_throttle(
    args: &PredictOpts,
    policy: Policy,
    kind: ThrottleKind,
) -> Result<Throttle, Error> {
    if matches!(kind, ThrottleKind::AutoConverge | ThrottleKind::DirtyLimit)
        && policy != Policy::Qemu
    {
        return Err(usage(format!(
            "--throttle {} is a QEMU feature; with --policy {} use --throttle sdps (a CPU throttle or cap)",
            kind.name(),
            policy.name()
        )));
    }
    if args.tailslow && kind != ThrottleKind::AutoConverge {
        return Err(usage("--tailslow goes with --throttle auto-converge"));
    }
    if args.dirty_limit.is_some() && kind != ThrottleKind::DirtyLimit {
        return Err(usage("--dirty-limit goes with --throttle dirty-limit"));
    }
    if args.throttle_pct.is_some()
        && !matches!(kind, ThrottleKind::AutoConverge | ThrottleKind::Sdps)
    {
        return Err(usage(
            "--throttle-pct goes with --throttle auto-converge or sdps",
        ));
    }
    let pct = opt("throttle-pct", &args.throttle_pct, percent)?;
    Ok(match kind {
        ThrottleKind::None => Throttle::None,
        ThrottleKind::AutoConverge => Throttle::AutoConverge(AutoConverge {
            max_pct: pct.unwrap_or(99.0),
            initial_pct: pct.unwrap_or(99.0).min(20.0),
            tailslow: args.tailslow,
            ..AutoConverge::default()
        }),
        ThrottleKind::Sdps => Throttle::Cpu {
            pct: pct.unwrap_or(50.0),
        },
        ThrottleKind::DirtyLimit => {
            // QEMU's default vcpu-dirty-limit is 1 MB/s (DEFAULT_MIGRATE_VCPU_DIRTY_LIMIT).
            let cap = opt("dirty-limit", &args.dirty_limit, |s| {
                units::parse_byte_rate_in(s, &units::DIRTY_LIMIT)
            })?
            .unwrap_or(DIRTY_LIMIT_MB);
            Throttle::DirtyLimit {
                bytes_per_sec_per_vcpu: cap,
            }
        }
    })
}

/// The limits on the whole migration (`--deadline`, `--kubevirt`, `--nova`, `--max-passes`)
/// and what the settings mapping needs to know of them.
fn parse_limits(
    args: &PredictOpts,
    workload: &Workload,
    max_passes: Option<u32>,
    caveats: &mut Vec<String>,
) -> Result<(Limits, SettingsContext), Error> {
    let n_deadlines = [args.deadline.is_some(), args.kubevirt, args.nova]
        .iter()
        .filter(|x| **x)
        .count();
    if n_deadlines > 1 {
        return Err(usage("give only one of --deadline, --kubevirt and --nova"));
    }
    let mut settings = SettingsContext {
        vcpus: workload.writers.len() as u32,
        ..SettingsContext::default()
    };
    let mem = workload.mem;
    let deadline = opt("deadline", &args.deadline, |s| {
        units::parse_secs_in(s, &units::DEADLINE)
    })?;
    let limits = if let Some(d) = deadline {
        Limits {
            deadline_s: Some(d),
            ..Limits::default()
        }
    } else if args.kubevirt {
        settings.kubevirt_completion_per_gib = Some(KUBEVIRT_COMPLETION_PER_GIB);
        caveats.push(format!(
            "--kubevirt: completion timeout {} s/GiB x {:.1} GiB of memory (local disks would add to it), progress timeout {} s",
            KUBEVIRT_COMPLETION_PER_GIB, Limits::kubevirt_gib(mem), KUBEVIRT_PROGRESS_TIMEOUT_S
        ));
        Limits::kubevirt(mem)
    } else if args.nova {
        settings.nova_completion_timeout = Some(NOVA_COMPLETION_PER_GIB);
        caveats.push(format!(
            "--nova: completion timeout {} s/GiB x {:.1} GiB of RAM (disk would add to it); Nova's stepwise downtime increase (live_migration_downtime_steps) is not modelled",
            NOVA_COMPLETION_PER_GIB,
            Limits::nova_gib(mem)
        ));
        Limits::nova(mem)
    } else {
        Limits::default()
    };
    Ok((
        Limits {
            max_passes,
            ..limits
        },
        settings,
    ))
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let args = *args.opts;
    let p = prepare(&args)?;
    let cells = grid(&p.workload, &p.input);
    let out = if args.json {
        let v = predict_out::json(&p.workload, &p.input, &p.report, &cells);
        serde_json::to_string_pretty(&v).context("cannot encode JSON")? + "\n"
    } else {
        predict_out::text(&p.workload, &p.input, &p.report, &cells)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}
