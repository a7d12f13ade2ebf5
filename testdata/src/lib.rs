//! Locating `../shared` (real fixtures and reference outputs) from tests.
//!
//! Tests that need it call [`shared_dir`]: under `CI=true` a missing folder is a loud failure,
//! elsewhere the test prints why it skips and returns.

use std::path::PathBuf;

/// The shared folder: `$PREP_SHARED`, else `shared/` beside the workspace root.
pub fn shared_dir() -> Option<PathBuf> {
    let candidate = std::env::var_os("PREP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("shared")
        });
    if candidate.join("fixtures").is_dir() {
        return Some(candidate);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!(
            "CI=true but the shared folder is missing at {} (set PREP_SHARED to its path)",
            candidate.display()
        );
    }
    eprintln!(
        "skipping: shared folder not found at {} (set PREP_SHARED)",
        candidate.display()
    );
    None
}

/// `shared/fixtures/<source>`, or `None` (with the same CI rule as [`shared_dir`]).
pub fn fixture_dir(source: &str) -> Option<PathBuf> {
    shared_dir().map(|s| s.join("fixtures").join(source))
}

/// `shared/reference`, or `None` (with the same CI rule as [`shared_dir`]).
pub fn reference_dir() -> Option<PathBuf> {
    shared_dir().map(|s| s.join("reference"))
}

/// The real all-MiniLM-L6-v2 folder used by parity tests: `$PREP_TEST_MODEL`, else
/// `~/.cache/prep/test-models/all-MiniLM-L6-v2` (filled by `scripts/fetch-test-model.sh`).
/// Same CI rule as [`shared_dir`]: missing under `CI=true` panics, else `None` with a message.
pub fn test_model_dir() -> Option<PathBuf> {
    let candidate = std::env::var_os("PREP_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache/prep/test-models/all-MiniLM-L6-v2")
        });
    if candidate.join("model.safetensors").is_file() {
        return Some(candidate);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!(
            "CI=true but the test model is missing at {} (run scripts/fetch-test-model.sh)",
            candidate.display()
        );
    }
    eprintln!(
        "skipping: test model not found at {} (run scripts/fetch-test-model.sh)",
        candidate.display()
    );
    None
}
pub mod moto;
pub mod static_http;
