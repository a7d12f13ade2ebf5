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
