//! prep's integration tests: one binary, so the crate's tests link once.

mod cli_ingest;
mod demo;
mod device;
mod embed_search;
mod fault_injection;
mod hub_download;
#[cfg(feature = "inspect")]
mod inspect;
mod mix_upstream;
mod mpi;
mod object_store;
mod train_cli;
