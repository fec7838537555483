//! What a watch reports: the records every sink renders (terminal, JSON lines, the
//! profile). Sources produce [`crate::source::IntervalReport`]s; [`crate::model::summary`]
//! turns them into these records; [`crate::sink`] renders them.
use serde::{Deserialize, Serialize};

use crate::{
    profile::GrowthPoint,
    source::{BackendStats, Drops, FaultCounts, SampleInfo},
};

/// Why a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT (Ctrl-C).
    Interrupted,
    /// SIGTERM.
    Terminated,
    /// SIGHUP (the terminal or SSH session went away): ended like SIGTERM.
    Hangup,
    /// The target process exited.
    TargetExited,
}

impl EndReason {
    /// The name used in text and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Duration => "duration",
            EndReason::Interrupted => "interrupted",
            EndReason::Terminated => "terminated",
            EndReason::Hangup => "hangup",
            EndReason::TargetExited => "target-exited",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Emitted once, when measuring starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub pid: u32,
    pub comm: String,
    pub backend: String,
    /// Why `auto` (or the user) chose this backend.
    pub reason: String,
    pub caveats: Vec<String>,
    pub interval_s: f64,
    pub target_rss_bytes: u64,
    /// Writable memory measured: private and shared mappings (in `--range` if given).
    pub writable_bytes: u64,
    /// Of which shared mappings (memfd, shared anonymous, files).
    #[serde(default)]
    pub shared_writable_bytes: u64,
    /// The measured mappings, grouped, largest first.
    #[serde(default)]
    pub mappings: Vec<MappingGroup>,
    /// The guest, when the target is QEMU and its RAM is what is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestInfo>,
    pub warnings: Vec<String>,
}

/// Measured mappings of one kind: a shared memory file, private anonymous memory, a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MappingGroup {
    pub name: String,
    pub shared: bool,
    pub mappings: u64,
    pub bytes: u64,
}

/// One interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Seconds since the start, at the end of this interval.
    pub t_s: f64,
    pub duration_s: f64,
    /// Unique pages dirtied in the interval.
    pub dirty_pages: f64,
    pub dirty_pages_per_sec: f64,
    pub dirty_bytes_per_sec: f64,
    pub ci95_bytes_per_sec: Option<[f64; 2]>,
    pub faults: Option<FaultCounts>,
    pub drops: Drops,
    pub sample: Option<SampleInfo>,
    /// The sample was too small for the requested precision and was grown after this
    /// interval: shown, but left out of the summary with every interval before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
    /// Shorter than three quarters of `--interval` (the watch ended mid-interval): shown,
    /// but left out of the summary unless nothing else was measured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Something that happened during the interval (the target exec'd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Per-thread line of the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadLine {
    pub tid: u32,
    pub comm: String,
    pub write_faults: u64,
    pub share: f64,
    pub busy_share: Option<f64>,
}

/// Emitted once at the end (duration elapsed, Ctrl-C/SIGTERM, or the target exited).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub pid: u32,
    pub comm: String,
    pub backend: String,
    pub end_reason: EndReason,
    pub duration_s: f64,
    pub intervals: u64,
    /// Mean measured length of the intervals the summary counts, seconds.
    pub interval_s: f64,
    /// Sum over intervals of the unique pages dirtied in each interval: what a pre-copy
    /// migration with passes of one interval would have had to resend.
    pub dirty_pages: f64,
    pub dirty_pages_per_sec: f64,
    pub dirty_bytes_per_sec: f64,
    pub ci95_bytes_per_sec: Option<[f64; 2]>,
    pub peak_bytes_per_sec: f64,
    /// Distribution of the interval rates (hdrhistogram, 3 significant digits).
    pub rate_percentiles: Option<RatePercentiles>,
    /// Unique pages dirtied over the whole watch, when the backend can tell.
    pub unique_pages_total: Option<f64>,
    pub target_rss_bytes: u64,
    pub writable_bytes: u64,
    #[serde(default)]
    pub shared_writable_bytes: u64,
    pub page_size: u64,
    pub faults: Option<FaultCounts>,
    /// Everything lost: map-full events, ring-buffer drops, sampling misses.
    pub dropped_events: u64,
    pub drops: Drops,
    pub growth: Vec<GrowthPoint>,
    pub threads: Vec<ThreadLine>,
    pub busy_share: Option<f64>,
    pub zero_page_share: Option<f64>,
    pub caveats: Vec<String>,
    /// Backend-specific figures (softdirty: epoch, induced faults, overhead, cross-check).
    pub backend_stats: Option<BackendStats>,
    pub profile_out: Option<String>,
    /// The guest, with each vCPU's busy share, when the target is QEMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestInfo>,
    /// QEMU's own `calc-dirty-rate` over the watch (`--qmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_dirty_rate: Option<QemuRateSummary>,
    /// The send path (`--iface`): traffic, headroom and the dirty rate against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkSummary>,
}

/// Percentiles of the per-interval dirty rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatePercentiles {
    pub p50_bytes_per_sec: f64,
    pub p90_bytes_per_sec: f64,
    pub p99_bytes_per_sec: f64,
    pub max_bytes_per_sec: f64,
}

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
    pub mean_bytes_per_sec: f64,
    pub measurements: u64,
    pub sample_pages: u64,
    /// Why measuring stopped early, if it did.
    pub error: Option<String>,
}

/// The link side of one interval (`watch --iface`): the interface's traffic, the headroom a
/// migration would get, and the dirty rate against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkInterval {
    /// Seconds since the start, at the end of this interval.
    pub t_s: f64,
    pub iface: Option<String>,
    /// Interface tx, bytes per second (skb lengths: headers included), all processes.
    pub tx_bytes_per_sec: Option<f64>,
    pub tx_packets_per_sec: Option<f64>,
    /// The nominal link, bits per second (`--link`, else the interface's speed).
    pub link_bits: Option<f64>,
    /// link x efficiency - tx, bytes per second (never below 0).
    pub headroom_bytes_per_sec: Option<f64>,
    /// The interval's dirty rate divided by the headroom: above 1 a pre-copy cannot
    /// converge without throttling.
    pub dirty_to_headroom: Option<f64>,
    /// The target's socket sends, bytes per second (payload).
    pub send_bytes_per_sec: Option<f64>,
    /// Bytes the target's QEMU migration threads sent in this interval.
    pub migration_bytes: u64,
    /// Sends not attributed to a thread (thread map full).
    pub thread_map_full: u64,
}

/// The link side over the whole watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub iface: Option<String>,
    pub link_bits: Option<f64>,
    /// Where `link_bits` came from: `--link` or `/sys/class/net/IF/speed`.
    pub link_from: Option<String>,
    pub efficiency: f64,
    /// Mean and peak interface tx over the intervals, bytes per second.
    pub tx_bytes_per_sec: Option<f64>,
    pub tx_peak_bytes_per_sec: Option<f64>,
    /// link x efficiency - mean tx, bytes per second (the headroom `predict` uses).
    pub headroom_bytes_per_sec: Option<f64>,
    /// The smallest interval headroom.
    pub headroom_min_bytes_per_sec: Option<f64>,
    /// The summary's dirty rate divided by the mean headroom.
    pub dirty_to_headroom: Option<f64>,
    /// Total bytes the target's socket sends returned, and how many sends.
    pub send_bytes: u64,
    pub send_calls: u64,
    pub send_errors: u64,
    /// Total bytes of the target's QEMU migration threads.
    pub migration_bytes: u64,
    /// Total bytes the interface transmitted.
    pub tx_bytes: u64,
    /// Sends not attributed to a thread (thread map full).
    pub thread_map_full: u64,
    /// Per thread of the target: bytes sent, largest first.
    pub threads: Vec<SendThread>,
    /// What could not be measured, in words.
    pub notes: Vec<String>,
}

/// One thread's sends over the watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendThread {
    pub tid: u32,
    pub comm: String,
    pub bytes: u64,
    pub calls: u64,
    pub migration: bool,
}
