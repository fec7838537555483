//! Command-line definitions (clap derive). Each subcommand's arguments live beside its
//! implementation in [`crate::commands`]; this file only names them.
use clap::{Parser, Subcommand};

/// migtrace: will this process or VM live-migrate, and how fast?
///
/// `watch` measures how fast a live process dirties memory (eBPF on the page-fault path,
/// or content sampling); `predict` simulates iterative pre-copy migration over a link from
/// such a measurement; `demo` shows both on a built-in writer.
#[derive(Debug, Parser)]
#[command(name = "migtrace", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure a live process's memory dirty rate (needs root for eBPF and sampling).
    Watch(crate::commands::watch::WatchArgs),
    /// Predict pre-copy convergence, passes, time and downtime over one or more links.
    Predict(crate::commands::predict::PredictArgs),
    /// Run a built-in writer with a known rate, watch it, and compare measured with true.
    Demo(crate::commands::demo::DemoArgs),
    /// Serve Prometheus metrics for several processes or every QEMU VM, long-running.
    Exporter(crate::commands::exporter::ExporterArgs),
    /// Draw a watch profile, a `watch --json` log or `predict --json` output as SVG.
    Plot(crate::commands::plot::PlotArgs),
    /// Time each pass of a real QEMU migration from QMP; with --profile, back-test the model.
    Passes(crate::commands::passes::PassesArgs),
    /// The built-in writer workload (used by `demo`, the tests and the benchmarks).
    #[command(hide = true)]
    Writer(crate::workload::WriterArgs),
}
