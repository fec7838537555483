//! Figures a backend reports about itself ([`BackendStats`]): softdirty's epoch, overhead
//! and cross-check, with how it read pagemap and told huge pages.
use serde::{Deserialize, Serialize};

/// Figures a backend reports about itself. Serialized without a tag: the JSON object is the
/// backend's own (the summary names the backend beside it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BackendStats {
    Softdirty(SoftDirtyStats),
}

/// What the softdirty backend reports about itself: its epoch, the cost it imposed on the
/// target, and the cross-check of the fault events against pagemap. Fields are in the
/// order they are shown (alphabetical, as the output has always listed them).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SoftDirtyStats {
    /// Time spent write-protecting the target (clear_refs), seconds.
    pub arm_time_s: f64,
    /// Epoch length in force at the end, seconds.
    pub epoch_s: f64,
    /// Epochs the growth curve left out: cut by the watch's end, or after the target was
    /// gone. Each restarts the curve's windows in progress. (Absent in older recordings.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_outside_growth: Option<u64>,
    /// Estimated CPU overhead imposed on the target, percent of one CPU.
    pub est_target_cpu_overhead_pct: f64,
    /// Fault events whose page pagemap did not show soft-dirty.
    pub events_not_soft_dirty: u64,
    /// Calibrated cost of one write-protect fault, nanoseconds.
    pub fault_cost_ns: f64,
    /// Write-protect faults the arming caused.
    pub induced_faults: u64,
    pub induced_faults_per_sec: f64,
    /// The overhead budget (`--max-overhead`), percent.
    pub max_overhead_pct: f64,
    /// Soft-dirty pages of mappings created during an epoch, with no fault seen.
    pub new_mapping_pages_without_event: u64,
    /// CPU spent reading pagemap, percent of one CPU.
    pub pagemap_scan_cpu_pct: f64,
    /// How pagemap was read: `scan` (the PAGEMAP_SCAN ioctl, Linux 6.7+) or `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagemap_reader: Option<PagemapMethod>,
    /// Unique pages over the run counted exactly, page by page (THP figures: only shown
    /// once the target had a transparent huge page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_exact_4k: Option<u64>,
    /// Pages pagemap showed soft-dirty without a fault event (kernel-thread writes, THP).
    pub pages_from_pagemap_only: u64,
    /// Subpages read for the huge pages' first hashes (at start, after an exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_baseline_pages: Option<u64>,
    /// How THP backing was told: kpageflags, pfn-run, pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_detection: Option<ThpDetect>,
    /// CPU spent reading and hashing subpages, percent of one CPU (migtrace's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_hash_cpu_pct: Option<f64>,
    /// Subpages read and hashed in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_hashed_pages: Option<u64>,
    /// Dirty huge pages (summed over epochs) known only at 2 MiB: left out of the rate,
    /// inside the upper end of its 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_huge_pages_2m_only: Option<u64>,
    /// Dirty huge pages (summed over epochs) resolved to 4 KiB by content sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_huge_pages_resolved: Option<u64>,
    /// Unique 4 KiB pages over the run estimated inside sampled huge pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_pages_estimated_4k: Option<f64>,
    /// Subpages sampled per huge page (one per stratum of 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp_sampled_per_huge_page: Option<u64>,
}

/// How pagemap is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PagemapMethod {
    /// The `PAGEMAP_SCAN` ioctl (Linux 6.7+).
    Scan,
    /// Plain reads of 8-byte entries.
    Read,
}

impl PagemapMethod {
    /// Pages between two wanted pages up to which one call for both is cheaper than two
    /// calls: a call's fixed cost over the cost of one more page (see the module docs of
    /// `source/pagemap.rs`).
    pub fn gap(self) -> u64 {
        match self {
            PagemapMethod::Scan => 96,
            PagemapMethod::Read => 32,
        }
    }

    /// In words, for caveats and logs.
    pub fn describe(self) -> &'static str {
        match self {
            PagemapMethod::Scan => "the PAGEMAP_SCAN ioctl",
            PagemapMethod::Read => "plain pagemap reads (no PAGEMAP_SCAN on this kernel)",
        }
    }
}

/// How THP backing was told, the last time it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThpDetect {
    /// Not needed yet: no block had all 512 subpages present.
    #[default]
    None,
    /// `/proc/kpageflags` bit 22 of the block's first frame.
    Kpageflags,
    /// 512 contiguous frame numbers starting 2 MiB-aligned.
    PfnRun,
    /// No frame numbers visible: 512 subpages soft-dirty together.
    Pattern,
    /// `PAGEMAP_SCAN` says the block is one PMD-mapped huge page (Linux 6.7+).
    PagemapScan,
}
