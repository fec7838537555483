//! migtrace's kernel programs: count the write faults of one target process.
//!
//! Programs (one file each, named after the hook, as in kunai and aya-template):
//! - [`page_fault_user`]: raw tracepoint `page_fault_user`, every user-mode page fault on the
//!   machine;
//! - [`page_fault_kernel`]: raw tracepoint `page_fault_kernel`, kernel-mode faults on user
//!   addresses (the kernel writing the target's memory on its behalf: read(2) into a
//!   buffer, rseq and robust-futex updates). They dirty pages too, and under soft-dirty write
//!   protection they are the only trace of such writes.
//!
//! Both hand the fault to [`fault`], which filters on the target and counts. Maps ([`maps`]):
//! - `CONFIG` (array, 1 entry): the target's tgid, `FLAG_*` bits, address range and which
//!   HyperLogLog buffer to write; written by user space;
//! - `STATE` (per-CPU array, 1 entry): fault counters and the thread run cache;
//! - `HLL` (per-CPU array, 2 entries): HyperLogLog sketches of the dirtied page numbers, one
//!   per epoch buffer;
//! - `THREADS` (hash map tid -> write faults);
//! - `EVENTS` (ring buffer of `PageEvent`, only with `FLAG_RECORD_PAGES`).
//!
//! Send path (the link side of the race, `watch --iface`), in [`send`]:
//! - [`net_dev_xmit`]: classic tracepoint `net/net_dev_xmit`, bytes and packets the watched
//!   interface transmitted;
//! - [`sock_send_length`]: raw tracepoint `sock_send_length`, the target's socket sends,
//!   per CPU (`SEND_STATE`) and per thread (`SEND_THREADS`), configured by `SEND_CONFIG`.
//!
//! KVM guests (the vCPU side of a guest's dirtying, `watch` on a QEMU with `-accel kvm`), in
//! [`kvm`]:
//! - [`kvm_page_fault`]: classic tracepoint `kvm:kvm_page_fault`, the target QEMU's guest page
//!   faults per vCPU thread (`KVM_CONFIG`, `KVM_STATE`, `KVM_VCPUS`).
//!
//! Their layouts are `migtrace-common`'s, shared with the user-space loader.
//!
//! Hot-path budget: every fault of every process on the machine enters these programs, so
//! the non-target path is one array lookup and a compare, and the target path is two per-CPU
//! array lookups (counters plus thread run cache, and a HyperLogLog register). Hash-map work
//! happens only when the faulting thread changes on a CPU; ring-buffer output only when
//! user space asked for exact page identities (`FLAG_RECORD_PAGES`). Nothing is lost
//! silently: a full map or ring buffer bumps a counter that user space reports.
#![no_std]
#![no_main]
// `atomic_xadd` compiles to BPF's `lock xadd`; core's AtomicU64 is not offered on this target.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod fault;
mod kvm;
mod kvm_page_fault;
mod maps;
mod net_dev_xmit;
mod page_fault_kernel;
mod page_fault_user;
mod send;
mod sock_send_length;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
