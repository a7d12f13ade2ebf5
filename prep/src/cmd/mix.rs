//! `prep mix`: not wired yet; its issue fills this module in.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`prep mix` is not available in this build yet")
}
