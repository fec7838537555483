//! vCPU threads of a QEMU process, found by name in `/proc/PID/task/*/comm`.
//!
//! QEMU names its threads only with `-name ...,debug-threads=on` (libvirt, Proxmox and
//! KubeVirt all pass it): vCPUs are then `CPU 0/KVM` or `CPU 0/TCG`. Without it every
//! thread is called `qemu-system-x86` (the comm is cut to 15 bytes) and this finds none; QMP's
//! `query-cpus-fast` ([`super::qmp::Qmp::query_cpus_fast`]) gives the thread ids either
//! way.
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::Error;

/// One vCPU thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuThread {
    /// Thread id (what `query-cpus-fast` calls `thread-id`).
    pub tid: u32,
    /// vCPU index (`cpu-index`).
    pub index: u32,
    /// The accelerator in the name: `KVM`, `TCG`, `HVF`, ...
    pub accel: String,
}

/// `CPU 3/KVM` -> (3, "KVM").
pub fn parse_vcpu_comm(comm: &str) -> Option<(u32, String)> {
    let rest = comm.trim_end().strip_prefix("CPU ")?;
    let (index, accel) = rest.split_once('/')?;
    let index = index.parse().ok()?;
    (!accel.is_empty()).then(|| (index, accel.to_string()))
}

/// The vCPU threads of `pid`, by index; empty when QEMU did not name its threads.
pub fn vcpu_threads(pid: u32) -> Result<Vec<VcpuThread>> {
    vcpu_threads_in(Path::new("/proc"), pid)
}

/// [`vcpu_threads`] under another procfs root (tests).
pub fn vcpu_threads_in(proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>> {
    let dir = proc_root.join(pid.to_string()).join("task");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::Error::new(Error::Unsupported(format!("no process {pid}")))
        } else {
            anyhow::Error::new(e).context(format!("listing {}", dir.display()))
        }
    })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A thread that exits between the listing and the read is simply not a vCPU.
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        if let Some((index, accel)) = parse_vcpu_comm(&comm) {
            out.push(VcpuThread { tid, index, accel });
        }
    }
    out.sort_by_key(|v| v.index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_qemu_gives_its_threads() {
        assert_eq!(parse_vcpu_comm("CPU 0/TCG\n"), Some((0, "TCG".into())));
        assert_eq!(parse_vcpu_comm("CPU 12/KVM"), Some((12, "KVM".into())));
        assert_eq!(parse_vcpu_comm("IO mon_iothread"), None);
        assert_eq!(parse_vcpu_comm("qemu-system-x86"), None);
        assert_eq!(parse_vcpu_comm("CPU x/KVM"), None);
        assert_eq!(parse_vcpu_comm("CPU 1/"), None);
        assert_eq!(parse_vcpu_comm("worker"), None);
    }

    #[test]
    fn reads_a_proc_tree() {
        let root = std::env::temp_dir().join(format!("migtrace-vcpu-{}", std::process::id()));
        let task = root.join("42/task");
        for (tid, comm) in [
            (42, "qemu-system-x86"),
            (45, "IO mon_iothread"),
            (47, "CPU 1/TCG"),
            (46, "CPU 0/TCG"),
        ] {
            std::fs::create_dir_all(task.join(tid.to_string())).unwrap();
            std::fs::write(task.join(tid.to_string()).join("comm"), format!("{comm}\n")).unwrap();
        }
        let v = vcpu_threads_in(&root, 42).unwrap();
        assert_eq!(
            v.iter().map(|t| (t.index, t.tid)).collect::<Vec<_>>(),
            vec![(0, 46), (1, 47)]
        );
        let missing = vcpu_threads_in(&root, 43).unwrap_err();
        assert!(missing.downcast_ref::<Error>().is_some(), "{missing:#}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
