//! The vCPU side of a KVM guest's dirtying: the `kvm:kvm_page_fault` tracepoint, counted per
//! vCPU thread by the `kvm_page_fault` kernel program (`migtrace-ebpf`).
//!
//! A KVM guest writes its RAM through the nested page tables: no host page fault shows it,
//! so the `fault` backend is blind to it and `softdirty` sees it only in pagemap, with no
//! thread. But each soft-dirty clear write-protects guest RAM, the MMU notifier makes KVM
//! drop its mappings, and the guest's first write to each page (or 2 MiB huge page) in the
//! epoch exits to KVM, which reports it on `kvm:kvm_page_fault` in the faulting vCPU's
//! thread. [`KvmSoftDirty`] wraps the softdirty backend with [`KvmProbe`]: the rate is
//! softdirty's, and the per-thread write faults are the vCPUs' shares of the dirtying.
//!
//! Safety: writing a kvm event's tracefs `enable` file while a nested guest ran once froze
//! the host in 2 of 5 runs (docs/platform.md). Attaching this program while a guest runs was
//! measured on the nested-KVM rig and was fine in every cycle (docs/kvm.md has the numbers;
//! `tests/vm/kvm.json` repeats 5 cycles in every CI run). Should the attach fail, the watch
//! goes on without vCPU attribution and says why.
use std::time::Duration;

use anyhow::Result;

use super::{softdirty::SoftDirtySource, DirtySource, SourceOptions};
use crate::probe::kvm::{KvmProbe, EVENT};
use crate::record::{FinalReport, IntervalReport};

/// `softdirty` on a KVM guest, with the vCPUs' shares of the dirtying from
/// `kvm:kvm_page_fault`: the rate, growth curve and every count are softdirty's; the
/// per-thread write faults are KVM's write faults per vCPU thread, which follow each
/// soft-dirty clear (one per page, or per 2 MiB where the host backs guest RAM with huge
/// pages, per epoch and vCPU).
pub struct KvmSoftDirty {
    inner: SoftDirtySource,
    probe: Option<KvmProbe>,
    /// Why there is no probe, when there is none.
    missing: Option<String>,
}

impl KvmSoftDirty {
    /// The softdirty backend, plus the kvm probe when it attaches (a failure to attach is
    /// kept as a caveat, not an error: the rate does not need it).
    pub fn new(opts: &SourceOptions) -> Result<KvmSoftDirty> {
        let inner = SoftDirtySource::new(opts)?;
        let (probe, missing) = match KvmProbe::attach(opts.pid) {
            Ok(p) => (Some(p), None),
            Err(e) => (
                None,
                Some(format!(
                    "no per-vCPU shares: tracepoint {}:{} could not be attached ({e:#})",
                    EVENT.0, EVENT.1
                )),
            ),
        };
        Ok(KvmSoftDirty {
            inner,
            probe,
            missing,
        })
    }

    /// What the selection reason adds: the vCPU attribution, or why there is none.
    pub fn reason(&self) -> String {
        match (&self.probe, &self.missing) {
            (Some(_), _) => format!(
                "; per-vCPU shares from {}:{} (KVM's write faults after each clear, per vCPU thread)",
                EVENT.0, EVENT.1
            ),
            (None, Some(why)) => format!("; {why}"),
            (None, None) => String::new(),
        }
    }
}

impl DirtySource for KvmSoftDirty {
    fn name(&self) -> &'static str {
        if self.probe.is_some() {
            "softdirty+kvm"
        } else {
            "softdirty"
        }
    }

    fn caveats(&self) -> Vec<String> {
        let mut c = self.inner.caveats();
        match (&self.probe, &self.missing) {
            (Some(p), _) => c.push(format!(
                "per-vCPU shares count KVM's write faults ({}:{}) by vCPU thread{}: one per page and epoch, or per 2 MiB where guest RAM is on huge pages, so they are shares of pages first written, not of bytes",
                EVENT.0,
                EVENT.1,
                if p.has_vcpu_id() {
                    ""
                } else {
                    " (this kernel's record has no vCPU id)"
                }
            )),
            (None, Some(why)) => c.push(why.clone()),
            (None, None) => {}
        }
        c
    }

    fn tick_every(&self) -> Option<Duration> {
        self.inner.tick_every()
    }

    fn tick(&mut self) -> Result<()> {
        self.inner.tick()
    }

    fn on_exec(&mut self) -> Result<()> {
        self.inner.on_exec()
    }

    fn end_interval(&mut self, target_gone: bool) -> Result<IntervalReport> {
        let mut r = self.inner.end_interval(target_gone)?;
        if let Some(p) = &mut self.probe {
            // A full vCPU map loses attribution, never a count: shown with the drops.
            r.drops.thread_map_full += p.take_deltas()?.vcpu_map_full;
        }
        Ok(r)
    }

    fn finish(&mut self) -> Result<FinalReport> {
        let mut fin = self.inner.finish()?;
        if let Some(p) = &mut self.probe {
            p.stop()?;
            let v = p.vcpus()?;
            if v.iter().any(|x| x.write_faults > 0) {
                fin.threads = v
                    .iter()
                    .filter(|x| x.write_faults > 0)
                    .map(|x| (x.tid, x.write_faults))
                    .collect();
                fin.threads_attribute_dirtying = true;
            }
        }
        Ok(fin)
    }
}
