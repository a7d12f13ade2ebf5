//! `prep bench train`: filled in by its issue.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`prep bench train` is not available in this build yet")
}
