//! Sinks: where `watch` results go. The records ([`crate::record`]) are what every sink renders; the
//! terminal sink ([`terminal`]) writes lines for people, the JSON sink ([`json`]) one JSON
//! object per line for programs.
pub mod hdrlog;
pub mod json;
pub mod prometheus;
pub mod terminal;

use crate::record::{Interval, LinkInterval, QemuRate, Start, Summary};

/// A destination for watch results.
pub trait Sink {
    fn start(&mut self, s: &Start);
    fn interval(&mut self, i: &Interval);
    fn summary(&mut self, s: &Summary);
    /// QEMU's own `calc-dirty-rate` measurement, beside ours (`--qmp`).
    fn qemu(&mut self, _r: &QemuRate) {}
    /// The link side of the interval just shown (`--iface`).
    fn link(&mut self, _l: &LinkInterval) {}
    /// What the sink could not write, once the watch has ended: a record the user asked
    /// for and did not get is a failure of the run (exit 1), not a warning.
    fn failure(&mut self) -> Option<String> {
        None
    }
}

/// Hands every record to several sinks in turn (`watch --listen`, `--hdr-log`).
pub struct FanOut<'a>(pub Vec<&'a mut dyn Sink>);

impl Sink for FanOut<'_> {
    fn start(&mut self, s: &Start) {
        self.0.iter_mut().for_each(|k| k.start(s))
    }
    fn interval(&mut self, i: &Interval) {
        self.0.iter_mut().for_each(|k| k.interval(i))
    }
    fn summary(&mut self, s: &Summary) {
        self.0.iter_mut().for_each(|k| k.summary(s))
    }
    fn qemu(&mut self, r: &QemuRate) {
        self.0.iter_mut().for_each(|k| k.qemu(r))
    }
    fn link(&mut self, l: &LinkInterval) {
        self.0.iter_mut().for_each(|k| k.link(l))
    }
    fn failure(&mut self) -> Option<String> {
        let all: Vec<String> = self.0.iter_mut().filter_map(|k| k.failure()).collect();
        (!all.is_empty()).then(|| all.join("; "))
    }
}
