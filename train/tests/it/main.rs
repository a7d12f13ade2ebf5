//! train's integration tests: one binary, so the crate's tests link once.

mod common;
mod device;
mod distributed;
mod gradcache;
mod loss;
mod parity;
mod run;
