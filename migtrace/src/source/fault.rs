//! The `fault` backend: exact write-fault counts and HyperLogLog unique pages from the eBPF
//! page-fault program, with a dirty-set growth curve from 50 ms windows upwards.
//!
//! Growth curve: every 50 ms epoch user space takes the kernel's sketch of that epoch. For
//! each window length 50 ms x 2^k it keeps the merged sketch of the current tumbling window;
//! when a window completes, its unique-page estimate is averaged into U(50 ms x 2^k).
//! Sketches merge exactly (register max), so the only error is HyperLogLog's own (1.6 %).
use std::time::Duration;

use anyhow::Result;
use migtrace_common::Hll;

use super::{
    ebpf::{FaultProbe, ProbeOptions},
    DirtySource, FinalReport, IntervalReport, SourceOptions,
};
use crate::{
    estimate::{hll_estimate, hll_merge, Mean},
    profile::GrowthPoint,
};

/// Epoch of the kernel sketches: the shortest window of the growth curve.
pub const EPOCH: Duration = Duration::from_millis(50);

/// Window lengths of the growth curve: 2^0 .. 2^(LEVELS-1) epochs (50 ms .. 7.3 hours).
const LEVELS: usize = 19;

/// Tumbling windows of 2^k epochs, k = 0.. (see the module doc). All levels exist from the
/// start, so each level's windows are aligned to the first epoch.
pub struct GrowthLevels {
    levels: Vec<Level>,
    total: Hll,
    epochs: u64,
}

struct Level {
    current: Hll,
    filled: u64,
    mean: Mean,
}

impl Default for GrowthLevels {
    fn default() -> Self {
        Self::new()
    }
}

impl GrowthLevels {
    pub fn new() -> GrowthLevels {
        GrowthLevels {
            levels: (0..LEVELS)
                .map(|_| Level {
                    current: Hll::default(),
                    filled: 0,
                    mean: Mean::default(),
                })
                .collect(),
            total: Hll::default(),
            epochs: 0,
        }
    }

    /// Adds one epoch's sketch.
    pub fn push(&mut self, epoch: &Hll) {
        self.epochs += 1;
        hll_merge(&mut self.total, epoch);
        for (k, l) in self.levels.iter_mut().enumerate() {
            hll_merge(&mut l.current, epoch);
            l.filled += 1;
            if l.filled == 1 << k {
                l.mean.add(hll_estimate(&l.current));
                l.current = Hll::default();
                l.filled = 0;
            }
        }
    }

    /// U(window) for every window length with at least one complete window.
    pub fn curve(&self, epoch: Duration) -> Vec<GrowthPoint> {
        self.levels
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                l.mean.get().map(|u| GrowthPoint {
                    window_s: epoch.as_secs_f64() * (1u64 << k) as f64,
                    unique_pages: u,
                    windows: l.mean.n,
                })
            })
            .collect()
    }

    /// Unique pages over everything pushed.
    pub fn total(&self) -> f64 {
        hll_estimate(&self.total)
    }
}

pub struct FaultSource {
    probe: FaultProbe,
    interval_sketch: Hll,
    growth: GrowthLevels,
}

impl FaultSource {
    pub fn new(opts: &SourceOptions) -> Result<FaultSource> {
        let probe = FaultProbe::attach(ProbeOptions {
            tgid: opts.pid,
            range: opts.range,
            record_pages: None,
        })?;
        Ok(FaultSource {
            probe,
            interval_sketch: Hll::default(),
            growth: GrowthLevels::new(),
        })
    }

    fn take_epoch(&mut self) -> Result<()> {
        let s = self.probe.take_epoch_sketch()?;
        hll_merge(&mut self.interval_sketch, &s);
        self.growth.push(&s);
        Ok(())
    }
}

impl DirtySource for FaultSource {
    fn name(&self) -> &'static str {
        "fault"
    }

    fn caveats(&self) -> Vec<String> {
        vec![
            "fault counts first-touch and copy-on-write dirtying only: rewrites of pages that are already writable take no fault and are not seen".into(),
            "unique pages are a HyperLogLog estimate (standard error 1.6 %); fault counts are exact".into(),
        ]
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(EPOCH)
    }

    fn tick(&mut self) -> Result<()> {
        self.take_epoch()
    }

    fn end_interval(&mut self, _target_gone: bool) -> Result<IntervalReport> {
        // The probe keeps counting after the target exits; its last faults are still there.
        self.take_epoch()?;
        let (faults, drops) = self.probe.take_deltas()?;
        let unique = hll_estimate(&self.interval_sketch);
        self.interval_sketch = Hll::default();
        Ok(IntervalReport {
            measured: true,
            window: None,
            unique_pages: unique,
            ci95: None,
            faults: Some(faults),
            drops,
            sample: None,
        })
    }

    fn finish(&mut self) -> Result<FinalReport> {
        self.probe.stop()?;
        Ok(FinalReport {
            growth: self.growth.curve(EPOCH),
            unique_pages_total: Some(self.growth.total()),
            threads: self.probe.thread_counts()?,
            zero_page_share: None,
            backend_stats: None,
            total_pages_sd: None,
            threads_attribute_dirtying: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migtrace_common::{hll_index_rank, page_hash};

    fn sketch(pages: impl Iterator<Item = u64>) -> Hll {
        let mut h = Hll::default();
        for p in pages {
            let (i, r) = hll_index_rank(page_hash(p));
            h.regs[i] = h.regs[i].max(r);
        }
        h
    }

    #[test]
    fn growth_of_a_sequential_writer_is_linear_then_flat() {
        // 100 pages per epoch, cycling through 1600 pages: U(w) = min(100 w, 1600).
        let mut g = GrowthLevels::new();
        for e in 0..64u64 {
            let start = (e * 100) % 1600;
            g.push(&sketch(start..start + 100));
        }
        let c = g.curve(EPOCH);
        assert_eq!(c.len(), 7); // 1, 2, 4, ..., 64 epochs
        for p in &c {
            let epochs = (p.window_s / EPOCH.as_secs_f64()).round();
            let expect = (100.0 * epochs).min(1600.0);
            assert!(
                (p.unique_pages - expect).abs() / expect < 0.03,
                "{p:?} expect {expect}"
            );
        }
        assert_eq!(c[0].windows, 64);
        assert_eq!(c[6].windows, 1);
    }
}
