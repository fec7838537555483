//! `migtrace watch` (in progress).
use clap::Args;
#[derive(Debug, Args)]
pub struct WatchArgs {}
pub fn run(_a: WatchArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
