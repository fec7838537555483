//! A QEMU process as a migration target: a guest is not a process. Guest RAM is one or a
//! few mappings inside QEMU, next to QEMU's own memory (the TCG translation buffer, the
//! heap, ROMs), and only guest RAM is what a live migration copies.
//!
//! - [`cmdline`]: the typed command line (`/proc/PID/cmdline`);
//! - [`ram`]: which mappings of `/proc/PID/maps` are guest RAM, and why the rest is not;
//! - [`qmp`]: an async QMP client (status, memory, vCPUs, dirty rate, migration);
//! - [`vcpu`]: vCPU threads by name (`CPU 0/KVM`).
//!
//! What real QEMU 7.2 does, and how the finder decides: `docs/qemu.md`.
pub mod cmdline;
pub mod qmp;
pub mod ram;
pub mod vcpu;

pub use cmdline::QemuCmdline;
pub use ram::{GuestRam, RamBlock};
