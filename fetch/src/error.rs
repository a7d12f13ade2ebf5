use std::path::{Path, PathBuf};

/// Everything that can go wrong fetching a file or a model. Each variant names the URL or path
/// involved, so the binary can print it as one readable line.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found (HTTP 404); the catalogue entry or model id may be wrong or the file was moved")]
    NotFound { url: String },

    #[error("{url}: access denied (HTTP {status}){hint}")]
    Denied {
        url: String,
        status: u16,
        hint: &'static str,
    },

    #[error("{url}: {}", status_text(*status))]
    Status { url: String, status: u16 },

    #[error(
        "too many redirects ({count}) fetching {url}; the server redirects in a loop or too deep"
    )]
    TooManyRedirects { url: String, count: u32 },

    #[error("{url}: gave up after {attempts} attempts: {message}")]
    Network {
        url: String,
        attempts: u32,
        message: String,
    },

    #[error("{url}: expected {expected} bytes but {what} {actual}; {path} was not kept")]
    SizeMismatch {
        url: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
        what: &'static str,
    },

    #[error("{url}: sha256 {actual} does not match the expected {expected}; {path} was not kept")]
    ChecksumMismatch {
        url: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },

    /// An archive expands beyond its cap (a decompression bomb, or a cap set too low).
    #[error(
        "{path}: unpacking stopped: it expands beyond the cap of {limit} bytes ({origin}); \
         nothing was unpacked"
    )]
    UnpackTooLarge {
        path: PathBuf,
        limit: u64,
        origin: String,
    },

    /// Another run holds the destination's lock ([`schemas::OutputLock`]).
    #[error("{0}")]
    InUse(#[source] schemas::SchemaError),

    #[error("{what} is not downloaded into {dir}: run `{command}`")]
    NotCached {
        what: String,
        dir: PathBuf,
        command: String,
    },

    #[error("model `{model}`: {message}")]
    Model { model: String, message: String },

    #[error("dataset `{dataset}`: {message}")]
    Dataset { dataset: String, message: String },

    #[error("{failed} of {total} downloads failed; first: {first}")]
    Several {
        failed: usize,
        total: usize,
        first: Box<FetchError>,
        all: Vec<FetchError>,
    },
}

impl FetchError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        FetchError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Whether trying again could help: connection trouble and server-side (5xx, 429) failures.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// `HTTP 503 Service Unavailable`: the code with its standard reason phrase, when it has one.
pub fn status_text(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("HTTP {status} {r}"),
        None => format!("HTTP {status}"),
    }
}

pub type Result<T, E = FetchError> = std::result::Result<T, E>;
