//! The `sock_send_length` raw tracepoint: the return value of every `sock_sendmsg` on the
//! machine (send, sendto, sendmsg, write on a socket, splice to a socket). Counts the
//! target's sends: bytes per CPU and per thread.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::send;

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_send_length(&ctx);
    0
}

/// `None` when the send was not counted (not the target, or a map lookup failed).
fn try_sock_send_length(ctx: &RawTracePointContext) -> Option<()> {
    // Arguments: (struct sock *sk, int ret, int flags).
    let ret: u64 = ctx.arg(1);
    send::count_send(ret as u32 as i32)
}
