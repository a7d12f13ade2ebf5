use std::path::PathBuf;

use schemas::SchemaError;

/// Where in the raw input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based line, or record number for non-line formats.
    pub record: u64,
    /// "line" or "record" (or "row", "question", ...): what `record` counts.
    pub unit: &'static str,
}

impl Location {
    /// Where a JSON document stopped parsing: a whole file is one record, so its line is what
    /// helps the user.
    pub fn of_json_error(path: &std::path::Path, e: &serde_json::Error) -> Self {
        Location {
            path: path.to_path_buf(),
            record: e.line() as u64,
            unit: "line",
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} {}", self.path.display(), self.unit, self.record)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Malformed { location: Location, message: String },
    #[error(
        "{location}: {message}\n  more than {limit} malformed records ({count} so far); \
         fix the input or raise --max-errors"
    )]
    TooManyErrors {
        location: Location,
        message: String,
        limit: u64,
        count: u64,
    },
    #[error("unknown source `{0}`; `prep ingest --help` lists the sources")]
    UnknownSource(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl IngestError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
