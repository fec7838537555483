//! What a source reports at the end of each interval: the unique pages it saw dirtied, the
//! write faults, everything lost or missed, and the sampling details.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Write faults of the target during one interval (deltas of the kernel counters).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultCounts {
    /// Write faults on not-present pages (first touch).
    pub write_not_present: u64,
    /// Write faults on present pages (copy-on-write, write-protect).
    pub write_protect: u64,
    /// Read faults (dirty nothing; shown for context).
    pub read: u64,
    /// Faults outside `--range` (not counted as dirtying).
    pub out_of_range: u64,
}

impl FaultCounts {
    pub fn writes(&self) -> u64 {
        self.write_not_present + self.write_protect
    }
    pub fn add(&mut self, o: &FaultCounts) {
        self.write_not_present += o.write_not_present;
        self.write_protect += o.write_protect;
        self.read += o.read;
        self.out_of_range += o.out_of_range;
    }
}

/// Everything lost or missed during an interval. Never hidden: shown on every line and in
/// the summary.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drops {
    /// Per-thread counts lost to a full thread map.
    pub thread_map_full: u64,
    /// Page events lost to a full ring buffer.
    pub ringbuf_full: u64,
    /// Sampled pages that could not be read (unmapped between listing and reading).
    pub sample_misses: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.thread_map_full + self.ringbuf_full + self.sample_misses
    }
    pub fn add(&mut self, o: &Drops) {
        self.thread_map_full += o.thread_map_full;
        self.ringbuf_full += o.ringbuf_full;
        self.sample_misses += o.sample_misses;
    }
}

/// Sampling details for an interval.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SampleInfo {
    /// Pages in the sample.
    pub sampled: u64,
    /// Sampled pages whose content changed during the interval.
    pub changed: u64,
    /// Pages the sample was drawn from (private writable virtual pages).
    pub population: u64,
}

/// One interval's measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalReport {
    /// False when no rate could be measured (the target's memory was already gone when the
    /// sampler came to read it). Fault counts and drops are still valid then.
    pub measured: bool,
    /// The window the measurement covers, when the source knows it better than the time
    /// between calls (between the sampler's snapshots, between soft-dirty arms).
    pub window: Option<Duration>,
    /// Unique pages dirtied during the interval (exact, or an estimate).
    pub unique_pages: f64,
    /// 95 % confidence interval of `unique_pages`, when estimated by sampling.
    pub ci95: Option<(f64, f64)>,
    pub faults: Option<FaultCounts>,
    pub drops: Drops,
    pub sample: Option<SampleInfo>,
    /// The sampler grew its sample after this interval because the estimate was less
    /// precise than asked: the summary leaves this interval and those before it out.
    #[serde(default)]
    pub warmup: bool,
}

impl IntervalReport {
    /// An exact count (fault, softdirty): `unique` pages over `window` (when the source
    /// knows it), with the interval's fault counts and drops.
    pub fn exact(
        window: Option<Duration>,
        unique: f64,
        faults: FaultCounts,
        drops: Drops,
    ) -> IntervalReport {
        IntervalReport {
            measured: true,
            window,
            unique_pages: unique,
            faults: Some(faults),
            drops,
            ..Default::default()
        }
    }
}
