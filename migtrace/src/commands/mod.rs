//! One module per subcommand. They parse nothing themselves (clap did) and hold no model
//! logic: they wire sources, model and sinks together.
pub mod demo;
pub mod exporter;
pub mod passes;
pub mod plot;
pub mod predict;
pub mod watch;
