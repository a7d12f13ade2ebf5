//! loader's integration tests: one binary, so the crate's tests link once.

mod stream;
