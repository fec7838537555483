//! What the send-path hooks share: the per-CPU counter bump and the target's send
//! accounting (per CPU and per thread). A full thread map is counted, never silent.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use migtrace_common::{send_counter, SendState, ThreadSend, SEND_FLAG_PROCESS};

use crate::maps::{SEND_CONFIG, SEND_STATE, SEND_THREADS};

const BPF_NOEXIST: u64 = 1;

#[inline(always)]
pub fn bump(st: &mut SendState, slot: u32, by: u64) {
    // Per-CPU: no other writer, a plain add is exact. `slot` is a constant in range.
    st.counters[slot as usize] += by;
}

/// Counts one `sock_sendmsg` return value `ret` when the current process is the target.
#[inline(always)]
pub fn count_send(ret: i32) -> Option<()> {
    let cfg = SEND_CONFIG.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    if cfg.flags & SEND_FLAG_PROCESS == 0 || cfg.tgid == 0 || (pid_tgid >> 32) as u32 != cfg.tgid {
        return None;
    }
    // SAFETY: per-CPU value, only this program on this CPU writes it.
    let st = unsafe { &mut *SEND_STATE.get_ptr_mut(0)? };
    if ret < 0 {
        bump(st, send_counter::SEND_ERRORS, 1);
        return Some(());
    }
    if ret == 0 {
        return Some(());
    }
    let bytes = ret as u64;
    bump(st, send_counter::SEND_BYTES, bytes);
    bump(st, send_counter::SEND_CALLS, 1);
    credit_thread(st, pid_tgid as u32, bytes);
    Some(())
}

/// Adds the send to its thread's entry, creating it if needed.
#[inline(always)]
fn credit_thread(st: &mut SendState, tid: u32, bytes: u64) {
    if add_to_thread(tid, bytes) {
        return;
    }
    let first = ThreadSend {
        bytes,
        calls: 1,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // BPF_NOEXIST: if another CPU created the entry meanwhile, add to it instead.
    if SEND_THREADS.insert(tid, first, BPF_NOEXIST).is_ok() || add_to_thread(tid, bytes) {
        return;
    }
    bump(st, send_counter::THREAD_MAP_FULL, 1);
}

/// Adds one send of `bytes` to the thread's entry; false when it has none.
#[inline(always)]
fn add_to_thread(tid: u32, bytes: u64) -> bool {
    let Some(v) = SEND_THREADS.get_ptr_mut(tid) else {
        return false;
    };
    // SAFETY: `v` comes from a successful lookup and stays valid until the program returns
    // (map values are freed after an RCU grace period). Other CPUs may add to the same entry:
    // the atomic adds (BPF `lock xadd`) keep the sums exact; nothing else is ordered by them.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).bytes, bytes);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).calls, 1);
    }
    true
}
