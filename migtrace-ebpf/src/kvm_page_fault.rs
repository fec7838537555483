//! The `kvm:kvm_page_fault` classic tracepoint: a KVM guest's page fault that KVM handles
//! (a nested page table miss or write-protect fault), in the vCPU thread's context. Counts
//! the target QEMU's faults per vCPU thread.
//!
//! A classic tracepoint, not a raw one: the record carries the vCPU id, whereas the raw
//! arguments carry a `struct kvm_vcpu *` whose layout cannot be read portably without
//! CO-RE. The field offsets come from the event's format file, through `KVM_CONFIG`.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::kvm;

#[tracepoint]
pub fn kvm_page_fault(ctx: TracePointContext) -> u32 {
    let _ = try_kvm_page_fault(&ctx);
    0
}

/// `None` when the fault was not counted (another process, or a read or lookup failed).
fn try_kvm_page_fault(ctx: &TracePointContext) -> Option<()> {
    kvm::count_page_fault(ctx)
}
