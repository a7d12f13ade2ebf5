use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: sha256 is {actual}, the listing says {expected} (damaged or changed object; refused)")]
    Damaged {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: read-only location (https:// is read-only; write to s3://, gs:// or az://)")]
    ReadOnly { url: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// Worth another try: the store's or the network's trouble, not ours or the data's.
    pub(crate) fn transient(&self) -> bool {
        match self {
            StoreError::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
