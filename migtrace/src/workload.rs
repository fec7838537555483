//! The built-in writer (in progress).
use clap::Args;
#[derive(Debug, Args)]
pub struct WriterArgs {}
pub fn run(_a: WriterArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
