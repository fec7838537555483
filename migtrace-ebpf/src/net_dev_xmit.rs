//! The `net/net_dev_xmit` classic tracepoint: a packet handed to a device driver. Counts the
//! bytes and packets the watched interface transmitted (all processes, headers included).
//!
//! A classic tracepoint, not a raw one: its record carries the device name, whereas the raw
//! arguments carry a `struct net_device *` whose layout this kernel's programs cannot read
//! portably without CO-RE. The field offsets come from the event's format file, through
//! `SEND_CONFIG`.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use migtrace_common::{send_counter, SEND_FLAG_IFACE};

use crate::{
    maps::{SEND_CONFIG, SEND_STATE},
    send,
};

#[tracepoint]
pub fn net_dev_xmit(ctx: TracePointContext) -> u32 {
    let _ = try_net_dev_xmit(&ctx);
    0
}

/// `None` when the packet was not counted (another interface, a failed send, a read error).
fn try_net_dev_xmit(ctx: &TracePointContext) -> Option<()> {
    let cfg = SEND_CONFIG.get(0)?;
    if cfg.flags & SEND_FLAG_IFACE == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel of the tracepoint record at offsets from its format file.
    let loc: u32 = unsafe { ctx.read_at(cfg.name_off as usize) }.ok()?;
    if loc >> 16 != cfg.name_len {
        return None;
    }
    // SAFETY: as above; bytes past the name are masked out.
    let name: [u64; 2] = unsafe { ctx.read_at((loc & 0xffff) as usize) }.ok()?;
    if name[0] & cfg.name_mask[0] != cfg.name[0] || name[1] & cfg.name_mask[1] != cfg.name[1] {
        return None;
    }
    // SAFETY: as above.
    let rc: i32 = unsafe { ctx.read_at(cfg.rc_off as usize) }.ok()?;
    if rc != 0 {
        // NETDEV_TX_BUSY and friends: the packet is requeued and shows up again.
        return None;
    }
    // SAFETY: as above.
    let len: u32 = unsafe { ctx.read_at(cfg.len_off as usize) }.ok()?;
    let st = SEND_STATE.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, only this program on this CPU writes it.
    let st = unsafe { &mut *st };
    send::bump(st, send_counter::IF_BYTES, len as u64);
    send::bump(st, send_counter::IF_PACKETS, 1);
    Some(())
}
