//! mine's integration tests: one binary, so the crate's tests link once.

mod cache;
mod common;
mod dataset;
mod filters;
mod knn;
mod negatives;
mod ntuple;
mod reference;
