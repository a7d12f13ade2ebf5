//! encoder's integration tests: one binary, so the crate's tests link once.

mod linalg;
mod lowp;
mod parity;
mod train_graph;
