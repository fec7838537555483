//! migtrace's kernel programs: one raw tracepoint on `page_fault_user`.
//!
//! Hot-path budget: every fault of every process on the machine enters this program, so the
//! non-target path is one array lookup and a compare, and the target path is two per-CPU
//! array lookups (counters plus thread run cache, and a HyperLogLog register). Hash-map work
//! happens only when the faulting thread changes on a CPU; ring-buffer output only when
//! user space asked for exact page identities (`FLAG_RECORD_PAGES`). Nothing is lost
//! silently: a full map or ring buffer bumps a counter that user space reports.
//!
//! Raw tracepoint arguments of `page_fault_user` are `(address, regs, error_code)`.
#![no_std]
#![no_main]
// `atomic_xadd` compiles to BPF's `lock xadd`; core's AtomicU64 is not offered on this target.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use migtrace_common::{
    counter, hll_index_rank, page_hash, Config, CpuState, Hll, PageEvent, FLAG_RANGE,
    FLAG_RECORD_PAGES, PAGE_SHIFT,
};

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Counters and the thread run cache, one entry per CPU.
#[map]
static STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Two epoch buffers; `Config::hll_epoch` says which one the kernel writes.
#[map]
static HLL: PerCpuArray<Hll> = PerCpuArray::with_max_entries(2, 0);

/// Write faults per thread id. User space may resize it at load time.
#[map]
static THREADS: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Page events (only with `FLAG_RECORD_PAGES`). User space may resize it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

const BPF_NOEXIST: u64 = 1;
const X86_PF_PROT: u64 = 1;
const X86_PF_WRITE: u64 = 2;

#[inline(always)]
fn bump(st: &mut CpuState, slot: u32, by: u64) {
    // Per-CPU: no other writer, a plain add is exact. `slot` is a constant in range.
    st.counters[slot as usize] += by;
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    on_fault(&ctx)
}

/// Kernel-mode faults on user addresses: the kernel writing the target's memory on its
/// behalf (read(2) into a buffer, rseq and robust-futex updates). They dirty pages too, and
/// under soft-dirty write protection they are the only trace of such writes.
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    let address: u64 = ctx.arg(0);
    if address >= USER_ADDR_END {
        return 0;
    }
    on_fault(&ctx)
}

/// End of the x86-64 user address space (4-level paging; 5-level kernels put user space
/// below 2^56, but faults above 2^47 only happen for processes that asked for it).
const USER_ADDR_END: u64 = 1 << 47;

#[inline(always)]
fn on_fault(ctx: &RawTracePointContext) -> i32 {
    let cfg = match CONFIG.get(0) {
        Some(c) => c,
        None => return 0,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != cfg.tgid || cfg.tgid == 0 {
        return 0;
    }
    on_target_fault(ctx, cfg, pid_tgid as u32);
    0
}

#[inline(always)]
fn on_target_fault(ctx: &RawTracePointContext, cfg: &Config, tid: u32) {
    // page_fault_user has (address, regs, error_code) arguments, all register-sized.
    let (address, error_code): (u64, u64) = (ctx.arg(0), ctx.arg(2));
    let st = match STATE.get_ptr_mut(0) {
        // SAFETY: per-CPU value; only this CPU writes it while the program runs.
        Some(p) => unsafe { &mut *p },
        None => return,
    };
    if cfg.flags & FLAG_RANGE != 0 && (address < cfg.addr_lo || address >= cfg.addr_hi) {
        bump(st, counter::OUT_OF_RANGE, 1);
        return;
    }
    if error_code & X86_PF_WRITE == 0 {
        bump(st, counter::READ, 1);
        return;
    }
    bump(
        st,
        if error_code & X86_PF_PROT == 0 {
            counter::WRITE_NOT_PRESENT
        } else {
            counter::WRITE_PROTECT
        },
        1,
    );

    let page = address >> PAGE_SHIFT;
    let (idx, rank) = hll_index_rank(page_hash(page));
    if let Some(hll) = HLL.get_ptr_mut(cfg.hll_epoch & 1) {
        // SAFETY: per-CPU value, idx is masked to the register count.
        let r = unsafe { &mut (*hll).regs[idx & (migtrace_common::HLL_REGS - 1)] };
        if *r < rank {
            *r = rank;
        }
    }

    // Per-thread counts: a run-length cache per CPU; the hash map is touched only when the
    // faulting thread on this CPU changes.
    if st.run.tid == tid {
        st.run.count += 1;
    } else {
        if st.run.count != 0 {
            flush_thread(st, st.run.tid, st.run.count);
        }
        st.run.tid = tid;
        st.run.count = 1;
    }

    if cfg.flags & FLAG_RECORD_PAGES != 0 {
        match EVENTS.reserve::<PageEvent>(0) {
            Some(mut e) => {
                e.write(PageEvent {
                    page: page << PAGE_SHIFT,
                    time_ns: unsafe { bpf_ktime_get_ns() },
                    tid,
                    error_code: error_code as u32,
                });
                e.submit(0);
            }
            None => bump(st, counter::RINGBUF_FULL, 1),
        }
    }
}

#[inline(always)]
fn flush_thread(st: &mut CpuState, tid: u32, count: u64) {
    if let Some(v) = THREADS.get_ptr_mut(&tid) {
        // Other CPUs may flush the same thread concurrently.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                v, count,
            )
        };
        return;
    }
    // BPF_NOEXIST: when another CPU inserted this thread in the meantime, add to its entry
    // instead of overwriting it.
    if THREADS.insert(&tid, &count, BPF_NOEXIST).is_ok() {
        return;
    }
    if let Some(v) = THREADS.get_ptr_mut(&tid) {
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                v, count,
            )
        };
        return;
    }
    bump(st, counter::THREAD_MAP_FULL, count);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
