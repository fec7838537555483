//! The `fault` backend: exact write-fault counts and HyperLogLog unique pages from the eBPF
//! page-fault program, with a dirty-set growth curve from 50 ms windows upwards.
//!
//! Growth curve: every 50 ms epoch user space takes the kernel's sketch of that epoch and
//! feeds it to [`GrowthWindows`] (windows of 50 ms x 2^k). Sketches merge exactly (register
//! max), so the only error is HyperLogLog's own (1.6 %).
use std::time::Duration;

use anyhow::Result;
use migtrace_common::Hll;

use crate::probe::fault::{FaultProbe, ProbeOptions};

use super::{growth::GrowthWindows, DirtySource, SourceOptions};
use crate::{
    estimate::{hll_estimate, hll_merge},
    record::{FinalReport, IntervalReport},
};

/// Epoch of the kernel sketches: the shortest window of the growth curve.
pub const EPOCH: Duration = Duration::from_millis(50);

/// Window lengths of the growth curve: 2^0 .. 2^(LEVELS-1) epochs (50 ms .. 7.3 hours).
const LEVELS: usize = 19;

pub struct FaultSource {
    probe: FaultProbe,
    interval_sketch: Hll,
    growth: GrowthWindows<Hll>,
    /// Union of every epoch: unique pages over the whole watch.
    total: Hll,
    /// When the current epoch's sketch began (the last flip).
    epoch_start: std::time::Instant,
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
            growth: GrowthWindows::new(LEVELS),
            total: Hll::default(),
            epoch_start: std::time::Instant::now(),
        })
    }

    fn take_epoch(&mut self) -> Result<()> {
        let s = self.probe.take_epoch_sketch()?;
        let now = std::time::Instant::now();
        let secs = now.duration_since(self.epoch_start).as_secs_f64();
        self.epoch_start = now;
        hll_merge(&mut self.interval_sketch, &s);
        hll_merge(&mut self.total, &s);
        self.growth.push(&s, secs);
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
        Ok(IntervalReport::exact(None, unique, faults, drops))
    }

    fn finish(&mut self) -> Result<FinalReport> {
        self.probe.stop()?;
        Ok(FinalReport {
            growth: self.growth.curve(),
            unique_pages_total: Some(hll_estimate(&self.total)),
            threads: self.probe.thread_counts()?,
            zero_page_share: None,
            backend_stats: None,
            total_pages_sd: None,
            warmup_pages_sd: None,
            threads_attribute_dirtying: true,
        })
    }
}
