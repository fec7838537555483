//! The `page_fault_user` raw tracepoint: every user-mode page fault on the machine.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::fault;

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    let _ = try_page_fault_user(&ctx);
    0
}

/// `None` when the fault was not counted (not the target, or a map lookup failed).
fn try_page_fault_user(ctx: &RawTracePointContext) -> Option<()> {
    fault::count(ctx)
}
