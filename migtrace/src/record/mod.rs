//! Records: the plain data that flows between the floors. Sources report
//! [`IntervalReport`]s and a [`FinalReport`]; [`crate::model::summary`] turns them into the
//! [`Start`], [`Interval`] and [`Summary`] records; [`crate::sink`] renders those, and
//! [`crate::profile`] saves what `predict` reads.
//!
//! The floor rule: this module is plain data (types, serde attributes, small pure helpers
//! such as [`FaultCounts::add`]) and imports nothing of migtrace; every other module may
//! import it. So no import cycle runs through it, and the JSON the records serialize to is
//! defined here and nowhere else.
//!
//! The files are by theme; every type is used as `crate::record::Name`:
//! - `interval.rs`: what a source reports each interval (fault counts, drops, sampling);
//! - `final_report.rs`: what a source reports at the end (growth curve, threads);
//! - `backend.rs`: a backend's own figures (softdirty's statistics);
//! - `summary.rs`: the records a watch emits (start, interval, summary, thread times);
//! - `guest.rs`: a QEMU guest (RAM blocks, vCPUs, QEMU's own dirty rate);
//! - `link.rs`: the link side (interface traffic, headroom, sends).
mod backend;
mod final_report;
mod guest;
mod interval;
mod link;
mod summary;

pub use backend::{BackendStats, PagemapMethod, SoftDirtyStats, ThpDetect};
pub use final_report::{FinalReport, GrowthPoint};
pub use guest::{ExcludedMemory, GuestBlock, GuestInfo, QemuRate, QemuRateSummary, VcpuInfo};
pub use interval::{Drops, FaultCounts, IntervalReport, SampleInfo};
pub use link::{LinkInterval, LinkSummary, SendThread};
pub use summary::{
    EndReason, Interval, MappingGroup, RatePercentiles, Start, Summary, ThreadLine, ThreadTime,
};
