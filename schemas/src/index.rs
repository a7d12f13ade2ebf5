//! `index.json`: the mixer's description of a folder of tokenized shards, typed.
//!
//! The loader trusts only shards listed here (and verifies their sha256); `prep inspect`, a mix
//! resume and `prep train` read the settings and per-dataset counters. Every key the mixer
//! writes is a typed field: a key missing or misspelt in the file fails [`ShardIndex::read`]
//! with [`SchemaError::MissingKey`] naming the file and the key, never a silent default. Keys
//! this version does not know (written by a later one) are kept in `other`.
//!
//! The file stays flat and keeps the key order prep has always written (the fixed keys first,
//! then the rest alphabetically), so the same inputs give the same bytes; the in-memory struct
//! groups the keys (mix settings, tokenizer, per-dataset stats) for its users.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Result, SchemaError};
use crate::pairs::Arity;

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

/// How batches pick their datasets: upstream's weighted random draw, or an exact schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixing {
    Random,
    Exact,
}

impl std::str::FromStr for Mixing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "random" => Ok(Mixing::Random),
            "exact" => Ok(Mixing::Exact),
            _ => Err(format!("mixing is `random` or `exact`, not `{s}`")),
        }
    }
}

impl std::fmt::Display for Mixing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mixing::Random => "random",
            Mixing::Exact => "exact",
        })
    }
}

/// One `data_config.json` entry. Upstream reads only `name` and `weight`; `lines` is
/// informational. (Fields in alphabetical order: the order index.json has always had.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    pub name: String,
    pub weight: u64,
}

/// The `data_config.json` a mix was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub entries: Vec<ConfigEntry>,
    pub path: String,
}

/// Where a mixed dataset's rows came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// An ingested dataset folder (`part-*.parquet` + `manifest.json`).
    Dataset { dir: PathBuf },
    /// A normalized upstream `jsonl(.gz)` file, converted to Parquet before mixing.
    Jsonl { file: PathBuf },
}

impl Serialize for SourceKind {
    /// `{"dir": .., "kind": "dataset"}`: the tag after the path, as index.json has always had it.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, path, kind) = match self {
            SourceKind::Dataset { dir } => ("dir", dir, "dataset"),
            SourceKind::Jsonl { file } => ("file", file, "jsonl"),
        };
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(key, path)?;
        map.serialize_entry("kind", kind)?;
        map.end()
    }
}

/// What the mix did with one dataset (fields alphabetical, as in the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// Batches of this dataset in the shards listed.
    pub batches: u64,
    pub columns: Arity,
    /// Current epoch of the dataset's stream (0 = first pass).
    pub epoch: u64,
    /// Rows taken from the stream (drawn + skipped) over the dataset's rows: passes made.
    pub epochs: f64,
    /// The config names merged into this dataset.
    pub names: Vec<String>,
    /// `batches` over all batches listed.
    pub realised_share: f64,
    /// Rows the dataset holds (its manifest's count).
    pub rows: u64,
    pub rows_drawn: u64,
    pub rows_skipped_duplicate: u64,
    /// `weight` over the sum of the weights.
    pub share: f64,
    pub source: SourceKind,
    pub weight: u64,
    /// Keys written by a later prep version.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// How far realised batch counts strayed from the weights (fields alphabetical, as in the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixingDeviation {
    pub max_abs: f64,
    pub per_dataset: BTreeMap<String, f64>,
    pub unit: String,
    pub what: String,
    pub within_one_batch: bool,
}

/// The settings a mix ran with (besides batch size, steps and seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixSettings {
    pub config: IndexConfig,
    /// Token cap of anchors, and of positives and negatives.
    pub max_length_a: usize,
    pub max_length_b: usize,
    pub datasets_per_batch: usize,
    pub batches_per_draw: usize,
    pub batches_per_shard: usize,
    pub shuffle_buffer: usize,
    pub mixing: Mixing,
    /// The shards also hold the raw texts (`--keep-text`).
    pub keep_text: bool,
    /// Negative id columns every shard has: `negative_ids`, then `negative_2_ids` ..
    /// `negative_N_ids` when a dataset of the mix has N > 1 negatives (a batch of a dataset
    /// with fewer leaves the rest null; each dataset's own count is its `columns` − 2). The key
    /// `negative_columns` is written only when above 1, so pair and triplet mixes keep the
    /// bytes they always had, and an index without it means 1.
    pub negative_columns: usize,
}

/// The tokenizer the shards' ids come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerInfo {
    /// The tokenizer.json used (`tokenizer` in the file).
    pub path: String,
    /// Its sha256 (`tokenizer_sha256`).
    pub sha256: String,
    /// Which implementation tokenized (`tokenizer_engine`).
    pub engine: String,
    /// What the loader pads with (`pad_token_id`).
    pub pad_token_id: u32,
}

/// `index.json`. Serialized through [`IndexFile`], its flat on-disk layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "IndexFile", into = "IndexFile")]
pub struct ShardIndex {
    pub prep_version: String,
    pub batch_size: u64,
    pub steps: u64,
    pub seed: u64,
    pub shards: Vec<ShardEntry>,
    pub datasets: BTreeMap<String, DatasetEntry>,
    pub mix: MixSettings,
    pub tokenizer: TokenizerInfo,
    /// The shards listed hold every batch `0..steps`.
    pub complete: bool,
    /// What the inputs and options were, opaque: a rerun keeps the shards only when its own
    /// fingerprint equals this one.
    pub fingerprint: Value,
    /// Absent until the first shard is written.
    pub mixing_deviation: Option<MixingDeviation>,
    /// Keys written by a later prep version, kept as they are.
    pub other: BTreeMap<String, Value>,
}

/// index.json as it lies on disk: flat, the fixed keys first and the others alphabetical (the
/// order earlier versions wrote through a sorted map).
#[derive(Serialize, Deserialize)]
struct IndexFile {
    prep_version: String,
    batch_size: u64,
    steps: u64,
    seed: u64,
    shards: Vec<ShardEntry>,
    datasets: BTreeMap<String, DatasetEntry>,
    batches_per_draw: usize,
    batches_per_shard: usize,
    complete: bool,
    config: IndexConfig,
    datasets_per_batch: usize,
    fingerprint: Value,
    keep_text: bool,
    max_length_a: usize,
    max_length_b: usize,
    mixing: Mixing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mixing_deviation: Option<MixingDeviation>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    negative_columns: usize,
    pad_token_id: u32,
    shuffle_buffer: usize,
    tokenizer: String,
    tokenizer_engine: String,
    tokenizer_sha256: String,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

impl From<IndexFile> for ShardIndex {
    fn from(f: IndexFile) -> Self {
        ShardIndex {
            prep_version: f.prep_version,
            batch_size: f.batch_size,
            steps: f.steps,
            seed: f.seed,
            shards: f.shards,
            datasets: f.datasets,
            mix: MixSettings {
                config: f.config,
                max_length_a: f.max_length_a,
                max_length_b: f.max_length_b,
                datasets_per_batch: f.datasets_per_batch,
                batches_per_draw: f.batches_per_draw,
                batches_per_shard: f.batches_per_shard,
                shuffle_buffer: f.shuffle_buffer,
                mixing: f.mixing,
                keep_text: f.keep_text,
                negative_columns: f.negative_columns,
            },
            tokenizer: TokenizerInfo {
                path: f.tokenizer,
                sha256: f.tokenizer_sha256,
                engine: f.tokenizer_engine,
                pad_token_id: f.pad_token_id,
            },
            complete: f.complete,
            fingerprint: f.fingerprint,
            mixing_deviation: f.mixing_deviation,
            other: f.other,
        }
    }
}

impl From<ShardIndex> for IndexFile {
    fn from(i: ShardIndex) -> Self {
        let (m, t) = (i.mix, i.tokenizer);
        IndexFile {
            prep_version: i.prep_version,
            batch_size: i.batch_size,
            steps: i.steps,
            seed: i.seed,
            shards: i.shards,
            datasets: i.datasets,
            batches_per_draw: m.batches_per_draw,
            batches_per_shard: m.batches_per_shard,
            complete: i.complete,
            config: m.config,
            datasets_per_batch: m.datasets_per_batch,
            fingerprint: i.fingerprint,
            keep_text: m.keep_text,
            max_length_a: m.max_length_a,
            max_length_b: m.max_length_b,
            mixing: m.mixing,
            mixing_deviation: i.mixing_deviation,
            negative_columns: m.negative_columns,
            pad_token_id: t.pad_token_id,
            shuffle_buffer: m.shuffle_buffer,
            tokenizer: t.path,
            tokenizer_engine: t.engine,
            tokenizer_sha256: t.sha256,
            other: i.other,
        }
    }
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// serde's wording for a missing field (`de::Error::missing_field`).
fn missing_key(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

impl ShardIndex {
    /// The index of shards written by hand rather than mixed (benchmarks, tests): `shards` are
    /// the whole stream (`steps` is their batch count, `complete`); there is no config, tokenizer
    /// file or mixing run to record (empty paths and hashes, lengths 0, `mixing` random).
    pub fn hand_made(
        batch_size: u64,
        seed: u64,
        shards: Vec<ShardEntry>,
        pad_token_id: u32,
    ) -> ShardIndex {
        let steps = shards.iter().map(|s| s.batches).sum();
        let batches_per_shard = shards.iter().map(|s| s.batches).max().unwrap_or(0) as usize;
        ShardIndex {
            prep_version: crate::PREP_VERSION.to_owned(),
            batch_size,
            steps,
            seed,
            shards,
            datasets: BTreeMap::new(),
            mix: MixSettings {
                config: IndexConfig {
                    entries: Vec::new(),
                    path: String::new(),
                },
                max_length_a: 0,
                max_length_b: 0,
                datasets_per_batch: 1,
                batches_per_draw: 1,
                batches_per_shard,
                shuffle_buffer: 0,
                mixing: Mixing::Random,
                keep_text: false,
                negative_columns: 1,
            },
            tokenizer: TokenizerInfo {
                path: String::new(),
                sha256: String::new(),
                engine: "none".to_owned(),
                pad_token_id,
            },
            complete: true,
            fingerprint: Value::Null,
            mixing_deviation: None,
            other: BTreeMap::new(),
        }
    }

    /// Reads `dir/index.json`. A missing or misspelt key is [`SchemaError::MissingKey`].
    pub fn read(dir: &Path) -> Result<ShardIndex> {
        let path = dir.join(SHARD_INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| SchemaError::io(&path, e))?;
        Self::from_slice(&path, &bytes)
    }

    /// Parses index.json's bytes; `path` names the file in errors.
    pub fn from_slice(path: &Path, bytes: &[u8]) -> Result<ShardIndex> {
        serde_json::from_slice(bytes).map_err(|e| match missing_key(&e) {
            Some(key) => SchemaError::MissingKey {
                path: path.to_owned(),
                key,
                line: e.line(),
                column: e.column(),
            },
            None => SchemaError::Json {
                path: path.to_owned(),
                source: e,
            },
        })
    }

    /// The bytes [`ShardIndex::write`] writes: pretty JSON and a final newline.
    pub fn to_json_bytes(&self, dir: &Path) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| SchemaError::Json {
            path: dir.join(SHARD_INDEX_FILE),
            source: e,
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes `dir/index.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::AtomicFile::write_all(dir.join(SHARD_INDEX_FILE), &self.to_json_bytes(dir)?)
    }

    pub fn total_batches(&self) -> u64 {
        self.shards.iter().map(|s| s.batches).sum()
    }
}
