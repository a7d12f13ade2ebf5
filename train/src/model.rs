//! The trainable encoder: `encoder::BertModel` over a `VarMap` whose names are the HF tensor names,
//! so parameters, gradients, optimizer moments and saved checkpoints all speak the same names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use encoder::{l2_normalize, BertConfig, BertModel, Compute, DropoutRng, OpsPath, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Ctx, Result, TrainError};

pub struct Trainable {
    pub model: BertModel,
    pub config: BertConfig,
    /// Parameters sorted by HF name (the order of gradients and optimizer moments).
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    /// Tensors of the source checkpoint the model does not use (BERT's pooler): written back
    /// unchanged so a saved folder holds everything the original did.
    pub extra: HashMap<String, Tensor>,
    /// The folder the model came from (tokenizer files, config.json), if any.
    pub source: Option<PathBuf>,
    /// Dropout rate used in training (the config's unless overridden); 0 = off.
    pub dropout: f64,
    device: Device,
}

fn build(
    config: &BertConfig,
    dropout: f64,
    device: &Device,
) -> Result<(BertModel, Vec<String>, Vec<Var>)> {
    let mut cfg = config.clone();
    cfg.hidden_dropout_prob = dropout;
    cfg.attention_probs_dropout_prob = dropout;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = BertModel::load(vb, &cfg).ctx("building the model")?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let (names, vars) = named.into_iter().unzip();
    Ok((model, names, vars))
}

impl Trainable {
    /// Loads a sentence-transformers or HF BERT folder (`config.json` + `model.safetensors`).
    /// `dropout: None` keeps the config's rates.
    pub fn from_pretrained(dir: &Path, dropout: Option<f64>, device: &Device) -> Result<Self> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let dropout = dropout.unwrap_or(config.hidden_dropout_prob);
        let (model, names, vars) = build(&config, dropout, device)?;
        let weights = dir.join("model.safetensors");
        let mut tensors = candle_core::safetensors::load(&weights, device)
            .ctx(&format!("reading {}", weights.display()))?;
        for (name, var) in names.iter().zip(&vars) {
            let t = tensors
                .remove(name)
                .or_else(|| tensors.remove(&format!("bert.{name}")))
                .ok_or_else(|| TrainError::invalid(&weights, format!("no tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(TrainError::invalid(
                    &weights,
                    format!(
                        "`{name}` has shape {:?}, config.json implies {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32).ctx(name)?).ctx(name)?;
        }
        Ok(Trainable {
            model,
            config,
            names,
            vars,
            extra: tensors,
            source: Some(dir.to_owned()),
            dropout,
            device: device.clone(),
        })
    }

    /// A new model with BERT's init (normal(0, initializer_range) weights, zero biases, unit
    /// LayerNorm, zero padding embedding), drawn from `seed` per tensor name: reproducible, and
    /// independent of candle's unseeded CPU generator.
    pub fn fresh(
        config: &BertConfig,
        seed: u64,
        dropout: Option<f64>,
        device: &Device,
    ) -> Result<Self> {
        let dropout = dropout.unwrap_or(config.hidden_dropout_prob);
        let (model, names, vars) = build(config, dropout, device)?;
        for (name, var) in names.iter().zip(&vars) {
            let n = var.elem_count();
            let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
                let std = config.initializer_range;
                let mut v: Vec<f32> = (0..n).map(|_| (normal(&mut rng) * std) as f32).collect();
                if name == "embeddings.word_embeddings.weight" {
                    let h = config.hidden_size;
                    let pad = config.pad_token_id;
                    v[pad * h..(pad + 1) * h].fill(0.0);
                }
                v
            };
            let t = Tensor::from_vec(values, var.dims(), device).ctx(name)?;
            var.set(&t).ctx(name)?;
        }
        Ok(Trainable {
            model,
            config: config.clone(),
            names,
            vars,
            extra: HashMap::new(),
            source: None,
            dropout,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Computes at `precision` on the model's device (refused where the device cannot run it:
    /// the CPU takes f32 only), on the device's ops path unless `ops` forces one. Parameters,
    /// gradients and AdamW moments stay f32 whatever the precision (bf16 casts happen inside
    /// the matrix products), so checkpoints do not depend on it either. Sets candle's
    /// process-wide TF32 switch.
    pub fn set_precision(&mut self, precision: Precision, ops: Option<OpsPath>) -> Result<()> {
        let mut compute =
            Compute::new(&self.device, precision).map_err(|e| TrainError::Config(e.to_string()))?;
        if let Some(ops) = ops {
            compute.ops = ops;
        }
        precision.apply();
        self.model.set_compute(compute);
        Ok(())
    }

    /// Sentence vectors `[B, H]`: BERT, mean pooling over the mask, L2 normalisation (the
    /// multi-qa-MiniLM recipe). `rng: None` is eval mode (no dropout).
    pub fn embed(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<Tensor> {
        let rng = if self.dropout > 0.0 { rng } else { None };
        l2_normalize(&self.model.forward_mean_pooled(ids, mask, rng)?)
    }

    /// Every parameter and the untouched extras, by HF name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = self.extra.clone();
        for (n, v) in self.names.iter().zip(&self.vars) {
            out.insert(n.clone(), v.as_tensor().clone());
        }
        out
    }

    pub fn param(&self, name: &str) -> Option<&Var> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.vars[i])
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Standard normal by Box–Muller (rand 0.9 keeps Normal in a separate crate).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
