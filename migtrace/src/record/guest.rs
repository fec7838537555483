//! The guest, when the target is a QEMU process: its RAM blocks, what of QEMU was left
//! out, its vCPU threads, and QEMU's own `calc-dirty-rate` measurements.
use serde::{Deserialize, Serialize};

/// The guest, when the target is a QEMU process: its RAM is what was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// `-name guest=...`.
    pub name: Option<String>,
    /// The accelerator: `kvm`, `tcg`, ...
    pub accel: String,
    /// Guest RAM, bytes: the memory a migration copies as RAM.
    pub ram_bytes: u64,
    pub blocks: Vec<GuestBlock>,
    /// QEMU's own memory, left out, by reason.
    pub excluded: Vec<ExcludedMemory>,
    /// The vCPU threads: the guest's writers.
    pub vcpus: Vec<VcpuInfo>,
    /// Where the guest RAM was found from.
    pub found_from: String,
}

/// One guest-RAM mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestBlock {
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub shared: bool,
}

/// Memory of the QEMU process that is not guest RAM, for one reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExcludedMemory {
    pub reason: String,
    pub bytes: u64,
    pub mappings: u64,
}

/// One vCPU thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuInfo {
    pub index: u32,
    pub tid: u32,
    /// Share of the watch on CPU (in the summary).
    pub busy_share: Option<f64>,
}

/// One `calc-dirty-rate` measurement by QEMU, shown beside migtrace's rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QemuRate {
    /// Seconds since the watch started, when the measurement ended.
    pub t_s: f64,
    pub bytes_per_sec: f64,
    pub calc_time_s: f64,
    /// Pages sampled per GiB.
    pub sample_pages: u64,
}

/// QEMU's measurements over the watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QemuRateSummary {
    /// The mean of QEMU's measurements; `None` when it gave none (never a 0 it did not say).
    pub mean_bytes_per_sec: Option<f64>,
    pub measurements: u64,
    pub sample_pages: u64,
    /// Why measuring stopped early, if it did.
    pub error: Option<String>,
}
