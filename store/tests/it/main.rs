//! The store crate's integration tests, against a real S3 protocol server (moto, from PyPI) on
//! 127.0.0.1; each test starts its own server (skips with a message when moto is missing, fails
//! under `CI=true`).

mod common;
mod faults;
mod mirror;
mod publish;
