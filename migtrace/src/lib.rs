//! migtrace: measures how fast a live process or VM dirties memory, and predicts whether and
//! how fast an iterative pre-copy live migration (QEMU, KVM, vMotion) converges.
//!
//! Layout:
//! - [`source`]: measurement backends (eBPF fault counting, content sampling), one trait;
//! - [`probe`]: the one eBPF loader, and the fault, send and KVM probes on top of it;
//! - [`model`]: the pre-copy model, pure functions without I/O;
//! - [`estimate`]: statistics shared by the backends (HyperLogLog, confidence intervals);
//! - [`record`]: the plain data between the floors (interval and final reports, the watch's
//!   records: start, interval, summary); it imports nothing of migtrace;
//! - [`sink`]: where a watch's records stream to (terminal, JSON lines, Prometheus, HdrHistogram);
//! - [`output`]: the per-command renderers (predict, passes, plot, demo);
//! - [`profile`]: the versioned dirty profile `watch` writes and `predict` reads;
//! - [`commands`]: one module per CLI subcommand, kept thin;
//! - [`watcher`]: the watch loop that drives a source over time;
//! - [`qemu`]: a QEMU target: its command line, guest-RAM mappings, vCPU threads, QMP;
//! - [`link`]: the link side during a watch (interface traffic, headroom; `--iface`);
//! - [`target`], [`workload`]: the watched process, and the built-in writer.
pub mod cli;
pub mod commands;
pub mod error;
pub mod estimate;
pub mod files;
pub mod guest;
pub mod link;
pub mod model;
pub mod output;
pub mod passes;
pub mod probe;
pub mod profile;
pub mod qemu;
pub mod record;
pub mod sink;
pub mod source;
pub mod target;
pub mod units;
pub mod watcher;
pub mod workload;
