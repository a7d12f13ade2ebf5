//! Model resolution shared by every command that takes `--model`: a local folder for now;
//! the download issue extends it to Hub ids fetched into the HF cache.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Turns a `--model` argument into a local folder holding the model files.
#[allow(dead_code)]
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.is_dir() {
        return Ok(path);
    }
    bail!("model `{spec}` is not a local folder (Hub ids need `prep download` support)")
}
