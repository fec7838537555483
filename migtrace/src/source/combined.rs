//! `sample+fault`: the rate and growth curve from content sampling (which sees rewrites of
//! resident pages), plus exact fault counts and per-thread attribution from eBPF. This is
//! what `auto` picks on kernels without soft-dirty.
use std::time::Duration;

use anyhow::Result;

use super::{fault::FaultSource, sample::SampleSource, DirtySource, SourceOptions};
use crate::record::{FinalReport, IntervalReport};

pub struct Combined {
    sample: SampleSource,
    fault: FaultSource,
}

impl Combined {
    pub fn new(opts: &SourceOptions) -> Result<Combined> {
        Ok(Combined {
            fault: FaultSource::new(opts)?,
            sample: SampleSource::new(opts)?,
        })
    }
}

impl DirtySource for Combined {
    fn name(&self) -> &'static str {
        "sample+fault"
    }

    fn caveats(&self) -> Vec<String> {
        let mut c = self.sample.caveats();
        c.push("fault counts and per-thread shares come from eBPF and cover first-touch and copy-on-write faults only".into());
        c
    }

    fn tick_every(&self) -> Option<Duration> {
        self.fault.tick_every()
    }

    fn tick(&mut self) -> Result<()> {
        self.fault.tick()
    }

    fn on_exec(&mut self) -> Result<()> {
        self.fault.on_exec()?;
        self.sample.on_exec()
    }

    fn end_interval(&mut self, target_gone: bool) -> Result<IntervalReport> {
        let f = self.fault.end_interval(target_gone)?;
        let mut r = self.sample.end_interval(target_gone)?;
        // The rate is the sampler's: when it could not measure, neither did we (the fault
        // counts still go into the totals).
        r.faults = f.faults;
        r.drops.add(&f.drops);
        Ok(r)
    }

    fn finish(&mut self) -> Result<FinalReport> {
        let f = self.fault.finish()?;
        let mut r = self.sample.finish()?;
        // Shown as write faults per thread; they do not attribute the sampled rewrites.
        r.threads = f.threads;
        r.threads_attribute_dirtying = false;
        Ok(r)
    }
}
