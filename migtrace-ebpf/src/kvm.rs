//! What the KVM hooks share: the maps of the `kvm:kvm_page_fault` program and the counting.
//!
//! A KVM guest writes its RAM through the nested page tables (EPT/NPT): no host page fault
//! shows it. Once the host write-protects guest RAM (a soft-dirty clear does, through the
//! MMU notifier that makes KVM drop its mappings), the guest's next access to each page
//! exits to KVM, which reports it on `kvm:kvm_page_fault` in the context of the vCPU thread
//! that took it. Counting those per thread (and per vCPU id, which the record carries on
//! Linux 6.0+) says which vCPU dirtied what share. Maps:
//! - `KVM_CONFIG` (array, 1 entry): the QEMU process and the record's field offsets;
//! - `KVM_STATE` (per-CPU array, 1 entry): fault counters, map-full included;
//! - `KVM_VCPUS` (hash map tid -> faults and vCPU id).
//!
//! Hot path: every KVM guest page fault on the machine enters, so the non-target path is
//! one array lookup and a compare; the target path one per-CPU lookup and one hash lookup.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};
use migtrace_common::{kvm_counter, KvmConfig, KvmState, KvmVcpu, KVM_FLAG_VCPU_ID};

const BPF_NOEXIST: u64 = 1;
/// Error-code bit of a write access (`PFERR_WRITE_MASK`, the same for NPT and EPT faults as
/// KVM reports them).
const PFERR_WRITE: u64 = 2;

/// The target and the record layout, written by user space.
#[map]
pub static KVM_CONFIG: Array<KvmConfig> = Array::with_max_entries(1, 0);

/// Counters, one entry per CPU.
#[map]
pub static KVM_STATE: PerCpuArray<KvmState> = PerCpuArray::with_max_entries(1, 0);

/// Faults per vCPU thread. User space may resize it at load time.
#[map]
pub static KVM_VCPUS: HashMap<u32, KvmVcpu> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn bump(st: &mut KvmState, slot: u32, by: u64) {
    // Per-CPU: no other writer, a plain add is exact. `slot` is a constant in range.
    st.counters[slot as usize] += by;
}

/// Counts one `kvm_page_fault` record when the current process is the target.
#[inline(always)]
pub fn count_page_fault(ctx: &TracePointContext) -> Option<()> {
    let cfg = KVM_CONFIG.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    if cfg.tgid == 0 || (pid_tgid >> 32) as u32 != cfg.tgid {
        return None;
    }
    let error_code: u64 = if cfg.error_code_size == 8 {
        // SAFETY: bpf_probe_read_kernel of the record at an offset from its format file.
        unsafe { ctx.read_at::<u64>(cfg.error_code_off as usize) }.ok()?
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(cfg.error_code_off as usize) }.ok()? as u64
    };
    let vcpu_id: u32 = if cfg.flags & KVM_FLAG_VCPU_ID != 0 {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(cfg.vcpu_id_off as usize) }.ok()?
    } else {
        u32::MAX
    };
    let write = (error_code & PFERR_WRITE != 0) as u64;
    // SAFETY: per-CPU value, only this program on this CPU writes it.
    let st = unsafe { &mut *KVM_STATE.get_ptr_mut(0)? };
    bump(st, kvm_counter::FAULTS, 1);
    bump(st, kvm_counter::WRITE_FAULTS, write);
    let tid = pid_tgid as u32;
    if add_to_vcpu(tid, write) {
        return Some(());
    }
    let first = KvmVcpu {
        vcpu_id,
        _pad: 0,
        faults: 1,
        write_faults: write,
    };
    // BPF_NOEXIST: if another CPU created the entry meanwhile, add to it instead.
    if KVM_VCPUS.insert(tid, first, BPF_NOEXIST).is_ok() || add_to_vcpu(tid, write) {
        return Some(());
    }
    bump(st, kvm_counter::VCPU_MAP_FULL, 1);
    Some(())
}

/// Adds one fault (a write when `write` is 1) to the thread's entry; false when it has none.
#[inline(always)]
fn add_to_vcpu(tid: u32, write: u64) -> bool {
    let Some(v) = KVM_VCPUS.get_ptr_mut(tid) else {
        return false;
    };
    // SAFETY: `v` comes from a successful lookup and stays valid until the program returns
    // (map values are freed after an RCU grace period). The atomic adds keep the sums exact
    // when two CPUs run the same thread's faults back to back.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).faults, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).write_faults, write);
    }
    true
}
