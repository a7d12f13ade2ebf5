//! fetch's integration tests: one binary, so the crate's tests link once.

mod common;
mod download;
mod hub;
mod hub_dataset;
mod unpack;
