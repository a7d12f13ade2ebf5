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

/// What a serde_json error means for the user: broken JSON, or valid JSON in another layout (a
/// missing or mistyped field). Returns the kind to count it under and the message.
pub fn json_problem(e: &serde_json::Error) -> (&'static str, String) {
    match e.classify() {
        serde_json::error::Category::Data => (
            "unexpected layout",
            format!("valid JSON, but not in the expected layout: {e}"),
        ),
        serde_json::error::Category::Eof => (
            "invalid JSON",
            format!("{e} (the text ends early: truncated?)"),
        ),
        _ => ("invalid JSON", e.to_string()),
    }
}

/// The error for a whole-document source (one JSON document per file) that does not parse: it
/// fails the run, naming the file, line, column and the reason, since nothing of it can be read.
pub fn document_error(path: &std::path::Path, what: &str, e: &serde_json::Error) -> IngestError {
    let (kind, message) = json_problem(e);
    IngestError::Malformed {
        location: Location::of_json_error(path, e),
        message: format!("{kind} ({what}), column {}: {message}", e.column()),
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
