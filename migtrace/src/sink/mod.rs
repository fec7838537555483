//! Sinks: where `watch` results go. The records ([`crate::report`]) are what every sink renders; the
//! terminal sink ([`terminal`]) writes lines for people, the JSON sink ([`json`]) one JSON
//! object per line for programs.
pub mod json;
pub mod predict_out;
pub mod terminal;

pub use crate::report::{EndReason, Interval, RatePercentiles, Start, Summary, ThreadLine};

/// A destination for watch results.
pub trait Sink {
    fn start(&mut self, s: &Start);
    fn interval(&mut self, i: &Interval);
    fn summary(&mut self, s: &Summary);
}
