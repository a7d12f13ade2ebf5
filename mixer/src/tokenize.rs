//! Tokenization with the `tokenizers` crate: one tokenizer per max length (anchor, and
//! positive/negative), padding off, truncation on, ids including `[CLS]`/`[SEP]`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{MixError, Result};

pub struct MixTokenizer {
    path: PathBuf,
    a: Tokenizer,
    b: Tokenizer,
    sha256: String,
    pad_id: u32,
}

impl MixTokenizer {
    /// Loads a `tokenizer.json`, or the one inside a model folder.
    pub fn open(path: &Path, max_length_a: usize, max_length_b: usize) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let err = |message: String| MixError::Tokenizer {
            path: file.clone(),
            message,
        };
        if !file.is_file() {
            return Err(err("no such tokenizer.json".into()));
        }
        let base = Tokenizer::from_file(&file).map_err(|e| err(e.to_string()))?;
        let pad_id = base
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| base.token_to_id("[PAD]"))
            .unwrap_or(0);
        let with_max = |max: usize| -> Result<Tokenizer> {
            let mut t = base.clone();
            t.with_padding(None);
            t.with_truncation(Some(TruncationParams {
                max_length: max,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
            Ok(t)
        };
        Ok(MixTokenizer {
            a: with_max(max_length_a)?,
            b: with_max(max_length_b)?,
            sha256: schemas::sha256_file(&file)?,
            pad_id,
            path: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// sha256 of the tokenizer.json used.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn encode_with(&self, t: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        // `encode_fast` skips character offsets, which ids do not depend on.
        t.encode_fast(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| MixError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "{e} (text starting {:?})",
                    text.chars().take(40).collect::<String>()
                ),
            })
    }

    /// Ids of an anchor (truncated at `max_length_a`).
    pub fn encode_a(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(&self.a, text)
    }
    /// Ids of a positive or negative (truncated at `max_length_b`).
    pub fn encode_b(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(&self.b, text)
    }

    /// Encodes many texts in parallel on the current rayon pool.
    pub fn encode_many(&self, texts: &[&str], anchor: bool) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .map(|t| {
                if anchor {
                    self.encode_a(t)
                } else {
                    self.encode_b(t)
                }
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.a.decode(ids, true).map_err(|e| MixError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}
