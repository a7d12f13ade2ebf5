use std::path::PathBuf;

/// Errors of the trainer, each naming the file or the step it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    #[error(transparent)]
    Encoder(#[from] encoder::EncoderError),
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
    #[error("step {step}: loss is {loss} (diverged; lower --lr or check the data)")]
    NonFinite { step: u64, loss: f64 },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TrainError::Invalid {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Adds what we were doing to a candle error.
pub trait Ctx<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> Ctx<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| TrainError::Candle {
            context: context.to_owned(),
            source,
        })
    }
}
