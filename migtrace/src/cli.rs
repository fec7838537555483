//! Command-line definitions (clap derive). Each subcommand's arguments live beside its
//! implementation in [`crate::commands`]; this file names them and dispatches to them.
use clap::{Parser, Subcommand};

use crate::commands::{demo, exporter, passes, plot, predict, watch};

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
    Watch(watch::WatchArgs),
    /// Predict pre-copy convergence, passes, time and downtime over one or more links.
    Predict(predict::PredictArgs),
    /// Run a built-in writer with a known rate, watch it, and compare measured with true.
    Demo(demo::DemoArgs),
    /// Serve Prometheus metrics for several processes or every QEMU VM, long-running.
    Exporter(exporter::ExporterArgs),
    /// Draw a watch profile, a `watch --json` log or `predict --json` output as SVG.
    Plot(plot::PlotArgs),
    /// Time each pass of a real QEMU migration from QMP; with --profile, back-test the model.
    Passes(passes::PassesArgs),
    /// The built-in writer workload (used by `demo`, the tests and the benchmarks).
    #[command(hide = true)]
    Writer(crate::workload::WriterArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Watch(a) => watch::run(a),
            Command::Predict(a) => predict::run(a),
            Command::Demo(a) => demo::run(a),
            Command::Exporter(a) => exporter::run(a),
            Command::Plot(a) => plot::run(a),
            Command::Passes(a) => passes::run(a),
            Command::Writer(a) => crate::workload::run(a),
        }
    }
}
