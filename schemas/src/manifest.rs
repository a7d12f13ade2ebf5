//! `manifest.json`: what a dataset folder holds and how it was made.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchemaError};
use crate::pairs::{Arity, PartFile};

pub const MANIFEST_FILE: &str = "manifest.json";

/// A raw input file the dataset was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl InputFile {
    /// `path` as a manifest input: its size and sha256, from one read of the file.
    pub fn of(path: &std::path::Path) -> crate::error::Result<Self> {
        let (sha256, bytes) = crate::hash::sha256_and_len(path)?;
        Ok(InputFile {
            path: path.display().to_string(),
            bytes,
            sha256,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset id (snake_case, as in UPSTREAM.md), also the folder name.
    pub dataset: String,
    /// The ingest source that produced it (`stackexchange` produces three datasets).
    pub source: String,
    /// 2 for (anchor, positive), 3 for (anchor, positive, negative).
    pub columns: Arity,
    pub rows: u64,
    /// Records not turned into rows, by reason ("empty answer", "malformed JSON", ...).
    pub skipped: BTreeMap<String, u64>,
    pub files: Vec<PartFile>,
    pub inputs: Vec<InputFile>,
    pub prep_version: String,
    /// The options the run used, as given on the command line.
    pub options: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    pub fn read(dataset_dir: &Path) -> Result<Manifest> {
        let path = dataset_dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| SchemaError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| SchemaError::Json { path, source: e })
    }

    pub fn write(&self, dataset_dir: &Path) -> Result<()> {
        crate::AtomicFile::write_json(dataset_dir.join(MANIFEST_FILE), self)
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}
