//! The binary interface between migtrace's kernel programs (`migtrace-ebpf`) and its user
//! space (`migtrace`). Everything both sides read or write lives here, `#[repr(C)]`, so a
//! layout change is one edit that both sides see.
//!
//! The kernel side is built for `bpfel-unknown-none` (little-endian, 64-bit), so plain
//! `u32`/`u64` fields with explicit padding give the same layout on both sides.
#![no_std]

/// Base-2 logarithm of the page size the fault path assumes (4 KiB base pages).
/// Transparent huge pages fault once per 2 MiB; user space warns when the target has them.
pub const PAGE_SHIFT: u32 = 12;

/// Slots of [`CpuState::counters`]. Counters only ever grow; user space takes deltas, so
/// reading them never races with the kernel updating them.
pub mod counter {
    /// Write fault on a page that was not present: first touch (or a refault after swap/reclaim).
    pub const WRITE_NOT_PRESENT: u32 = 0;
    /// Write fault on a present page: copy-on-write, zero-page replacement, write-protect
    /// (soft-dirty, userfaultfd-wp) or a permission error.
    pub const WRITE_PROTECT: u32 = 1;
    /// Read or instruction fetch faults; they dirty nothing but show the target is faulting.
    pub const READ: u32 = 2;
    /// Target faults outside the configured address range (only with `FLAG_RANGE`).
    pub const OUT_OF_RANGE: u32 = 3;
    /// Per-thread counts lost because the `THREADS` map was full.
    pub const THREAD_MAP_FULL: u32 = 4;
    /// Page events lost because the `EVENTS` ring buffer was full.
    pub const RINGBUF_FULL: u32 = 5;
    /// Number of slots.
    pub const SLOTS: u32 = 6;
}

/// `Config::flags`: only count faults with `addr_lo <= address < addr_hi`.
pub const FLAG_RANGE: u32 = 1;
/// `Config::flags`: send every write fault's page to the `EVENTS` ring buffer
/// (exact page identities; used by the soft-dirty backend, where a page faults at most
/// once per epoch).
pub const FLAG_RECORD_PAGES: u32 = 2;

/// The one entry of the `CONFIG` array, written by user space, read on every fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Thread-group id (the process id in the initial pid namespace) to trace. 0 = none.
    pub tgid: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Which of the two HyperLogLog buffers the kernel updates (0 or 1). User space flips it
    /// at each epoch boundary, then reads and clears the other one.
    pub hll_epoch: u32,
    pub _pad: u32,
    /// Address range for `FLAG_RANGE`, half open.
    pub addr_lo: u64,
    pub addr_hi: u64,
}

/// HyperLogLog of the unique dirtied page numbers, one per CPU per epoch buffer.
/// 2^12 registers give a standard error of 1.04/sqrt(4096) = 1.6 %, and sketches merge
/// with a register-wise max, which is how user space gets unique pages over any window.
pub const HLL_BITS: u32 = 12;
/// Number of HyperLogLog registers.
pub const HLL_REGS: usize = 1 << HLL_BITS;

/// One HyperLogLog sketch: register `i` holds the largest rank seen for hashes whose top
/// `HLL_BITS` bits are `i`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hll {
    pub regs: [u8; HLL_REGS],
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            regs: [0; HLL_REGS],
        }
    }
}

/// The page hash shared by both sides: the 64-bit finaliser of MurmurHash3 (fmix64).
/// Cheap (two multiplies), no tables, and well mixed in every bit.
#[inline(always)]
pub fn page_hash(page: u64) -> u64 {
    let mut h = page;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Register index and rank (position of the first set bit, 1-based, of the remaining
/// bits) of a page hash. The rank is computed by halving steps rather than
/// `leading_zeros`, so the eBPF code stays small and loop-free.
#[inline(always)]
pub fn hll_index_rank(hash: u64) -> (usize, u8) {
    let idx = (hash >> (64 - HLL_BITS)) as usize;
    // The low 64 - HLL_BITS bits, shifted to the top, with a sentinel bit so the rank is bounded.
    let mut w = (hash << HLL_BITS) | (1u64 << (HLL_BITS - 1));
    let mut rank: u8 = 1;
    if w >> 32 == 0 {
        rank += 32;
        w <<= 32;
    }
    if w >> 48 == 0 {
        rank += 16;
        w <<= 16;
    }
    if w >> 56 == 0 {
        rank += 8;
        w <<= 8;
    }
    if w >> 60 == 0 {
        rank += 4;
        w <<= 4;
    }
    if w >> 62 == 0 {
        rank += 2;
        w <<= 2;
    }
    if w >> 63 == 0 {
        rank += 1;
    }
    (idx & (HLL_REGS - 1), rank)
}

/// Everything the fault path updates per CPU, in one per-CPU array entry so that a fault
/// costs one map lookup for all of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuState {
    pub counters: [u64; counter::SLOTS as usize],
    pub run: ThreadRun,
}

/// Per-CPU run-length cache of the thread that faulted last on this CPU. The fault path only
/// touches the `THREADS` hash map when the thread changes, which keeps the common case to one
/// per-CPU array access.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRun {
    pub tid: u32,
    pub _pad: u32,
    /// Write faults of `tid` not yet added to `THREADS`.
    pub count: u64,
}

/// A page event in the `EVENTS` ring buffer (only with `FLAG_RECORD_PAGES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageEvent {
    /// Faulting address, rounded down to its page.
    pub page: u64,
    /// `bpf_ktime_get_ns()` at the fault.
    pub time_ns: u64,
    pub tid: u32,
    /// Raw x86 page-fault error code (bit 0 present, bit 1 write).
    pub error_code: u32,
}

/// Slots of [`SendState::counters`] (the send-path programs). Like the fault counters they
/// only grow; user space takes deltas.
pub mod send_counter {
    /// Bytes of packets handed to the watched interface's driver with `NETDEV_TX_OK`
    /// (`net/net_dev_xmit`, skb length: headers included, one GSO super-packet per event).
    pub const IF_BYTES: u32 = 0;
    /// Those packets (skbs; a GSO skb counts once).
    pub const IF_PACKETS: u32 = 1;
    /// Bytes the target's sendmsg calls returned (`sock_send_length`: payload accepted by
    /// the socket, any family).
    pub const SEND_BYTES: u32 = 2;
    /// The target's sendmsg calls that sent at least one byte.
    pub const SEND_CALLS: u32 = 3;
    /// The target's sendmsg calls that failed (negative return, e.g. EAGAIN).
    pub const SEND_ERRORS: u32 = 4;
    /// Sends whose per-thread attribution was lost because `SEND_THREADS` was full.
    pub const THREAD_MAP_FULL: u32 = 5;
    /// Number of slots.
    pub const SLOTS: u32 = 6;
}

/// `SendConfig::flags`: count `net_dev_xmit` on the interface named in `SendConfig`.
pub const SEND_FLAG_IFACE: u32 = 1;
/// `SendConfig::flags`: count the sends of `SendConfig::tgid`.
pub const SEND_FLAG_PROCESS: u32 = 2;

/// The one entry of the `SEND_CONFIG` array, written by user space. The tracepoint field
/// offsets come from `/sys/kernel/tracing/events/net/net_dev_xmit/format` at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendConfig {
    /// Process whose sends are counted (initial pid namespace). 0 = none.
    pub tgid: u32,
    /// `SEND_FLAG_*` bits.
    pub flags: u32,
    /// Offset of `len` (u32) in the `net_dev_xmit` record.
    pub len_off: u32,
    /// Offset of `rc` (i32) in the record.
    pub rc_off: u32,
    /// Offset of the `__data_loc char[] name` word (u32: length << 16 | offset).
    pub name_off: u32,
    /// Length of the interface name including its NUL, as the `__data_loc` word says it.
    pub name_len: u32,
    /// The interface name, NUL-padded to 16 bytes (IFNAMSIZ), as two little-endian words.
    pub name: [u64; 2],
    /// Which bytes of `name` to compare (the name and its NUL), as two words.
    pub name_mask: [u64; 2],
}

/// Send-path counters, one entry per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SendState {
    pub counters: [u64; send_counter::SLOTS as usize],
}

/// Value of the `SEND_THREADS` hash map (key: thread id): what the thread sent so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSend {
    pub bytes: u64,
    pub calls: u64,
    /// The thread's name at its first send (`bpf_get_current_comm`), NUL-padded: QEMU names
    /// its threads before they send, and the name survives the thread's exit.
    pub comm: [u8; 16],
}

/// Slots of [`KvmState::counters`] (the `kvm:kvm_page_fault` program). Like the fault
/// counters they only grow; user space takes deltas.
pub mod kvm_counter {
    /// The target's guest page faults that KVM handled (nested page table faults: the
    /// guest touched guest-physical memory KVM had not mapped, or wrote memory it had
    /// write-protected, e.g. after a soft-dirty clear).
    pub const FAULTS: u32 = 0;
    /// Of those, the ones with the write bit in the error code: the guest's first write to
    /// a page (4 KiB, or 2 MiB where the host backs it with a huge page) since it was
    /// write-protected.
    pub const WRITE_FAULTS: u32 = 1;
    /// Faults whose per-thread (per-vCPU) attribution was lost because `KVM_VCPUS` was full.
    pub const VCPU_MAP_FULL: u32 = 2;
    /// Number of slots.
    pub const SLOTS: u32 = 3;
}

/// `KvmConfig::flags`: the event record has a `vcpu_id` field (Linux 6.0 and later) at
/// `KvmConfig::vcpu_id_off`.
pub const KVM_FLAG_VCPU_ID: u32 = 1;

/// The one entry of the `KVM_CONFIG` array, written by user space. Offsets come from
/// `/sys/kernel/tracing/events/kvm/kvm_page_fault/format` at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmConfig {
    /// The QEMU process whose vCPU threads are counted (initial pid namespace). 0 = none.
    pub tgid: u32,
    /// `KVM_FLAG_*` bits.
    pub flags: u32,
    /// Offset of `vcpu_id` (u32) in the record, with `KVM_FLAG_VCPU_ID`.
    pub vcpu_id_off: u32,
    /// Offset of `error_code` in the record.
    pub error_code_off: u32,
    /// Size of `error_code`: 8 (u64, Linux 6.0+) or 4 (unsigned int before).
    pub error_code_size: u32,
    pub _pad: u32,
}

/// Counters of the `kvm_page_fault` program, one entry per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmState {
    pub counters: [u64; kvm_counter::SLOTS as usize],
}

/// Value of the `KVM_VCPUS` hash map (key: thread id of the vCPU thread that took the
/// fault): its guest page faults so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmVcpu {
    /// The vCPU's id as KVM knows it (`u32::MAX` when the record has none).
    pub vcpu_id: u32,
    pub _pad: u32,
    pub faults: u64,
    pub write_faults: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Hll {}
    unsafe impl aya::Pod for super::ThreadRun {}
    unsafe impl aya::Pod for super::CpuState {}
    unsafe impl aya::Pod for super::PageEvent {}
    unsafe impl aya::Pod for super::SendConfig {}
    unsafe impl aya::Pod for super::SendState {}
    unsafe impl aya::Pod for super::ThreadSend {}
    unsafe impl aya::Pod for super::KvmConfig {}
    unsafe impl aya::Pod for super::KvmState {}
    unsafe impl aya::Pod for super::KvmVcpu {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_matches_leading_zeros() {
        for &h in &[
            0u64,
            1,
            0xffff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            0x0000_0800_0000_0000,
            12345678901234567,
        ] {
            let (idx, rank) = hll_index_rank(h);
            assert_eq!(idx as u64, h >> (64 - HLL_BITS));
            let rest = h << HLL_BITS;
            let expect = if rest == 0 {
                64 - HLL_BITS + 1
            } else {
                rest.leading_zeros() + 1
            };
            assert_eq!(rank as u32, expect.min(64 - HLL_BITS + 1), "hash {h:#x}");
        }
        for i in 0..100_000u64 {
            let h = page_hash(i);
            let (_, rank) = hll_index_rank(h);
            let rest = h << HLL_BITS;
            let expect = if rest == 0 {
                64 - HLL_BITS + 1
            } else {
                (rest.leading_zeros() + 1).min(64 - HLL_BITS + 1)
            };
            assert_eq!(rank as u32, expect);
        }
    }
}
