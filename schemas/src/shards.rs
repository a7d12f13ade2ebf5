//! `index.json`: the mixer's description of a folder of tokenized shards.
//!
//! The loader trusts only shards listed here, and verifies their sha256.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchemaError};

pub const SHARD_INDEX_FILE: &str = "index.json";

/// One finished shard: whole batches `first_batch..first_batch + batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub rows: u64,
    pub first_batch: u64,
    pub batches: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub prep_version: String,
    pub batch_size: u64,
    pub steps: u64,
    pub seed: u64,
    pub shards: Vec<ShardEntry>,
    /// Per-dataset statistics (rows, batches, epochs, ...), owned by the mixer.
    pub datasets: BTreeMap<String, serde_json::Value>,
    /// Everything else the mixer records: config, tokenizer hash, max lengths, mixing mode.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ShardIndex {
    pub fn read(dir: &Path) -> Result<ShardIndex> {
        let path = dir.join(SHARD_INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| SchemaError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| SchemaError::Json { path, source: e })
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::AtomicFile::write_json(dir.join(SHARD_INDEX_FILE), self)
    }

    pub fn total_batches(&self) -> u64 {
        self.shards.iter().map(|s| s.batches).sum()
    }
}
