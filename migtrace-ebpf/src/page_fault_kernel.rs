//! The `page_fault_kernel` raw tracepoint, for faults on user addresses only: the kernel
//! writing the target's memory on its behalf (read(2) into a buffer, rseq and robust-futex
//! updates). They dirty pages too, and under soft-dirty write protection they are the only
//! trace of such writes.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::fault;

/// End of the x86-64 user address space (4-level paging; 5-level kernels put user space
/// below 2^56, but faults above 2^47 only happen for processes that asked for it).
const USER_ADDR_END: u64 = 1 << 47;

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    let _ = try_page_fault_kernel(&ctx);
    0
}

/// `None` when the fault was not counted (a kernel address, not the target, or a map lookup
/// failed).
fn try_page_fault_kernel(ctx: &RawTracePointContext) -> Option<()> {
    let address: u64 = ctx.arg(0);
    if address >= USER_ADDR_END {
        return None;
    }
    fault::count(ctx)
}
