//! `migtrace predict`: will an iterative pre-copy live migration converge over these links,
//! in how many passes, how long, how many bytes, with what downtime, and if not, which
//! throttle makes it converge. Thin: parses the arguments into the [`crate::model`] inputs
//! (one-line errors, exit 2), runs the grid, and hands the results to
//! [`crate::output::predict`]. Needs no root and no eBPF.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::model::config::{
    plan, Deadline, PlanError, PredictConfig, ThrottleConfig, WorkloadInput,
};
pub use crate::model::config::{DEFAULT_EFFICIENCY, MAX_CELLS, MAX_VCPUS};
use crate::model::recommend::ThrottleKind;
use crate::model::sim::{Policy, MAX_SIM_PASSES};
use crate::model::workload::Workload;
use crate::model::{grid, GridInput};
use crate::output::predict::{self as predict_out, Report};
use crate::profile::Profile;
use crate::units::{self, UnitError};

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
    /// The flags of `migtrace predict --profile PROFILE --link LINKS` with every other flag
    /// at its default (the fuzz tests start from it; code that predicts builds a
    /// [`PredictConfig`] instead).
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

/// Everything `run` computes before printing; public so the benchmark runs exactly this.
pub struct Prepared {
    pub workload: Workload,
    pub input: GridInput,
    pub report: Report,
}

/// Checks the arguments and builds the model inputs, in two stages: the flags are lowered
/// into a typed [`PredictConfig`] ([`PredictOpts::lower`]), which the model checks and
/// lowers into its inputs ([`plan`]). All errors are [`Error`]s.
pub fn prepare(args: &PredictOpts) -> anyhow::Result<Prepared> {
    let cfg = args.lower()?;
    let p = plan(&cfg).map_err(|e| usage(e.to_string()))?;
    let report = Report {
        source: p.source,
        policy: cfg.policy,
        throttle_kind: cfg.throttle.kind,
        caveats: p.notes.iter().map(predict_out::plan_note).collect(),
        explain: args.explain,
    };
    Ok(Prepared {
        workload: p.workload,
        input: p.input,
        report,
    })
}

impl PredictOpts {
    /// The flags as a typed config: every value parsed, every combination of flags checked.
    /// What depends on the values together (a stop-and-copy rate below a link, a working set
    /// larger than memory) is the model's to check, in [`plan`].
    pub fn lower(&self) -> Result<PredictConfig, Error> {
        if self.profile.is_none() && self.link.is_empty() {
            return Err(usage(PlanError::NoLink.to_string()));
        }
        let links_bits = parse_links(&self.link)?;
        let stop_copy_bits = opt("stop-copy-rate", &self.stop_copy_rate, units::parse_link)?;
        let downtimes_s = parse_downtimes(&self.downtime)?;
        // Under 1 % of the link carrying payload is a typo, and would simulate for ever.
        let efficiency = opt(
            "efficiency",
            &self.efficiency,
            number_in(0.01, 1.0, "a fraction"),
        )?
        .unwrap_or(DEFAULT_EFFICIENCY);
        let fraction = || number_in(0.0, 1.0, "a fraction");
        let vcpus = opt("vcpus", &self.vcpus, count(MAX_VCPUS))?;
        let busy = opt("busy", &self.busy, fraction())?;
        let zero_share = opt("zero-share", &self.zero_share, fraction())?;
        let max_passes = opt("max-passes", &self.max_passes, count(MAX_SIM_PASSES))?;
        let mem = opt("mem", &self.mem, units::parse_mem)?;
        Ok(PredictConfig {
            workload: self.workload_input()?,
            links_bits,
            stop_copy_bits,
            downtimes_s,
            policy: Policy::from(self.policy),
            throttle: self.throttle_config()?,
            deadline: self.deadline()?,
            max_passes,
            efficiency,
            mem,
            vcpus,
            busy,
            zero_share,
        })
    }

    /// `--profile` (loaded) or `--dirty-rate` with `--wws` and `--pattern`.
    fn workload_input(&self) -> Result<WorkloadInput, Error> {
        match (&self.profile, &self.dirty_rate) {
            (Some(_), Some(_)) => Err(usage(
                "give either --profile or --dirty-rate (with --mem), not both",
            )),
            (Some(path), None) => {
                if self.wws.is_some() || self.pattern != PatternArg::Random {
                    return Err(usage(
                        "--wws and --pattern go with --dirty-rate; a profile carries its own growth curve",
                    ));
                }
                let p = Profile::load(path).map_err(|e| Error::Input(e.to_string()))?;
                Ok(WorkloadInput::Profile {
                    profile: Box::new(p),
                    path: path.clone(),
                })
            }
            (None, Some(rate)) => {
                if self.mem.is_none() {
                    return Err(usage(PlanError::NoMem.to_string()));
                }
                let bytes_per_sec = units::parse_byte_rate(rate)
                    .map_err(|e| usage(format!("--dirty-rate: {e}")))?;
                Ok(WorkloadInput::Rate {
                    bytes_per_sec,
                    wws: opt("wws", &self.wws, units::parse_mem)?,
                    sweep: self.pattern == PatternArg::Sweep,
                })
            }
            (None, None) => Err(usage(
                "missing input: give --mem and --dirty-rate (e.g. --mem 128GiB --dirty-rate 1.5GB/s), or --profile FILE",
            )),
        }
    }

    /// `--throttle` and the options that go with one kind of it.
    fn throttle_config(&self) -> Result<ThrottleConfig, Error> {
        let kind = ThrottleKind::from(self.throttle);
        if self.tailslow && kind != ThrottleKind::AutoConverge {
            return Err(usage("--tailslow goes with --throttle auto-converge"));
        }
        if self.dirty_limit.is_some() && kind != ThrottleKind::DirtyLimit {
            return Err(usage("--dirty-limit goes with --throttle dirty-limit"));
        }
        if self.throttle_pct.is_some()
            && !matches!(kind, ThrottleKind::AutoConverge | ThrottleKind::Sdps)
        {
            return Err(usage(
                "--throttle-pct goes with --throttle auto-converge or sdps",
            ));
        }
        Ok(ThrottleConfig {
            kind,
            pct: opt("throttle-pct", &self.throttle_pct, percent)?,
            tailslow: self.tailslow,
            dirty_limit: opt("dirty-limit", &self.dirty_limit, |s| {
                units::parse_byte_rate_in(s, &units::DIRTY_LIMIT)
            })?,
        })
    }

    /// `--deadline`, `--kubevirt` or `--nova`: at most one.
    fn deadline(&self) -> Result<Deadline, Error> {
        let n = [self.deadline.is_some(), self.kubevirt, self.nova]
            .iter()
            .filter(|x| **x)
            .count();
        if n > 1 {
            return Err(usage("give only one of --deadline, --kubevirt and --nova"));
        }
        let at = opt("deadline", &self.deadline, |s| {
            units::parse_secs_in(s, &units::DEADLINE)
        })?;
        Ok(match at {
            Some(d) => Deadline::At(d),
            None if self.kubevirt => Deadline::Kubevirt,
            None if self.nova => Deadline::Nova,
            None => Deadline::None,
        })
    }
}

fn parse_links(args: &[String]) -> Result<Vec<f64>, Error> {
    let mut links = Vec::new();
    for l in args {
        links.extend(
            units::parse_list(l, units::parse_link).map_err(|e| usage(format!("--link: {e}")))?,
        );
    }
    Ok(links)
}

/// Downtime targets in seconds (empty: the policy's default, which the model fills in).
fn parse_downtimes(args: &[String]) -> Result<Vec<f64>, Error> {
    let mut downtimes = Vec::new();
    for d in args {
        downtimes.extend(
            units::parse_list(d, |x| units::parse_secs_in(x, &units::DOWNTIME))
                .map_err(|e| usage(format!("--downtime: {e}")))?,
        );
    }
    Ok(downtimes)
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
