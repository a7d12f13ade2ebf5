//! Upstream's normalized `jsonl(.gz)` files named in a config (`AllNLI.jsonl.gz` under the
//! pairs folder). The mixer reads only datasets (the pairs contract), so such a file is first
//! ingested by `ingest`'s `jsonl` source, the one reader of that format, into a dataset at
//! `<out>/.sources/<id>/` (`prep mix` does it before mixing). This module says where that
//! dataset lives and whether it is the ingest of the file as it is now: same size and
//! modification time as recorded under [`INPUT_MTIME_OPTION`] in its manifest's options (cheap
//! to check; hashing multi-GB files on every run would not be).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemas::Manifest;
use serde_json::Value;

use crate::error::{MixError, Result};
use crate::mix::SOURCES_DIR;

/// The manifest option recording the input file's modification time (ns since the epoch).
pub const INPUT_MTIME_OPTION: &str = "input_mtime_ns";

/// The folder name of source `id` inside `.sources/` (ids are config names: keep them one
/// plain path component).
pub fn dataset_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the dataset ingested from upstream file `id` lives for a mix into `out`.
pub fn dataset_dir(out: &Path, id: &str) -> PathBuf {
    out.join(SOURCES_DIR).join(dataset_name(id))
}

fn mtime_ns(file: &Path) -> Result<String> {
    let modified = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map_err(|e| MixError::io(file, e))?;
    let ns = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(ns.to_string())
}

/// What the ingest of `file` records in its manifest's options so [`converted`] recognises it.
pub fn conversion_options(file: &Path) -> Result<BTreeMap<String, Value>> {
    Ok(BTreeMap::from([(
        INPUT_MTIME_OPTION.to_owned(),
        Value::String(mtime_ns(file)?),
    )]))
}

/// The manifest of the dataset at `dir` when it is the ingest of `file` as it is now; `Ok(None)`
/// when there is none or it was made from another version of the file.
pub fn converted(file: &Path, dir: &Path) -> Result<Option<Manifest>> {
    let Ok(manifest) = Manifest::read(dir) else {
        return Ok(None);
    };
    let bytes = std::fs::metadata(file)
        .map_err(|e| MixError::io(file, e))?
        .len();
    let same = manifest.source == "jsonl"
        && matches!(manifest.inputs.as_slice(), [input] if input.bytes == bytes)
        && manifest
            .options
            .get(INPUT_MTIME_OPTION)
            .and_then(Value::as_str)
            == Some(mtime_ns(file)?.as_str());
    Ok(same.then_some(manifest))
}

/// [`converted`], or an error saying the file must be ingested first, and how.
pub fn require_converted(file: &Path, dir: &Path) -> Result<Manifest> {
    converted(file, dir)?.ok_or_else(|| MixError::Unconverted {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
    })
}
