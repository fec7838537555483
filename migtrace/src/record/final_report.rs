//! What a source reports once, at the end of a watch: the dirty-set growth curve, the
//! per-thread counts, and the backend's own figures.
use serde::{Deserialize, Serialize};

use super::BackendStats;

/// What a source knows at the end of a watch.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FinalReport {
    /// Dirty-set growth curve U(window), sorted by window.
    pub growth: Vec<GrowthPoint>,
    /// Unique pages dirtied over the whole watch, when the source can tell.
    pub unique_pages_total: Option<f64>,
    /// Write faults per thread id, largest first.
    pub threads: Vec<(u32, u64)>,
    /// Share of sampled writable pages that were all zeros.
    pub zero_page_share: Option<f64>,
    /// Backend-specific figures (e.g. softdirty's epoch, induced faults, cross-check).
    pub backend_stats: Option<BackendStats>,
    /// Standard deviation of the sum of the intervals' unique pages, when the source
    /// estimates (sampling). A fixed sample's errors repeat from interval to interval, so
    /// this is not the per-interval errors added as if independent.
    pub total_pages_sd: Option<f64>,
    /// The same for the warm-up intervals, which `total_pages_sd` leaves out.
    #[serde(default)]
    pub warmup_pages_sd: Option<f64>,
    /// Whether `threads` attributes the dirtying itself (fault, softdirty) rather than only
    /// write faults next to a rate measured otherwise (sample+fault).
    pub threads_attribute_dirtying: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrowthPoint {
    pub window_s: f64,
    pub unique_pages: f64,
    /// How many windows of this length were averaged.
    pub windows: u64,
}
