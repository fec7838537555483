//! `migtrace predict`: pre-copy convergence simulation over links (work in progress in this
//! commit; see issue 3).
use clap::Args;

#[derive(Debug, Args)]
pub struct PredictArgs {}

pub fn run(_args: PredictArgs) -> anyhow::Result<()> {
    anyhow::bail!("predict is not implemented in this build yet")
}
