//! The KVM probe: the `kvm_page_fault` program on the `kvm:kvm_page_fault` tracepoint,
//! which counts a KVM guest's page faults per vCPU thread (see `source/kvm.rs` for why
//! these are the vCPUs' shares of the dirtying, and for the safety of attaching it).
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use migtrace_common::{kvm_counter, KvmConfig, KvmState, KvmVcpu, KVM_FLAG_VCPU_ID};

use super::{attach_tracepoint, ensure_tracefs, map, parse_format, take, MapSizes, TRACEFS};

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
        super::require()?;
        ensure_tracefs()?;
        let cfg = event_config(tgid)?;
        // The other programs' maps come with the object: keep them tiny.
        let mut bpf = super::load(MapSizes::default())?;
        let mut config: Array<MapData, KvmConfig> =
            Array::try_from(take(&mut bpf, map::KVM_CONFIG)?)?;
        config.set(0, cfg, 0).context("writing the kvm config")?;
        let state = PerCpuArray::try_from(take(&mut bpf, map::KVM_STATE)?)?;
        let vcpus = HashMap::try_from(take(&mut bpf, map::KVM_VCPUS)?)?;
        attach_tracepoint(&mut bpf, EVENT.0, EVENT.1)?;
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
        Ok(super::sum_counters(
            self.state.get(&0, 0)?.iter().map(|c| c.counters),
        ))
    }
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
