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
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use migtrace_common::{kvm_counter, KvmConfig, KvmState, KvmVcpu, KVM_FLAG_VCPU_ID};

use super::{
    ebpf::{load_error, require, OBJECT},
    netsend::{ensure_tracefs, parse_format, TRACEFS},
    softdirty::SoftDirtySource,
    DirtySource, SourceOptions,
};
use crate::record::{FinalReport, IntervalReport};

/// The tracepoint: `kvm:kvm_page_fault`.
pub const EVENT: (&str, &str) = ("kvm", "kvm_page_fault");

/// Guest page faults since the last [`KvmProbe::take_deltas`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDeltas {
    pub faults: u64,
    pub write_faults: u64,
    /// Faults whose vCPU attribution was lost to a full map.
    pub vcpu_map_full: u64,
}

/// One vCPU thread's guest page faults since attaching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuFaults {
    pub tid: u32,
    /// KVM's vCPU id, when the kernel's record has it.
    pub vcpu_id: Option<u32>,
    pub faults: u64,
    pub write_faults: u64,
}

/// The record layout of `kvm_page_fault`, from its format file.
fn event_config(tgid: u32) -> Result<KvmConfig> {
    let path = Path::new(TRACEFS).join(format!("events/{}/{}/format", EVENT.0, EVENT.1));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (is the kvm module loaded?)", path.display()))?;
    layout(tgid, &text).with_context(|| path.display().to_string())
}

fn layout(tgid: u32, format: &str) -> Result<KvmConfig> {
    let f = parse_format(format);
    let mut cfg = KvmConfig {
        tgid,
        ..Default::default()
    };
    match f.get("error_code") {
        Some(&(off, size @ (4 | 8))) => {
            cfg.error_code_off = off;
            cfg.error_code_size = size;
        }
        _ => return Err(anyhow!("no 4- or 8-byte field error_code")),
    }
    if let Some(&(off, 4)) = f.get("vcpu_id") {
        cfg.vcpu_id_off = off;
        cfg.flags |= KVM_FLAG_VCPU_ID;
    }
    Ok(cfg)
}

/// Whether the tracepoint is on already (some tracer enabled it through tracefs): then an
/// attach adds a probe to a live tracepoint instead of switching it on.
pub fn event_enabled() -> bool {
    let p = Path::new(TRACEFS).join(format!("events/{}/{}/enable", EVENT.0, EVENT.1));
    std::fs::read_to_string(p).is_ok_and(|s| s.trim() != "0")
}

/// The loaded and attached `kvm_page_fault` program and its maps. Dropping it detaches it.
pub struct KvmProbe {
    _bpf: Ebpf,
    config: Array<MapData, KvmConfig>,
    cfg: KvmConfig,
    state: PerCpuArray<MapData, KvmState>,
    vcpus: HashMap<MapData, u32, KvmVcpu>,
    last: [u64; kvm_counter::SLOTS as usize],
}

impl KvmProbe {
    /// Loads the program and attaches it to `kvm:kvm_page_fault`, counting the faults of
    /// the vCPU threads of `tgid`. Does not check [`attach_guard`]: callers do.
    pub fn attach(tgid: u32) -> Result<KvmProbe> {
        require()?;
        ensure_tracefs()?;
        let cfg = event_config(tgid)?;
        let mut loader = EbpfLoader::new();
        // The other programs' maps come with the object: keep them tiny.
        loader.map_max_entries("EVENTS", 4096);
        loader.map_max_entries("THREADS", 1);
        loader.map_max_entries("SEND_THREADS", 1);
        let mut bpf = loader.load(OBJECT).map_err(load_error)?;
        let mut config: Array<MapData, KvmConfig> = Array::try_from(take(&mut bpf, "KVM_CONFIG")?)?;
        config.set(0, cfg, 0).context("writing the kvm config")?;
        let state = PerCpuArray::try_from(take(&mut bpf, "KVM_STATE")?)?;
        let vcpus = HashMap::try_from(take(&mut bpf, "KVM_VCPUS")?)?;
        let prog: &mut TracePoint = bpf
            .program_mut(EVENT.1)
            .ok_or_else(|| anyhow!("program {} missing from the eBPF object", EVENT.1))?
            .try_into()?;
        prog.load().map_err(load_error)?;
        prog.attach(EVENT.0, EVENT.1)
            .map_err(|e| anyhow!("attaching to tracepoint {}:{}: {e}", EVENT.0, EVENT.1))?;
        let mut p = KvmProbe {
            _bpf: bpf,
            config,
            cfg,
            state,
            vcpus,
            last: [0; kvm_counter::SLOTS as usize],
        };
        p.last = p.counters()?;
        Ok(p)
    }

    /// Whether the kernel's record names the vCPU (Linux 6.0+), not only its thread.
    pub fn has_vcpu_id(&self) -> bool {
        self.cfg.flags & KVM_FLAG_VCPU_ID != 0
    }

    /// Counter deltas since the last call (or since attaching).
    pub fn take_deltas(&mut self) -> Result<KvmDeltas> {
        let now = self.counters()?;
        let d = |s: u32| now[s as usize].saturating_sub(self.last[s as usize]);
        let out = KvmDeltas {
            faults: d(kvm_counter::FAULTS),
            write_faults: d(kvm_counter::WRITE_FAULTS),
            vcpu_map_full: d(kvm_counter::VCPU_MAP_FULL),
        };
        self.last = now;
        Ok(out)
    }

    /// Faults per vCPU thread since attaching, most write faults first.
    pub fn vcpus(&self) -> Result<Vec<VcpuFaults>> {
        let mut v = Vec::new();
        for kv in self.vcpus.iter() {
            let (tid, c) = kv?;
            v.push(VcpuFaults {
                tid,
                vcpu_id: (c.vcpu_id != u32::MAX).then_some(c.vcpu_id),
                faults: c.faults,
                write_faults: c.write_faults,
            });
        }
        v.sort_by(|a, b| b.write_faults.cmp(&a.write_faults).then(a.tid.cmp(&b.tid)));
        Ok(v)
    }

    /// Stops counting (the program stays attached but matches no process).
    pub fn stop(&mut self) -> Result<()> {
        self.cfg.tgid = 0;
        self.config.set(0, self.cfg, 0)?;
        Ok(())
    }

    fn counters(&self) -> Result<[u64; kvm_counter::SLOTS as usize]> {
        let mut c = [0u64; kvm_counter::SLOTS as usize];
        for cpu in self.state.get(&0, 0)?.iter() {
            for (sum, v) in c.iter_mut().zip(cpu.counters.iter()) {
                *sum += v;
            }
        }
        Ok(c)
    }
}

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

fn take(bpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    bpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_1: &str = "name: kvm_page_fault\nID: 1234\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:unsigned int vcpu_id;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:unsigned long guest_rip;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:u64 fault_address;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:u64 error_code;\toffset:32;\tsize:8;\tsigned:0;\n";

    #[test]
    fn record_layouts() {
        let c = layout(7, FORMAT_6_1).unwrap();
        assert_eq!((c.tgid, c.vcpu_id_off, c.error_code_off), (7, 8, 32));
        assert_eq!(c.error_code_size, 8);
        assert_ne!(c.flags & KVM_FLAG_VCPU_ID, 0);
        // Before Linux 6.0: no vcpu_id, a 4-byte error code.
        let old = "format:\n\tfield:unsigned long fault_address;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:unsigned int error_code;\toffset:16;\tsize:4;\tsigned:0;\n";
        let c = layout(7, old).unwrap();
        assert_eq!((c.error_code_off, c.error_code_size, c.flags), (16, 4, 0));
        assert!(layout(7, "format:\n").is_err());
    }
}
