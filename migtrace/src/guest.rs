//! The target as a guest: when the watched pid is a QEMU process, a watch measures the
//! guest's RAM, not the whole process. QEMU's own memory (the TCG translation buffer, its
//! heap, ROMs) does not migrate as RAM, and counting it made predictions wrong by half.
//!
//! The guest RAM comes from the command line and `/proc/PID/maps` ([`crate::qemu::ram`]),
//! and from QEMU itself (`query-memdev`) when `--qmp` gives a socket. The vCPU threads come
//! from their names (`CPU n/KVM`, `CPU n/TCG`) or from `query-cpus-fast`.
use anyhow::Result;

use crate::{
    error::Error,
    qemu::{self, cmdline::Accel, qmp::Qmp, ram::GuestRam},
    record::{ExcludedMemory, GuestBlock, GuestInfo, VcpuInfo},
};

/// A QEMU guest found behind a pid.
pub struct Guest {
    pub info: GuestInfo,
}

impl Guest {
    /// The address ranges of guest RAM (what every backend measures).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.info.blocks.iter().map(|b| (b.start, b.end)).collect()
    }

    /// One range around all of guest RAM (the fault program's in-kernel filter takes one).
    pub fn bounding_range(&self) -> Option<(u64, u64)> {
        let lo = self.info.blocks.iter().map(|b| b.start).min()?;
        let hi = self.info.blocks.iter().map(|b| b.end).max()?;
        Some((lo, hi))
    }
}

/// The guest behind `pid`, or `None` when `pid` is not a QEMU system emulator. With a QMP
/// connection, QEMU's own view of its memory backends and vCPUs is used too.
pub async fn detect(pid: u32, qmp: Option<&mut Qmp>) -> Result<Option<Guest>> {
    // Anything that is not a readable QEMU command line is not a guest: the process is
    // watched as it is (a missing privilege is still said).
    let cmdline = match qemu::read_cmdline(pid) {
        Ok(c) => c,
        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::Privilege(_))) => return Err(e),
        Err(_) => return Ok(None),
    };
    let (memdevs, cpus) = match qmp {
        Some(q) => (
            Some(q.query_memdev().await?),
            Some(q.query_cpus_fast().await?),
        ),
        None => (None, None),
    };
    let ram = qemu::guest_ram_of(pid, memdevs.as_deref())?;
    let accel = match cmdline.accel.first() {
        Some(Accel::Kvm) => "kvm".to_string(),
        Some(Accel::Tcg) | None => "tcg".to_string(),
        Some(Accel::Other(a)) => a.clone(),
    };
    let mut vcpus: Vec<VcpuInfo> = qemu::vcpu::vcpu_threads(pid)
        .unwrap_or_default()
        .into_iter()
        .map(|v| VcpuInfo {
            index: v.index,
            tid: v.tid,
            busy_share: None,
        })
        .collect();
    if vcpus.is_empty() {
        vcpus = cpus
            .unwrap_or_default()
            .into_iter()
            .map(|c| VcpuInfo {
                index: c.cpu_index,
                tid: c.thread_id,
                busy_share: None,
            })
            .collect();
    }
    let source = if memdevs.is_some() {
        "command line, /proc/PID/maps and QMP query-memdev"
    } else {
        "command line and /proc/PID/maps"
    };
    Ok(Some(Guest {
        info: info(cmdline.name.clone(), accel, &ram, vcpus, source),
    }))
}

/// The serializable description of what was found.
fn info(
    name: Option<String>,
    accel: String,
    ram: &GuestRam,
    vcpus: Vec<VcpuInfo>,
    source: &str,
) -> GuestInfo {
    let blocks = ram
        .blocks
        .iter()
        .map(|b| GuestBlock {
            name: b.name.clone(),
            start: b.start,
            end: b.end,
            shared: b.shared,
        })
        .collect();
    let mut excluded: Vec<ExcludedMemory> = Vec::new();
    for e in &ram.excluded {
        let reason = e.reason.to_string();
        match excluded.iter_mut().find(|x| x.reason == reason) {
            Some(x) => {
                x.bytes += e.region.len();
                x.mappings += 1;
            }
            None => excluded.push(ExcludedMemory {
                reason,
                bytes: e.region.len(),
                mappings: 1,
            }),
        }
    }
    excluded.sort_by_key(|e| std::cmp::Reverse(e.bytes));
    GuestInfo {
        name,
        accel,
        ram_bytes: ram.size_bytes,
        blocks,
        excluded,
        vcpus,
        found_from: source.to_string(),
    }
}
