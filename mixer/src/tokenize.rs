//! Tokenization: one tokenizer per max length (anchor, and positive/negative), padding off,
//! truncation on, ids including `[CLS]`/`[SEP]`. BERT WordPiece tokenizers take the exact fast
//! path in [`crate::wordpiece`]; any other pipeline goes through the `tokenizers` crate.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{MixError, Result};
use crate::wordpiece::BertWordPiece;

/// Which implementation encodes: recorded in `index.json` as `tokenizer_engine`.
pub const ENGINE_FAST: &str = "prep-wordpiece";
pub const ENGINE_HF: &str = "hf-tokenizers";

pub struct MixTokenizer {
    path: PathBuf,
    a: Tokenizer,
    b: Tokenizer,
    sha256: String,
    pad_id: u32,
    max_length_a: usize,
    max_length_b: usize,
    fast: Option<BertWordPiece>,
    /// Why the fast path was not taken, if it was not.
    fallback_reason: Option<String>,
}

impl MixTokenizer {
    /// Loads a `tokenizer.json`, or the one inside a model folder, with the fast path when the
    /// pipeline allows it.
    pub fn open(path: &Path, max_length_a: usize, max_length_b: usize) -> Result<Self> {
        Self::open_with(path, max_length_a, max_length_b, true)
    }

    /// As [`open`](Self::open); `allow_fast: false` always uses the `tokenizers` crate (for
    /// benchmarks and parity checks).
    pub fn open_with(
        path: &Path,
        max_length_a: usize,
        max_length_b: usize,
        allow_fast: bool,
    ) -> Result<Self> {
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
        let (fast, fallback_reason) = if !allow_fast {
            (None, Some("fast path disabled".to_owned()))
        } else {
            match BertWordPiece::from_file(&file).map_err(|e| MixError::io(&file, e))? {
                // HF would underflow below the specials' count; leave that to HF.
                Ok(f) if max_length_a.min(max_length_b) < f.num_special_tokens() => (
                    None,
                    Some("max length below the number of special tokens".into()),
                ),
                Ok(f) => (Some(f), None),
                Err(why) => (None, Some(why.0)),
            }
        };
        Ok(MixTokenizer {
            max_length_a,
            max_length_b,
            fast,
            fallback_reason,
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
    /// [`ENGINE_FAST`] or [`ENGINE_HF`].
    pub fn engine(&self) -> &'static str {
        if self.fast.is_some() {
            ENGINE_FAST
        } else {
            ENGINE_HF
        }
    }
    /// Why the `tokenizers` crate is used, when it is.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
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
        match &self.fast {
            Some(f) => Ok(f.encode(text, Some(self.max_length_a))),
            None => self.encode_with(&self.a, text),
        }
    }
    /// Ids of a positive or negative (truncated at `max_length_b`).
    pub fn encode_b(&self, text: &str) -> Result<Vec<u32>> {
        match &self.fast {
            Some(f) => Ok(f.encode(text, Some(self.max_length_b))),
            None => self.encode_with(&self.b, text),
        }
    }

    /// Encodes many texts in parallel on the current rayon pool.
    pub fn encode_many(&self, texts: &[&str], anchor: bool) -> Result<Vec<Vec<u32>>> {
        // The fast path takes about a microsecond a text: hand rayon chunks, not single texts.
        let min_len = if self.fast.is_some() { 64 } else { 1 };
        texts
            .par_iter()
            .with_min_len(min_len)
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
