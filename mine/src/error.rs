use std::path::PathBuf;

/// Errors of the mining stage, each naming the file or option that caused it.
#[derive(Debug, thiserror::Error)]
pub enum MineError {
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
    #[error("embedding: {0}")]
    Encoder(#[from] encoder::EncoderError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An option (or combination) that cannot work, named as on the command line.
    #[error("{0}")]
    Options(String),
    /// The approximate index could not be built or searched.
    #[error("HNSW index: {0}")]
    Index(String),
    /// Input that is readable but unusable (an empty dataset, a cache of another model).
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
}

impl MineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MineError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        MineError::Input {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = MineError> = std::result::Result<T, E>;
