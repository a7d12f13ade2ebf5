//! One module per subcommand: its clap `Args` and a `run` that wires the stage crates together.

pub mod bench;
pub mod demo;
mod demo_mined;
pub mod download;
pub mod embed;
pub mod eval;
pub mod ingest;
#[cfg(feature = "inspect")]
pub mod inspect;
pub mod mine;
pub mod mix;
pub mod search;
pub mod storage;
pub mod train;
