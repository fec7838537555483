//! The records a watch emits and every sink renders: the start, each interval, the summary
//! at the end (with its per-thread lines and rate percentiles), and the thread CPU times the
//! summary's busy shares come from.
use serde::{Deserialize, Serialize};

use super::{
    BackendStats, Drops, FaultCounts, GrowthPoint, GuestInfo, LinkSummary, QemuRateSummary,
    SampleInfo,
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

/// CPU time of one thread, in clock ticks.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThreadTime {
    pub tid: u32,
    pub comm: String,
    pub ticks: u64,
}
