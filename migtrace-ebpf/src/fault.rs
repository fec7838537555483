//! What both fault hooks do with a fault: drop it unless it is the target's, then count it
//! by kind, add its page to this epoch's HyperLogLog, credit its thread, and (with
//! `FLAG_RECORD_PAGES`) send its page to user space.
//!
//! Raw tracepoint arguments of `page_fault_user` and `page_fault_kernel` are
//! `(address, regs, error_code)`, all register-sized.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use migtrace_common::{
    counter, hll_index_rank, page_hash, Config, CpuState, PageEvent, FLAG_RANGE, FLAG_RECORD_PAGES,
    HLL_REGS, PAGE_SHIFT,
};

use crate::maps::{CONFIG, EVENTS, HLL, STATE, THREADS};

const BPF_NOEXIST: u64 = 1;
const X86_PF_PROT: u64 = 1;
const X86_PF_WRITE: u64 = 2;

/// Counts the fault when the current process is the target. `None` when it is not, or when
/// a map lookup failed.
#[inline(always)]
pub fn count(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != cfg.tgid || cfg.tgid == 0 {
        return None;
    }
    count_target_fault(ctx, cfg, pid_tgid as u32)
}

#[inline(always)]
fn count_target_fault(ctx: &RawTracePointContext, cfg: &Config, tid: u32) -> Option<()> {
    let (address, error_code): (u64, u64) = (ctx.arg(0), ctx.arg(2));
    // SAFETY: a per-CPU value; only this CPU writes it, and only while this program runs
    // (programs do not preempt each other on one CPU).
    let st = unsafe { &mut *STATE.get_ptr_mut(0)? };
    if cfg.flags & FLAG_RANGE != 0 && (address < cfg.addr_lo || address >= cfg.addr_hi) {
        bump(st, counter::OUT_OF_RANGE, 1);
        return Some(());
    }
    if error_code & X86_PF_WRITE == 0 {
        bump(st, counter::READ, 1);
        return Some(());
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
    add_to_hll(cfg, page);
    credit_thread(st, tid);
    if cfg.flags & FLAG_RECORD_PAGES != 0 {
        record_page(st, page, tid, error_code);
    }
    Some(())
}

#[inline(always)]
fn bump(st: &mut CpuState, slot: u32, by: u64) {
    // Per-CPU: no other writer, a plain add is exact. `slot` is a constant in range.
    st.counters[slot as usize] += by;
}

/// Raises the page's register in this CPU's sketch of the current epoch.
#[inline(always)]
fn add_to_hll(cfg: &Config, page: u64) {
    let (idx, rank) = hll_index_rank(page_hash(page));
    if let Some(hll) = HLL.get_ptr_mut(cfg.hll_epoch & 1) {
        // SAFETY: per-CPU value, idx is masked to the register count.
        let r = unsafe { &mut (*hll).regs[idx & (HLL_REGS - 1)] };
        if *r < rank {
            *r = rank;
        }
    }
}

/// Per-thread counts: a run-length cache per CPU; the hash map is touched only when the
/// faulting thread on this CPU changes.
#[inline(always)]
fn credit_thread(st: &mut CpuState, tid: u32) {
    if st.run.tid == tid {
        st.run.count += 1;
    } else {
        if st.run.count != 0 {
            flush_thread(st, st.run.tid, st.run.count);
        }
        st.run.tid = tid;
        st.run.count = 1;
    }
}

/// Sends the page to user space; a full ring buffer is counted, not silent.
#[inline(always)]
fn record_page(st: &mut CpuState, page: u64, tid: u32, error_code: u64) {
    match EVENTS.reserve::<PageEvent>(0) {
        Some(mut e) => {
            e.write(PageEvent {
                page: page << PAGE_SHIFT,
                // SAFETY: a BPF helper without arguments or preconditions.
                time_ns: unsafe { bpf_ktime_get_ns() },
                tid,
                error_code: error_code as u32,
            });
            e.submit(0);
        }
        None => bump(st, counter::RINGBUF_FULL, 1),
    }
}

/// Adds a thread's cached run to `THREADS`; a full map is counted, not silent.
#[inline(always)]
fn flush_thread(st: &mut CpuState, tid: u32, count: u64) {
    if add_to_thread(tid, count) {
        return;
    }
    // BPF_NOEXIST: when another CPU inserted this thread in the meantime, add to its entry
    // instead of overwriting it.
    if THREADS.insert(tid, count, BPF_NOEXIST).is_ok() {
        return;
    }
    if add_to_thread(tid, count) {
        return;
    }
    bump(st, counter::THREAD_MAP_FULL, count);
}

/// Adds `count` to the thread's `THREADS` entry; false when it has none.
#[inline(always)]
fn add_to_thread(tid: u32, count: u64) -> bool {
    let Some(v) = THREADS.get_ptr_mut(tid) else {
        return false;
    };
    // SAFETY: `v` comes from a successful lookup, so it points to this entry's u64 value,
    // 8-byte aligned, which the kernel keeps valid until the program returns even if another
    // CPU deletes the entry meanwhile (map values are freed after an RCU grace period). Other
    // CPUs may add to the same entry concurrently: the atomic add (BPF `lock xadd`) keeps
    // the sum exact, and Relaxed suffices because no other memory access is ordered by it.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(v, count) };
    true
}
