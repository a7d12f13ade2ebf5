//! mixer's integration tests: one binary, so the crate's tests link once.

mod common;
mod config_resolve;
mod mix_end_to_end;
mod ntuple;
mod stats;
mod tokenize_parity;
mod wordpiece_parity;
