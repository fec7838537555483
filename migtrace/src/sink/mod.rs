//! Sinks: where `watch` results go. The records here are what every sink renders; the
//! terminal sink ([`terminal`]) writes lines for people, the JSON sink ([`json`]) one JSON
//! object per line for programs.
pub mod json;
pub mod predict_out;
pub mod terminal;

use serde::Serialize;

use crate::{
    profile::GrowthPoint,
    source::{Drops, FaultCounts, SampleInfo},
};

/// Emitted once, when measuring starts.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    pub pid: u32,
    pub comm: String,
    pub backend: String,
    /// Why `auto` (or the user) chose this backend.
    pub reason: String,
    pub caveats: Vec<String>,
    pub interval_s: f64,
    pub target_rss_bytes: u64,
    pub writable_bytes: u64,
    pub warnings: Vec<String>,
}

/// One interval.
#[derive(Clone, Debug, Serialize)]
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
}

/// Per-thread line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadLine {
    pub tid: u32,
    pub comm: String,
    pub write_faults: u64,
    pub share: f64,
    pub busy_share: Option<f64>,
}

/// Emitted once at the end (duration elapsed, Ctrl-C/SIGTERM, or the target exited).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub pid: u32,
    pub comm: String,
    pub backend: String,
    /// `duration`, `interrupted`, `terminated` or `target-exited`.
    pub end_reason: String,
    pub duration_s: f64,
    pub intervals: u64,
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
    pub backend_stats: Option<serde_json::Value>,
    pub profile_out: Option<String>,
}

/// Percentiles of the per-interval dirty rate.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RatePercentiles {
    pub p50_bytes_per_sec: f64,
    pub p90_bytes_per_sec: f64,
    pub p99_bytes_per_sec: f64,
    pub max_bytes_per_sec: f64,
}

/// A destination for watch results.
pub trait Sink {
    fn start(&mut self, s: &Start);
    fn interval(&mut self, i: &Interval);
    fn summary(&mut self, s: &Summary);
}
