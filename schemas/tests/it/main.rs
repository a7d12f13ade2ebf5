//! schemas' integration tests: one binary, so the crate's tests link once.

mod embeddings;
mod index;
mod ntuple;
mod shards;
