//! Measurement sources: each dirty-tracking backend implements [`DirtySource`], and
//! [`select`] picks one for `--backend`.
//!
//! Backends:
//! - `fault` ([`fault`]): eBPF on the `page_fault_user` raw tracepoint. Exact counts of write
//!   faults, split into first touch and protection (CoW/write-protect) faults; unique pages
//!   by an in-kernel HyperLogLog. It cannot see rewrites of pages that are already writable,
//!   so for a steady workload that rewrites resident memory it reports far less than a
//!   migration would resend. It says so in its caveats.
//! - `sample` ([`sample`]): content-hash sampling of private writable memory through
//!   `process_vm_readv`, as QEMU's `calc-dirty-rate` page-sampling does. Works on any kernel,
//!   sees every rewrite that changes content, and is an estimate with a confidence interval.
//! - `sample+fault` ([`combined`]): what `auto` chooses on kernels without soft-dirty: the
//!   rate from sampling, fault counts and per-thread attribution from eBPF.
//! - `softdirty` ([`softdirty`]): exact per-epoch dirty sets with the kernel's soft-dirty write
//!   protection plus the eBPF fault program; `auto` prefers it wherever the kernel has it.
//! - `softdirty+kvm` ([`kvm`]): softdirty on a KVM guest, with the vCPUs' shares of the
//!   dirtying from the `kvm:kvm_page_fault` tracepoint. A KVM guest's writes take no host
//!   page fault, so `fault` is refused there and `auto` never picks a fault-counting backend
//!   for it.
pub mod combined;
pub mod fault;
pub mod growth;
pub mod kvm;
pub mod pagemap;
pub mod sample;
pub mod softdirty;
pub mod thp;

use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;

use crate::record::{FinalReport, IntervalReport};

/// `--backend` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The most exact backend this kernel and build allow.
    Auto,
    /// eBPF write-fault counting (first touch and copy-on-write only).
    Fault,
    /// Content-hash sampling (any kernel; an estimate with a confidence interval).
    Sample,
    /// Exact: soft-dirty write protection plus eBPF (kernels with CONFIG_MEM_SOFT_DIRTY).
    Softdirty,
}

/// A dirty-tracking backend.
pub trait DirtySource {
    /// Backend name as shown to users (`fault`, `sample`, ...).
    fn name(&self) -> &'static str;
    /// What this backend cannot see, in words.
    fn caveats(&self) -> Vec<String>;
    /// How often [`DirtySource::tick`] must run (finer than the interval), if at all.
    fn tick_every(&self) -> Option<Duration> {
        None
    }
    /// Periodic work between interval ends (epoch flips, ring-buffer draining).
    fn tick(&mut self) -> Result<()> {
        Ok(())
    }
    /// The target exec'd: its address space is new. Sources that hold descriptors or
    /// samples of the old one start over on the new one. The watch calls it again at the
    /// end of each interval of the new program's start-up (`watcher.rs`), so baselines and
    /// growth windows start from the settled program, not from its first fill.
    fn on_exec(&mut self) -> Result<()> {
        Ok(())
    }
    /// Ends the current interval and reports it. `target_gone` says the target has exited,
    /// so memory can no longer be read.
    fn end_interval(&mut self, target_gone: bool) -> Result<IntervalReport>;
    /// Final results. Called once, after the last interval.
    fn finish(&mut self) -> Result<FinalReport>;
}

/// Options the backends share.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub pid: u32,
    pub interval: Duration,
    /// `--range`, or the range around a guest's RAM: the fault program's in-kernel filter.
    pub range: Option<(u64, u64)>,
    /// A guest's RAM blocks: when set, the memory every backend measures (else `range`).
    pub ranges: Vec<(u64, u64)>,
    /// The guest's accelerator (`kvm`, `tcg`) when the target is a QEMU guest.
    pub accel: Option<String>,
    /// Target relative error of the sampled rate (95 % half-width / estimate).
    pub sample_error: f64,
    /// Fixed sample size (overrides `sample_error`).
    pub sample_pages: Option<u64>,
    /// The watch's CPU budget in steady state when sampling, percent of one core: the
    /// sample is sized for `sample_error`, but no larger than this affords.
    pub sample_cpu_pct: f64,
    /// softdirty: initial epoch.
    pub epoch: Duration,
    /// softdirty: CPU overhead budget, percent of one CPU.
    pub max_overhead_pct: f64,
    /// softdirty: arm even if something else seems to use the soft-dirty bits.
    pub force: bool,
}

impl SourceOptions {
    /// Sampling's default target: a 95 % half-width of 5 % of the rate.
    pub const DEFAULT_SAMPLE_ERROR: f64 = 0.05;
    /// softdirty's default initial epoch.
    pub const DEFAULT_EPOCH: Duration = Duration::from_millis(100);
    /// softdirty's default budget for the faults it induces, percent of one CPU.
    pub const DEFAULT_MAX_OVERHEAD_PCT: f64 = 2.0;

    /// The options of `watch --pid PID --interval INTERVAL` with every other flag at its
    /// default: the one place the defaults are written.
    pub fn new(pid: u32, interval: Duration) -> SourceOptions {
        SourceOptions {
            pid,
            interval,
            range: None,
            ranges: Vec::new(),
            accel: None,
            sample_error: Self::DEFAULT_SAMPLE_ERROR,
            sample_pages: None,
            sample_cpu_pct: sample::DEFAULT_CPU_PCT,
            epoch: Self::DEFAULT_EPOCH,
            max_overhead_pct: Self::DEFAULT_MAX_OVERHEAD_PCT,
            force: false,
        }
    }

    /// The ranges of memory to measure (empty: all writable memory).
    pub fn scope(&self) -> Vec<(u64, u64)> {
        if self.ranges.is_empty() {
            self.range.into_iter().collect()
        } else {
            self.ranges.clone()
        }
    }
}

/// The chosen backend and why it was chosen.
pub struct Selection {
    pub source: Box<dyn DirtySource>,
    pub reason: String,
}

/// Why `--backend fault` refuses a KVM guest (measured in the nested-KVM VM tests,
/// docs/kvm.md: 0 faults in 4 s while the guest wrote 2,048 pages/s).
const KVM_FAULT_BLIND: &str = "--backend fault cannot see this guest's writes: QEMU runs it with KVM, so the guest writes its RAM through the nested page tables (EPT/NPT) and no host page fault shows it; the rate would read 0. Use --backend softdirty (exact, on kernels with soft-dirty), --backend sample, or auto, which picks between them; --whole-process counts QEMU's own faults";

/// Builds the backend for `choice`. `--backend fault` on a KVM guest is refused: its fault
/// events see none of the guest's writes.
pub fn select(choice: BackendChoice, opts: &SourceOptions) -> Result<Selection> {
    match choice {
        BackendChoice::Fault if opts.accel.as_deref() == Some("kvm") => {
            Err(crate::error::Error::Unsupported(KVM_FAULT_BLIND.into()).into())
        }
        BackendChoice::Fault => {
            crate::probe::require()?;
            Ok(Selection {
                source: Box::new(fault::FaultSource::new(opts)?),
                reason: "requested with --backend fault".into(),
            })
        }
        BackendChoice::Sample => Ok(Selection {
            source: Box::new(sample::SampleSource::new(opts)?),
            reason: "requested with --backend sample".into(),
        }),
        // On a KVM guest, with the vCPUs' shares from the kvm tracepoint.
        BackendChoice::Softdirty if opts.accel.as_deref() == Some("kvm") => {
            let s = kvm::KvmSoftDirty::new(opts)?;
            let reason = format!("requested with --backend softdirty{}", s.reason());
            Ok(Selection {
                source: Box::new(s),
                reason,
            })
        }
        BackendChoice::Softdirty => Ok(Selection {
            source: Box::new(softdirty::SoftDirtySource::new(opts)?),
            reason: "requested with --backend softdirty".into(),
        }),
        BackendChoice::Auto => auto(opts),
    }
}

/// `auto`: softdirty where the kernel has soft-dirty and eBPF works; else sampling with
/// eBPF fault counts; else sampling alone. The reason names what decided.
fn auto(opts: &SourceOptions) -> Result<Selection> {
    let kvm = opts.accel.as_deref() == Some("kvm");
    let sd = match (softdirty::kernel_support(), crate::probe::availability()) {
        (Ok(()), Ok(())) if kvm => {
            let s = kvm::KvmSoftDirty::new(opts)?;
            let reason = format!(
                "this kernel tracks soft-dirty pages, and a KVM guest's writes fault into KVM again after each clear: exact dirty sets per epoch from pagemap (the host page-fault events, which the fault backend counts, do not see a KVM guest's writes){}",
                s.reason()
            );
            return Ok(Selection {
                source: Box::new(s),
                reason,
            });
        }
        (Ok(()), Ok(())) => {
            return Ok(Selection {
                source: Box::new(softdirty::SoftDirtySource::new(opts)?),
                reason: "this kernel tracks soft-dirty pages: exact dirty sets per epoch".into(),
            });
        }
        (Ok(()), Err(_)) => "this kernel has soft-dirty but eBPF is unavailable".to_string(),
        (Err(why), _) => why.to_string(),
    };
    match crate::probe::availability() {
        // A KVM guest writes its RAM through the EPT/NPT: no host page fault shows it, so
        // fault counts would only add noise next to the sampled rate.
        Ok(()) if !kvm => Ok(Selection {
            source: Box::new(combined::Combined::new(opts)?),
            reason: format!(
                "{sd}; sampling measures rewrites of existing pages, eBPF adds fault counts and per-thread shares"
            ),
        }),
        Ok(()) => Ok(Selection {
            source: Box::new(sample::SampleSource::new(opts)?),
            reason: format!(
                "{sd}; a KVM guest's writes take no host page fault, so sampling only (it sees every write that changes a page)"
            ),
        }),
        Err(why) => Ok(Selection {
            source: Box::new(sample::SampleSource::new(opts)?),
            reason: format!("{sd}; eBPF unavailable ({why}), so sampling only"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(accel: Option<&str>) -> SourceOptions {
        SourceOptions {
            pid: std::process::id(),
            interval: Duration::from_secs(1),
            range: None,
            ranges: Vec::new(),
            accel: accel.map(str::to_string),
            sample_error: 0.05,
            sample_pages: None,
            sample_cpu_pct: sample::DEFAULT_CPU_PCT,
            epoch: Duration::from_millis(100),
            max_overhead_pct: 2.0,
            force: false,
        }
    }

    #[test]
    fn fault_is_refused_on_a_kvm_guest_and_says_what_to_use() {
        let err = select(BackendChoice::Fault, &opts(Some("kvm")))
            .err()
            .expect("refused");
        assert!(matches!(
            err.downcast_ref::<crate::error::Error>(),
            Some(crate::error::Error::Unsupported(_))
        ));
        let msg = err.to_string();
        assert!(msg.contains("KVM") && msg.contains("softdirty") && msg.contains("sample"));
        // A TCG guest or a plain process is not refused for that reason (it may still fail
        // for want of eBPF or privileges, but not with this message).
        if let Err(e) = select(BackendChoice::Fault, &opts(Some("tcg"))) {
            assert!(!e.to_string().contains("KVM"), "{e}");
        }
    }
}
