//! The mixer: `data_config.json` weights over normalized pair datasets into the exact stream of
//! training batches, shuffled, deduplicated per round, tokenized and written as Parquet shards
//! with an `index.json` (see `schemas::shards` for the file contract).

pub mod config;
pub mod error;
pub mod mix;
pub mod rng;
pub mod sampler;
pub mod stream;
pub mod tokenize;
pub mod upstream;
pub mod wordpiece;

pub use config::{
    resolve, upstream_dataset_id, ConfigEntry, MixConfig, ResolvedSource, SourceKind,
    MAX_TOTAL_WEIGHT,
};
pub use error::{MixError, Result};
pub use mix::{mix, prepare_sources, MixOptions, MixReport, PreparedSource};
pub use sampler::{DatasetStats, Deviation, Mixing, Sampler, Schedule};
pub use stream::DatasetStream;
pub use tokenize::MixTokenizer;
