use std::path::PathBuf;

/// Errors from reading or writing prep's files. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: Parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: Arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A key the file must have is not there (missing, or misspelt): never silently defaulted.
    #[error("{path}: missing key `{key}` (absent or misspelt; the object ending at line {line}, column {column})")]
    MissingKey {
        path: PathBuf,
        key: String,
        line: usize,
        column: usize,
    },
    /// Another run holds the output's lock ([`crate::OutputLock`]).
    #[error("{target} is in use by pid {holder} (another prep run); wait for it or stop it")]
    Locked { target: PathBuf, holder: String },
}

impl SchemaError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SchemaError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SchemaError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
