//! encoder's integration tests: one binary, so the crate's tests link once.

mod linalg;
mod parity;
mod train_graph;
