use std::path::PathBuf;

use schemas::SchemaError;

/// Errors of the mixer. Each names the file, line or dataset it concerns.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{config}: {} of its entries resolve to nothing under {pairs} (ingest them, or put the \
         normalized .jsonl.gz there):\n  {}",
        missing.len(),
        missing.join("\n  ")
    )]
    Missing {
        config: PathBuf,
        pairs: PathBuf,
        missing: Vec<String>,
    },
    /// An upstream normalized jsonl file named in the config with no dataset ingested from it
    /// as it is now (see [`crate::upstream`]).
    #[error(
        "{file}: a normalized jsonl file; the mixer reads datasets, and {dir} holds none ingested \
         from this version of the file: `prep mix` ingests it there first (through `ingest`'s \
         `jsonl` source)"
    )]
    Unconverted { file: PathBuf, dir: PathBuf },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("dataset `{dataset}`: {message}")]
    Dataset { dataset: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    Options(String),
}

impl MixError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MixError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn dataset(dataset: &str, message: impl Into<String>) -> Self {
        MixError::Dataset {
            dataset: dataset.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = MixError> = std::result::Result<T, E>;
