//! A sentence-transformers model folder as one object: tokenizer, BERT, pooling, normalisation.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use schemas::{NoProgress, Progress, Unit};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::config::{read_json, BertConfig, ModuleEntry, Pooling, PoolingMode, SentenceBertConfig};
use crate::cpu::CpuBert;
use crate::error::{CandleContext, EncoderError, Result};
use crate::model::{l2_normalize, pool, BertModel, Compute};
use crate::precision::Precision;

/// Which forward computes embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Packed rows without padding, fused kernels ([`crate::cpu`]); CPU only.
    Packed,
    /// The trainable candle graph ([`BertModel::forward`]) over padded batches; any device.
    Candle,
}

/// A loaded sentence embedder.
pub struct SentenceEncoder {
    dir: PathBuf,
    tokenizer: Tokenizer,
    model: BertModel,
    config: BertConfig,
    pooling: PoolingMode,
    normalize: bool,
    max_seq_length: usize,
    device: Device,
    cpu: Option<CpuBert>,
    backend: Backend,
    batch_parallel: bool,
    precision: Precision,
}

fn low_precision_needs_packed(precision: Precision) -> EncoderError {
    EncoderError::Invalid(format!(
        "precision {precision} on the CPU runs on the packed backend only (the candle graph is f32)"
    ))
}

/// What `modules.json` says beyond the transformer itself.
struct Modules {
    transformer_dir: PathBuf,
    pooling: PoolingMode,
    normalize: bool,
}

fn read_modules(dir: &Path, hidden: Option<usize>) -> Result<Modules> {
    let path = dir.join("modules.json");
    if !path.is_file() {
        // A plain HF BERT folder: mean pooling, no normalisation (what sentence-transformers
        // builds for it).
        let _ = hidden;
        return Ok(Modules {
            transformer_dir: dir.to_owned(),
            pooling: PoolingMode::Mean,
            normalize: false,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&path)?;
    let mut transformer_dir = dir.to_owned();
    let mut pooling = None;
    let mut normalize = false;
    for m in &modules {
        let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
        match kind {
            "Transformer" => transformer_dir = dir.join(&m.path),
            "Pooling" => {
                let p = Pooling::from_file(&dir.join(&m.path).join("config.json"))?;
                pooling = Some(p.mode().expect("checked by from_file"));
            }
            "Normalize" => normalize = true,
            other => {
                return Err(EncoderError::Config {
                    path: path.clone(),
                    msg: format!("module type `{other}` ({}) is not supported", m.kind),
                })
            }
        }
    }
    Ok(Modules {
        transformer_dir,
        pooling: pooling.unwrap_or(PoolingMode::Mean),
        normalize,
    })
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder (modules.json, 1_Pooling/, sentence_bert_config.json,
    /// config.json, model.safetensors, tokenizer.json) or a plain HF BERT folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let modules = read_modules(dir, None)?;
        let tdir = &modules.transformer_dir;
        let config = BertConfig::from_file(&tdir.join("config.json"))?;

        // max_seq_length: sentence_bert_config.json, else the tokenizer's model_max_length,
        // never beyond the position table.
        let mut max_seq_length = config.max_position_embeddings;
        let sbert = [
            tdir.join("sentence_bert_config.json"),
            dir.join("sentence_bert_config.json"),
        ];
        if let Some(p) = sbert.iter().find(|p| p.is_file()) {
            let s: SentenceBertConfig = read_json(p)?;
            max_seq_length = s.max_seq_length.min(max_seq_length);
        } else {
            let tc = tdir.join("tokenizer_config.json");
            if tc.is_file() {
                let v: serde_json::Value = read_json(&tc)?;
                if let Some(m) = v.get("model_max_length").and_then(|m| m.as_u64()) {
                    max_seq_length = max_seq_length.min(m as usize);
                }
            }
        }

        let tokenizer = load_tokenizer(&tdir.join("tokenizer.json"), max_seq_length)?;

        let weights = tdir.join("model.safetensors");
        if !weights.is_file() {
            return Err(EncoderError::Config {
                path: weights,
                msg: "missing (only safetensors weights are supported)".to_owned(),
            });
        }
        // Read, not mapped: every tensor is copied out of the file while loading anyway, and a
        // mapping would need `unsafe` (its safety resting on nobody writing the file meanwhile).
        let bytes = std::fs::read(&weights).map_err(|source| EncoderError::Io {
            path: weights.clone(),
            source,
        })?;
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, device)
            .ctx(|| format!("{}", weights.display()))?;
        let model = BertModel::load(vb, &config).ctx(|| format!("{}", weights.display()))?;
        drop(bytes);
        let cpu = if device.is_cpu() {
            Some(CpuBert::from_model(&model).ctx(|| "copying weights for the CPU path".into())?)
        } else {
            None
        };
        let backend = if cpu.is_some() {
            Backend::Packed
        } else {
            Backend::Candle
        };
        Ok(SentenceEncoder {
            dir: dir.to_owned(),
            tokenizer,
            model,
            config,
            pooling: modules.pooling,
            normalize: modules.normalize,
            max_seq_length,
            device: device.clone(),
            cpu,
            backend,
            batch_parallel: false,
            precision: Precision::F32,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn model(&self) -> &BertModel {
        &self.model
    }
    pub fn config(&self) -> &BertConfig {
        &self.config
    }
    pub fn pooling(&self) -> PoolingMode {
        self.pooling
    }
    pub fn normalize(&self) -> bool {
        self.normalize
    }
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Chooses the forward (`Packed` needs a CPU device).
    pub fn set_backend(&mut self, backend: Backend) -> Result<()> {
        if backend == Backend::Packed && self.cpu.is_none() {
            return Err(EncoderError::Invalid(
                "the packed backend runs on the CPU only".to_owned(),
            ));
        }
        if backend == Backend::Candle && self.device.is_cpu() && self.precision != Precision::F32 {
            return Err(low_precision_needs_packed(self.precision));
        }
        self.backend = backend;
        Ok(())
    }

    /// Packed CPU backend on several threads: run whole batches side by side, each on one thread
    /// (`true`: no synchronisation inside a forward), or spread each batch's steps over all
    /// threads (`false`, the default: measured faster, `prep bench encode`, 151 against 108
    /// sentences/s on 2 AVX2 cores and 414 against 330 on 2 AVX-512 ones). Side by side is used
    /// only when there are at least twice as many batches as threads.
    pub fn set_batch_parallel(&mut self, on: bool) {
        self.batch_parallel = on;
    }

    /// Runs the matrix products at `precision`, refused where the device cannot. On the CPU,
    /// bf16 and int8 repack the packed backend's Linear weights ([`crate::lowp`]) and the
    /// candle graph stays f32 (so [`Backend::Candle`] is refused at those precisions); on a GPU
    /// this sets the candle graph's dtype and candle's process-wide TF32 switch.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        precision.check_inference(&self.device)?;
        let graph = if self.device.is_cpu() {
            Precision::F32
        } else {
            precision
        };
        let compute = Compute::new(&self.device, graph)?;
        if self.device.is_cpu() && precision != self.precision {
            if self.backend == Backend::Candle && precision != Precision::F32 {
                return Err(low_precision_needs_packed(precision));
            }
            self.cpu = Some(
                CpuBert::from_model_at(&self.model, precision)
                    .ctx(|| format!("packing weights at {precision}"))?,
            );
        }
        graph.apply();
        self.model.set_compute(compute);
        self.precision = precision;
        Ok(())
    }

    /// The precision set by [`SentenceEncoder::set_precision`] (f32 after loading).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Changes the truncation length (at most the position table).
    pub fn set_max_seq_length(&mut self, max: usize) -> Result<()> {
        let max = max.min(self.config.max_position_embeddings);
        self.tokenizer = load_tokenizer_from(self.tokenizer.clone(), &self.dir, max)?;
        self.max_seq_length = max;
        Ok(())
    }

    /// Token ids with [CLS]/[SEP], truncated to `max_seq_length`, unpadded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.to_vec();
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| EncoderError::Tokenize {
                    index: 0,
                    msg: e.to_string(),
                })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Embeds `texts` (batches of `batch_size`, formed after sorting by length so they carry
    /// little padding); vectors come back in input order.
    pub fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        self.encode_with_progress(texts, batch_size, &NoProgress)
    }

    pub fn encode_with_progress(
        &self,
        texts: &[&str],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        self.encode_ids(&ids, batch_size, progress)
    }

    /// Embeds pre-tokenized sequences (as [`SentenceEncoder::tokenize`] makes them).
    pub fn encode_ids(
        &self,
        ids: &[Vec<u32>],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>> {
        let batch_size = batch_size.max(1);
        // Longest first: the first batch shows the peak memory, and equal lengths batch together.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        progress.begin("embedding", Some(ids.len() as u64), Unit::Items);
        let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
        let threads = rayon::current_num_threads();
        let side_by_side = self.batch_parallel
            && threads > 1
            && batches.len() >= 2 * threads
            && matches!((self.backend, &self.cpu), (Backend::Packed, Some(_)));
        if side_by_side {
            use rayon::prelude::*;
            let cpu = self.cpu.as_ref().expect("checked above");
            let results: Vec<Vec<Vec<f32>>> = batches
                .par_iter()
                .map(|chunk| {
                    let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                    let (hidden, offsets) = cpu.forward_packed_with(&seqs, false);
                    let v = cpu.pool(&hidden, &offsets, self.pooling, self.normalize);
                    progress.advance(chunk.len() as u64);
                    v
                })
                .collect();
            for (chunk, vecs) in batches.iter().zip(results) {
                for (&i, v) in chunk.iter().zip(vecs) {
                    out[i] = v;
                }
            }
        } else {
            for chunk in batches {
                let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                let vecs = self.embed_batch(&seqs)?;
                for (&i, v) in chunk.iter().zip(vecs) {
                    out[i] = v;
                }
                progress.advance(chunk.len() as u64);
            }
        }
        progress.finish();
        Ok(out)
    }

    /// One batch through the chosen backend.
    pub fn embed_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        match (self.backend, &self.cpu) {
            (Backend::Packed, Some(cpu)) => {
                let (hidden, offsets) = cpu.forward_packed(seqs);
                Ok(cpu.pool(&hidden, &offsets, self.pooling, self.normalize))
            }
            _ => self.embed_batch_candle(seqs),
        }
    }

    /// One batch through [`BertModel::forward`], right-padded to its longest sequence.
    pub fn embed_batch_candle(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (ids, mask) = pad_batch(seqs, &self.device).ctx(|| "building a batch".into())?;
        self.embed_padded(&ids, &mask)
    }

    /// Embeddings of an already padded batch (`ids`, `mask` `[B, T]`; padding anywhere).
    pub fn embed_padded(&self, ids: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = self.model.forward(ids, mask, None)?;
            let mut pooled = pool(&hidden, mask, self.pooling)?;
            if self.normalize {
                pooled = l2_normalize(&pooled)?;
            }
            pooled.to_dtype(DType::F32)?.to_vec2::<f32>()
        };
        run().ctx(|| "forward pass".into())
    }
}

/// `[B, T]` u32 ids and mask, right-padded with 0 (BERT's [PAD]).
pub fn pad_batch(seqs: &[&[u32]], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let b = seqs.len();
    let mut ids = vec![0u32; b * t];
    let mut mask = vec![0u32; b * t];
    for (i, s) in seqs.iter().enumerate() {
        ids[i * t..i * t + s.len()].copy_from_slice(s);
        mask[i * t..i * t + s.len()].fill(1);
    }
    Ok((
        Tensor::from_vec(ids, (b, t), device)?,
        Tensor::from_vec(mask, (b, t), device)?,
    ))
}

fn load_tokenizer(path: &Path, max_len: usize) -> Result<Tokenizer> {
    let tok = Tokenizer::from_file(path).map_err(|e| EncoderError::Tokenizer {
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    load_tokenizer_from(tok, path, max_len)
}

/// Truncation to `max_len` (as sentence-transformers asks the tokenizer for), no padding: the
/// file's own padding/truncation settings (often fixed-length 128) are replaced.
fn load_tokenizer_from(mut tok: Tokenizer, path: &Path, max_len: usize) -> Result<Tokenizer> {
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| EncoderError::Tokenizer {
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    tok.with_padding(None::<PaddingParams>);
    Ok(tok)
}
