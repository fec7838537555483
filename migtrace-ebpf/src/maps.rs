//! The maps the programs share with user space. Names and value types are part of the ABI:
//! the loader in `migtrace` finds them by these names, with `migtrace-common`'s layouts.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use migtrace_common::{Config, CpuState, Hll, SendConfig, SendState, ThreadSend};

/// The target and what to record, written by user space, read on every fault.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Counters and the thread run cache, one entry per CPU.
#[map]
pub static STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Two epoch buffers; `Config::hll_epoch` says which one the kernel writes.
#[map]
pub static HLL: PerCpuArray<Hll> = PerCpuArray::with_max_entries(2, 0);

/// Write faults per thread id. User space may resize it at load time.
#[map]
pub static THREADS: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Page events (only with `FLAG_RECORD_PAGES`). User space may resize it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// The send-path programs' settings (interface, field offsets, target), written by user space.
#[map]
pub static SEND_CONFIG: Array<SendConfig> = Array::with_max_entries(1, 0);

/// Send-path counters, one entry per CPU.
#[map]
pub static SEND_STATE: PerCpuArray<SendState> = PerCpuArray::with_max_entries(1, 0);

/// Bytes and calls sent per thread of the target. User space may resize it at load time.
#[map]
pub static SEND_THREADS: HashMap<u32, ThreadSend> = HashMap::with_max_entries(4096, 0);
