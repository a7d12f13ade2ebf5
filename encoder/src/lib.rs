//! BERT sentence encoder in candle: loads sentence-transformers folders, matches their vectors,
//! and shares one trainable model definition with the trainer.
//!
//! - [`BertModel`]: the model over candle ops that all have a backward (training and GPU).
//! - [`cpu::CpuBert`]: a packed, padding-free CPU inference path over the same weights, at f32,
//!   bf16 or int8 ([`lowp`]).
//! - [`SentenceEncoder`]: tokenizer + model + pooling + normalisation from a model folder.
//! - [`retrieval`]: MRR/Recall/nDCG over dot-product scores.

pub mod config;
pub mod cpu;
pub mod encoder;
pub mod error;
pub mod linalg;
pub mod lowp;
pub mod model;
pub mod ops;
pub mod precision;
pub mod retrieval;
pub mod simd;

pub use candle_core;
pub use candle_nn;
pub use config::{BertConfig, HiddenAct, ModuleEntry, Pooling, PoolingMode, SentenceBertConfig};
pub use encoder::{pad_batch, Backend, SentenceEncoder};
pub use error::{EncoderError, Result};
pub use model::{
    cls_pool, l2_normalize, max_pool, mean_pool, pool, softmax_last_dim, BertModel, Compute,
    DropoutRng, DropoutRngState, LayerNorm, Linear, OpsPath,
};
pub use precision::{DeviceSpec, Precision};
pub use retrieval::{EvalSet, RetrievalMetrics};
pub use tokenizers;
