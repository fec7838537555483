//! One module per subcommand. They parse nothing themselves (clap did) and hold no model
//! logic: they wire sources, model and sinks together.
pub mod demo;
pub mod exporter;
pub mod passes;
pub mod plot;
pub mod predict;
pub mod watch;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Watch(a) => watch::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Exporter(a) => exporter::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Passes(a) => passes::run(a),
        Command::Writer(a) => crate::workload::run(a),
    }
}
