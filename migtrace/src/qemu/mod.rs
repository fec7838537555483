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
pub mod trust;
pub mod vcpu;

pub use cmdline::QemuCmdline;
pub use ram::{GuestRam, RamBlock};

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::Error;

/// Reads `/proc/PID/<file>`: a missing process is [`Error::Unsupported`], a refused read
/// [`Error::Privilege`].
fn read_proc(pid: u32, file: &str) -> Result<Vec<u8>> {
    let path = Path::new("/proc").join(pid.to_string()).join(file);
    std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Unsupported(format!("no process {pid}")).into(),
        std::io::ErrorKind::PermissionDenied => Error::Privilege(format!(
            "reading {} needs the right to ptrace pid {pid} ({})",
            path.display(),
            crate::target::ptrace_hint()
        ))
        .into(),
        _ => anyhow::Error::new(e).context(format!("reading {}", path.display())),
    })
}

/// The command line of QEMU process `pid`; [`Error::Unsupported`] if `pid` is not QEMU.
pub fn read_cmdline(pid: u32) -> Result<QemuCmdline> {
    let c = QemuCmdline::from_proc_bytes(&read_proc(pid, "cmdline")?)
        .with_context(|| format!("parsing the command line of pid {pid}"))?;
    if !c.is_qemu_system {
        return Err(Error::Unsupported(format!(
            "pid {pid} is not a QEMU system emulator (it runs {})",
            c.binary
        ))
        .into());
    }
    Ok(c)
}

/// The guest RAM of QEMU process `pid`, from its command line and maps; `memdevs` (QMP
/// `query-memdev`) when a QMP connection is at hand.
pub fn guest_ram_of(pid: u32, memdevs: Option<&[qmp::Memdev]>) -> Result<GuestRam> {
    let cmdline = read_cmdline(pid)?;
    let maps = String::from_utf8_lossy(&read_proc(pid, "maps")?).into_owned();
    ram::find_guest_ram(&cmdline, &maps, memdevs)
        .with_context(|| format!("finding the guest RAM of QEMU pid {pid}"))
}
