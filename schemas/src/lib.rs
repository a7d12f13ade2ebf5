//! The file contracts between prep's stages.
//!
//! Every stage reads only the previous stage's files. This crate owns what those files look like:
//! the pair/triplet records and their Arrow schema, Parquet reading and writing, the per-dataset
//! [`Manifest`], the mixer's typed [`ShardIndex`], atomic file writing and a tiny [`Progress`] interface
//! that libraries report through while staying silent by default.

pub mod atomic;
pub mod dataset;
pub mod embeddings;
pub mod error;
pub mod hash;
pub mod index;
pub mod lock;
pub mod manifest;
pub mod pairs;
pub mod progress;
pub mod shards;

pub use atomic::{AtomicDir, AtomicFile};
pub use dataset::{DatasetReader, DatasetWriter};
pub use error::SchemaError;
pub use hash::{sha256_file, Sha256Writer};
pub use index::{
    ConfigEntry, DatasetEntry, IndexConfig, MixSettings, Mixing, MixingDeviation, ShardEntry,
    ShardIndex, SourceKind, TokenizerInfo, SHARD_INDEX_FILE,
};
pub use lock::OutputLock;
pub use manifest::{InputFile, Manifest, MANIFEST_FILE};
pub use pairs::{
    negative_column, pairs_schema, pairs_schema_for, part_files, records_from_batch, Arity,
    PairReader, PairRecord, PairWriter, PairWriterOptions, PartFile,
};
pub use progress::{NoProgress, Progress, Unit};
pub use shards::{
    negative_ids_column, shard_file_name, shard_schema, shard_schema_for, ShardBatch, ShardReader,
    ShardRow, ShardWriter, ShardWriterOptions,
};

/// The version of prep that wrote a file, recorded in every manifest and index.
pub const PREP_VERSION: &str = env!("CARGO_PKG_VERSION");
