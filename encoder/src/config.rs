//! The model folder's JSON files: HF `config.json` and sentence-transformers' module files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};

/// HF BERT `config.json`. Unknown fields are ignored on read; what we know is written back, so a
/// checkpoint the trainer saves loads in transformers and sentence-transformers alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default)]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
}

/// The feed-forward activation, by its `config.json` name (as candle-transformers' `HiddenAct`).
/// An unknown name fails when `config.json` is read, naming the file and the accepted names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU (erf), BERT's and MiniLM's.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU, under its two HF names (kept apart so the name round-trips).
    #[serde(rename = "gelu_new")]
    GeluNew,
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    /// Whether this is GELU's tanh approximation (rather than erf GELU or ReLU).
    pub fn is_tanh_gelu(self) -> bool {
        matches!(self, HiddenAct::GeluNew | HiddenAct::GeluPytorchTanh)
    }
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_pos_type() -> String {
    "absolute".to_owned()
}
fn default_model_type() -> String {
    "bert".to_owned()
}
fn default_architectures() -> Vec<String> {
    vec!["BertModel".to_owned()]
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: BertConfig = read_json(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The shapes this crate supports; anything else is an error naming the file.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| EncoderError::Config {
            path: path.to_owned(),
            msg,
        };
        if self.num_attention_heads == 0
            || (self.hidden_size / self.num_attention_heads) * self.num_attention_heads
                != self.hidden_size
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported (absolute)",
                self.position_embedding_type
            )));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// all-MiniLM-L6-v2's shape, for tests and fresh models.
    pub fn minilm_l6() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            initializer_range: 0.02,
            position_embedding_type: default_pos_type(),
            model_type: default_model_type(),
            architectures: default_architectures(),
        }
    }
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingMode {
    Mean,
    Cls,
    Max,
}

/// `1_Pooling/config.json` (sentence-transformers' field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pooling {
    pub word_embedding_dimension: usize,
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

impl Pooling {
    pub fn mean(dim: usize) -> Self {
        Pooling {
            word_embedding_dimension: dim,
            pooling_mode_cls_token: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let p: Pooling = read_json(path)?;
        p.mode().map_err(|msg| EncoderError::Config {
            path: path.to_owned(),
            msg,
        })?;
        Ok(p)
    }

    /// The one mode set. Concatenated modes (several flags) are not supported.
    pub fn mode(&self) -> std::result::Result<PoolingMode, String> {
        let set = [
            (self.pooling_mode_mean_tokens, PoolingMode::Mean),
            (self.pooling_mode_cls_token, PoolingMode::Cls),
            (self.pooling_mode_max_tokens, PoolingMode::Max),
        ];
        if self.pooling_mode_mean_sqrt_len_tokens {
            return Err("pooling_mode_mean_sqrt_len_tokens is not supported".to_owned());
        }
        let on: Vec<PoolingMode> = set.iter().filter(|(b, _)| *b).map(|(_, m)| *m).collect();
        match on.as_slice() {
            [m] => Ok(*m),
            [] => Err("no pooling mode is set".to_owned()),
            _ => Err(format!(
                "several pooling modes at once ({on:?}) are not supported"
            )),
        }
    }
}

/// `sentence_bert_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceBertConfig {
    pub max_seq_length: usize,
    #[serde(default)]
    pub do_lower_case: bool,
}

/// One entry of `modules.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleEntry {
    pub idx: usize,
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| EncoderError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EncoderError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_ignores_unknown_fields() {
        let text = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "use_cache": true}"#;
        let cfg: BertConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg.layer_norm_eps, 1e-12);
        assert_eq!(cfg.hidden_act, HiddenAct::Gelu);
        let back: BertConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        cfg.validate(Path::new("config.json")).unwrap();
    }

    #[test]
    fn hidden_act_names_round_trip_and_an_unknown_one_names_the_file() {
        for name in ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"] {
            let act: HiddenAct = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(serde_json::to_string(&act).unwrap(), format!("\"{name}\""));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "swish"}"#,
        )
        .unwrap();
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("swish") && err.contains("gelu_new"), "{err}");
    }

    #[test]
    fn pooling_modes() {
        let mut p = Pooling::mean(4);
        assert_eq!(p.mode().unwrap(), PoolingMode::Mean);
        p.pooling_mode_cls_token = true;
        assert!(p.mode().is_err());
        p.pooling_mode_mean_tokens = false;
        assert_eq!(p.mode().unwrap(), PoolingMode::Cls);
    }
}
