//! BERT in candle ops that all have a backward pass, so the trainer trains this same code.
//!
//! candle's fused `layer_norm`/`softmax_last_dim` have no backward (gradients silently stop), so
//! LayerNorm and softmax are composed from basic ops here ([`OpsPath::Composed`], what every
//! device runs); on the CPU the model uses `crate::ops`' fused kernels instead
//! ([`OpsPath::Fused`], which have their own backward). The path is chosen per model from its
//! device ([`Compute::for_device`]), and a test can force the composed path on the CPU to check
//! the graph a GPU trains. Matrix products may run in bf16 ([`Compute::matmul`]): their inputs
//! are cast down and their outputs back to f32, so weights, gradients, LayerNorm statistics,
//! softmax and pooling stay f32. Position ids come from the attention
//! mask (running count of real tokens), so padding may sit anywhere in a row and the real tokens
//! still see positions 0, 1, 2, ... exactly as when encoded alone.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{BertConfig, HiddenAct, PoolingMode};
use crate::error::EncoderError;
use crate::precision::Precision;

/// Which implementation of LayerNorm, the attention softmax and GELU a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsPath {
    /// `crate::ops`' fused CPU kernels (f32 tensors on the CPU; others fall back to composed).
    Fused,
    /// Composed candle ops, each with a backward: any device (the GPU's path).
    Composed,
}

/// How a model computes: the ops path and the dtype of its matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compute {
    pub ops: OpsPath,
    /// dtype the matrix products run in (inputs cast down, outputs back to f32): F32 or BF16.
    pub matmul: DType,
}

impl Compute {
    /// The device's path at f32: fused on the CPU (unless `PREP_FUSED_OPS=0`, kept for A/B
    /// timing), composed elsewhere.
    pub fn for_device(device: &Device) -> Self {
        static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let fused_allowed =
            *FUSED.get_or_init(|| std::env::var("PREP_FUSED_OPS").map_or(true, |v| v != "0"));
        Compute {
            ops: if device.is_cpu() && fused_allowed {
                OpsPath::Fused
            } else {
                OpsPath::Composed
            },
            matmul: DType::F32,
        }
    }

    /// The device's path at `precision`, refused where the device cannot run it
    /// ([`Precision::check`]). TF32 is candle's process-wide cuBLAS switch
    /// ([`Precision::apply`]), not a property of the graph: products stay f32 here.
    pub fn new(device: &Device, precision: Precision) -> std::result::Result<Self, EncoderError> {
        precision.check(device)?;
        Ok(Compute {
            matmul: precision.matmul_dtype(),
            ..Self::for_device(device)
        })
    }

    fn fused(self, x: &Tensor) -> bool {
        self.ops == OpsPath::Fused && crate::ops::fused_ok(x)
    }

    /// Whether the fused path runs the products too: f32 ones (the fused ops multiply in f32).
    fn fused_f32(self, x: &Tensor) -> bool {
        self.fused(x) && self.matmul == DType::F32
    }
}

/// `a · b` with both operands cast to `dtype` and the product cast back to `a`'s dtype (bf16
/// tensor-core products, f32 everywhere else; casts have a backward, so gradients stay f32).
fn matmul_in(a: &Tensor, b: &Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == a.dtype() {
        return a.matmul(b);
    }
    a.to_dtype(dtype)?
        .matmul(&b.to_dtype(dtype)?)?
        .to_dtype(a.dtype())
}

/// A seeded, replayable stream of dropout masks. Cloning it before a forward and passing the
/// clone to a later forward draws exactly the same masks (GradCache recomputes with it).
#[derive(Debug, Clone)]
pub struct DropoutRng {
    seed: u64,
    rng: ChaCha8Rng,
}

/// What a checkpoint stores to resume a [`DropoutRng`] mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropoutRngState {
    pub seed: u64,
    /// Position in the ChaCha8 stream, in 32-bit words.
    pub word_pos: u64,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        DropoutRng {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn state(&self) -> DropoutRngState {
        DropoutRngState {
            seed: self.seed,
            word_pos: self.rng.get_word_pos() as u64,
        }
    }

    pub fn from_state(state: DropoutRngState) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed);
        rng.set_word_pos(state.word_pos as u128);
        DropoutRng {
            seed: state.seed,
            rng,
        }
    }

    /// A keep-mask scaled by 1/(1-p) (inverted dropout), `dtype` on `device`.
    pub fn mask(
        &mut self,
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if !device.is_cpu() {
            return self.device_mask(shape, p, dtype, device);
        }
        let n: usize = shape.iter().product();
        let scale = (1.0 / (1.0 - p)) as f32;
        let values: Vec<f32> = self
            .keep(n, p)
            .into_iter()
            .map(|k| if k != 0 { scale } else { 0.0 })
            .collect();
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    /// `n` keep flags (1 keep, 0 drop) for dropout at rate `p`, the next `n` words of the
    /// stream: a value is kept when its 32-bit draw is at or above p·2³² (exact to 2⁻³²). Drawn in
    /// parallel blocks, each from its own copy of the stream moved to the block's first word, so
    /// the flags are the serial stream's whatever the thread count.
    pub fn keep(&mut self, n: usize, p: f64) -> Vec<u8> {
        const BLOCK: usize = 1 << 16;
        let threshold = (p * 4294967296.0).round().min(u32::MAX as f64) as u32;
        let start = self.rng.get_word_pos();
        let mut keep = vec![0u8; n];
        keep.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(i, block)| {
                let mut rng = self.rng.clone();
                rng.set_word_pos(start + (i * BLOCK) as u128);
                for k in block {
                    *k = (rng.next_u32() >= threshold) as u8;
                }
            });
        self.rng.set_word_pos(start + n as u128);
        keep
    }

    /// The mask drawn on a GPU by its own generator (cuRAND), seeded from this stream (one
    /// u64 per mask), so a clone or a restored state replays it exactly. Host draws would not
    /// do there: at the recipe's shape the attention-probability masks alone are B·heads·T²
    /// values per layer (~0.8 G at 1,024 × 12 × 250²), seconds of ChaCha and of uploading per
    /// step. The masks differ from the CPU's for the same seed (each device's are still
    /// reproducible).
    fn device_mask(
        &mut self,
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        device.set_seed(self.rng.next_u64())?;
        let keep = Tensor::rand(0f32, 1f32, shape, device)?.ge(p as f32)?;
        (keep.to_dtype(DType::F32)? * (1.0 / (1.0 - p)))?.to_dtype(dtype)
    }

    fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let mask = self.mask(x.dims(), p, x.dtype(), x.device())?;
        x.mul(&mask)
    }
}

fn dropout(x: Tensor, p: f64, rng: Option<&mut DropoutRng>) -> Result<Tensor> {
    match rng {
        Some(r) => r.apply(&x, p),
        None => Ok(x),
    }
}

/// The fused ops' dropout flags for `n` values at rate `p` (None: no dropout).
fn keep_mask(rng: Option<&mut DropoutRng>, n: usize, p: f64) -> Option<crate::ops::KeepMask> {
    let rng = rng.filter(|_| p > 0.0)?;
    Some(crate::ops::KeepMask {
        keep: Arc::new(rng.keep(n, p)),
        scale: (1.0 / (1.0 - p)) as f32,
    })
}

/// `y = x Wᵀ + b` over the last dimension, as one 2-D matmul (a batched matmul against a
/// broadcast weight would run one small gemm per sequence).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
    /// The product's dtype and whether it runs as the fused CPU op ([`crate::ops::linear`]).
    compute: Compute,
}

impl Linear {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        let compute = Compute {
            matmul: weight.dtype(),
            ..Compute::for_device(weight.device())
        };
        Ok(Linear {
            weight,
            bias,
            compute,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("non-scalar input");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x = x.reshape((rows, in_dim))?;
        let y = match self.compute.fused_f32(&x) {
            true => crate::ops::linear(&x, &self.weight, &self.bias)?,
            false => {
                matmul_in(&x, &self.weight.t()?, self.compute.matmul)?.broadcast_add(&self.bias)?
            }
        };
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.bias.dim(0)?;
        y.reshape(out_dims)
    }
}

/// LayerNorm from mean/variance/affine so it has a backward.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    compute: Compute,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        // Old TF-converted checkpoints name these gamma/beta.
        let (w, b) = if !vb.contains_tensor("weight") && vb.contains_tensor("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let weight = vb.get_with_hints(dim, w, Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, b, Init::Const(0.0))?;
        let compute = Compute::for_device(weight.device());
        Ok(LayerNorm {
            weight,
            bias,
            eps,
            compute,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.compute.fused(x) {
            return crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension, composed (max-subtracted for range, the max detached since
/// its gradient cancels).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn from_config(act: HiddenAct) -> Self {
        match act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluNew | HiddenAct::GeluPytorchTanh => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        }
    }

    fn apply(self, x: &Tensor, compute: Compute) -> Result<Tensor> {
        match self {
            // gelu_erf and gelu both have a backward in candle 0.11.
            Activation::GeluErf if compute.fused(x) => crate::ops::gelu_erf(x),
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// Word + position + token-type-0 embeddings, LayerNorm, dropout (HF's `BertEmbeddings`).
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    /// `vb` at `embeddings`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: cfg.initializer_range,
        };
        Ok(BertEmbeddings {
            word: vb.get_with_hints((cfg.vocab_size, h), "word_embeddings.weight", randn)?,
            position: vb.get_with_hints(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
                randn,
            )?,
            token_type: vb.get_with_hints(
                (cfg.type_vocab_size, h),
                "token_type_embeddings.weight",
                randn,
            )?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// `[N, H]` for the tokens `ids` `[N]` (u32) at `positions` `[N]` (u32); every token has
    /// token type 0.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let word = self.word.index_select(ids, 0)?;
        let pos = self.position.index_select(positions, 0)?;
        let token_type = self.token_type.narrow(0, 0, 1)?;
        let ln = &self.layer_norm;
        if ln.compute.fused(&word) {
            // LayerNorm(word + (position + type)) as one node, then dropout as another.
            let wb = Tensor::cat(&[&ln.weight, &ln.bias], 0)?;
            let rest = pos.broadcast_add(&token_type)?;
            let x = crate::ops::residual_norm(&word, &rest, &wb, ln.eps, None)?;
            return match keep_mask(rng, x.elem_count(), self.dropout) {
                Some(mask) => crate::ops::dropout(&x, mask),
                None => Ok(x),
            };
        }
        let x = (word + pos)?.broadcast_add(&token_type)?;
        dropout(ln.forward(&x)?, self.dropout, rng)
    }
}

/// Where a padded batch's real tokens are: every position-wise step of a layer (each Linear,
/// GELU, LayerNorm, dropout, residual) runs on the real tokens alone, `[N, H]`, and attention
/// runs per [`AttentionGroup`]: sequences of similar lengths, padded only to the group's longest
/// (its softmax masks the padded keys). Batches of texts of mixed lengths are mostly padding
/// (32 bench-corpus pairs at length 128: 1,893 real tokens in 8,192 slots), a padded slot's
/// output was never read, and attention's cost grows with the square of the padded length.
/// The CPU's fused attention ([`crate::ops::attention`]) needs no groups: it runs over each
/// sequence's own rows.
#[derive(Debug, Clone)]
pub struct BatchLayout {
    b: usize,
    t: usize,
    /// The real slots of the flattened `[B·T]` batch (u32), in order; None: no padding.
    real: Option<Tensor>,
    groups: Vec<AttentionGroup>,
    /// Row of each real token in the groups' outputs concatenated (u32); None: the same order.
    order: Option<Tensor>,
    /// (first row, length) of each sequence among the real tokens: the fused attention's and
    /// pooling's view of the batch, which need no groups.
    seqs: Arc<Vec<(usize, usize)>>,
}

/// Sequences attended together: `b` of them, each padded to `t` slots.
#[derive(Debug, Clone)]
struct AttentionGroup {
    b: usize,
    t: usize,
    /// For each of the `b·t` slots, the real-token row it reads (u32). A padded slot reads its
    /// sequence's first token: as a key its probability is exactly 0 and as a query its output is
    /// not kept, so it changes no output and receives a zero gradient.
    gather: Tensor,
    /// The slots holding real tokens, in the order of their rows (u32).
    real: Tensor,
    mask: AttentionMask,
    /// The batch rows attended, in the group's order.
    members: Vec<usize>,
}

/// Per-group cost of the composed attention besides its products, in units of one
/// sequence-slot² (about 0.2 ms of ~10 small ops per layer against ~30 ns per unit, measured on
/// a CPU core; not yet tuned on a GPU): a group is worth splitting when that saves more padding.
const GROUP_COST: usize = 6_000;

impl BatchLayout {
    /// The layout of a batch whose rows have `lengths` real tokens (`tokens`), for scores of
    /// `like`'s device and dtype in the form `compute`'s softmax takes.
    fn new(
        tokens: &RealTokens,
        b: usize,
        t: usize,
        like: &Tensor,
        compute: Compute,
    ) -> Result<Self> {
        let device = like.device();
        let real = match tokens.slots.len() < b * t {
            true => Some(Tensor::new(tokens.slots.as_slice(), device)?),
            false => None,
        };
        let mut starts = Vec::with_capacity(b);
        let mut at = 0u32;
        for &len in &tokens.lengths {
            starts.push(at);
            at += len as u32;
        }
        let seqs: Vec<(usize, usize)> = (starts.iter().zip(&tokens.lengths))
            .map(|(&s, &l)| (s as usize, l))
            .collect();
        if compute.fused_f32(like) {
            return Ok(BatchLayout {
                b,
                t,
                real,
                groups: Vec::new(),
                order: None,
                seqs: Arc::new(seqs),
            });
        }
        let mut order = vec![0u32; tokens.slots.len()];
        let mut row = 0u32;
        let mut groups = Vec::new();
        for members in group_by_length(&tokens.lengths) {
            let gt = members
                .iter()
                .map(|&s| tokens.lengths[s])
                .max()
                .unwrap_or(0);
            let (mut gather, mut real, mut keep) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &s) in members.iter().enumerate() {
                let len = tokens.lengths[s];
                for j in 0..gt {
                    gather.push(starts[s] + j.min(len - 1) as u32);
                    keep.push(j < len);
                    if j < len {
                        real.push((i * gt + j) as u32);
                        order[starts[s] as usize + j] = row;
                        row += 1;
                    }
                }
            }
            groups.push(AttentionGroup {
                b: members.len(),
                t: gt,
                gather: Tensor::new(gather.as_slice(), device)?,
                real: Tensor::new(real.as_slice(), device)?,
                mask: AttentionMask::new(members.len(), gt, keep, like, compute)?,
                members,
            });
        }
        let in_order = order.iter().enumerate().all(|(i, &r)| i as u32 == r);
        let order = match in_order {
            true => None,
            false => Some(Tensor::new(order.as_slice(), device)?),
        };
        Ok(BatchLayout {
            b,
            t,
            real,
            groups,
            order,
            seqs: Arc::new(seqs),
        })
    }

    /// `[B, T, H]` with the rows `y` `[N, H]` at their slots and zeros at the padding.
    fn unpack(&self, y: &Tensor) -> Result<Tensor> {
        let h = y.dim(D::Minus1)?;
        let flat = match &self.real {
            Some(real) => {
                Tensor::zeros((self.b * self.t, h), y.dtype(), y.device())?.index_add(real, y, 0)?
            }
            None => y.clone(),
        };
        flat.reshape((self.b, self.t, h))
    }
}

/// The batch's rows grouped for attention: by length (stable), split where the padding saved
/// outweighs a group's fixed cost ([`GROUP_COST`]), found by dynamic programming over the sorted
/// lengths. Rows without tokens are in no group: they have no output, and a query whose keys are
/// all masked has no softmax (its NaN gradient would reach the rows its slots read). Depends on
/// the lengths alone, so a replayed batch groups the same way.
fn group_by_length(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut rows: Vec<usize> = (0..lengths.len()).filter(|&r| lengths[r] > 0).collect();
    rows.sort_by_key(|&r| lengths[r]);
    let n = rows.len();
    // best[i]: the cheapest cost of the first i sorted rows; cut[i]: where its last group starts.
    let (mut best, mut cut) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        let t = lengths[rows[i - 1]];
        (best[i], cut[i]) = (0..i)
            .map(|j| (best[j] + (i - j) * t * t + GROUP_COST, j))
            .min()
            .expect("i >= 1");
    }
    let mut groups = Vec::new();
    let mut i = n;
    while i > 0 {
        groups.push(rows[cut[i]..i].to_vec());
        i = cut[i];
    }
    groups.reverse();
    groups
}

/// Which keys of a padded batch are real, in the form the attention softmax takes: computed once
/// per forward and shared by every layer.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// For the fused CPU softmax ([`crate::ops::masked_softmax`]): one flag per `[B, T]` key.
    Keep(Arc<Vec<bool>>),
    /// Added to the scores `[B, 1, 1, T]`: 0 for real keys, the most negative f32 for padding
    /// (as HF does).
    Additive(Tensor),
}

impl AttentionMask {
    /// From `keep` (one flag per `[b, t]` key: real or padding), for scores of `like`'s device
    /// and dtype, in the form `compute`'s softmax takes.
    fn new(b: usize, t: usize, keep: Vec<bool>, like: &Tensor, compute: Compute) -> Result<Self> {
        if compute.fused(like) {
            return Ok(AttentionMask::Keep(Arc::new(keep)));
        }
        let additive: Vec<f32> = keep
            .iter()
            .map(|&k| if k { 0.0 } else { f32::MIN })
            .collect();
        let additive = Tensor::from_vec(additive, (b, 1, 1, t), like.device())?;
        Ok(AttentionMask::Additive(additive.to_dtype(like.dtype())?))
    }

    /// softmax(scale · scores + mask) over the keys of `scores` `[B, heads, T, T]`.
    fn softmax(&self, scores: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            AttentionMask::Keep(keep) => crate::ops::masked_softmax(scores, scale, keep.clone()),
            AttentionMask::Additive(add) => {
                softmax_last_dim(&(scores * scale)?.broadcast_add(add)?)
            }
        }
    }
}

/// Multi-head scaled dot-product self-attention: the per-head context `[N, H]` of the real
/// tokens `[N, H]` (attended over each sequence's padded rows, [`BatchLayout`]).
#[derive(Debug, Clone)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    heads: usize,
    head_dim: usize,
    dropout: f64,
    /// dtype of the two attention products (see [`Compute::matmul`]), and whether attention
    /// runs as the fused CPU op ([`crate::ops::attention`]).
    compute: Compute,
}

impl BertSelfAttention {
    /// `vb` at `attention.self`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        Ok(BertSelfAttention {
            query: Linear::load(vb.pp("query"), h, h, std)?,
            key: Linear::load(vb.pp("key"), h, h, std)?,
            value: Linear::load(vb.pp("value"), h, h, std)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            dropout: cfg.attention_probs_dropout_prob,
            compute: Compute {
                matmul: vb.dtype(),
                ..Compute::for_device(vb.device())
            },
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        if self.compute.fused_f32(x) {
            return self.forward_fused(x, layout, rng);
        }
        let h = x.dim(D::Minus1)?;
        let (q, k, v) = (
            self.query.forward(x)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut rng = rng;
        let flags = self.host_probs_flags(x, layout, rng.as_deref_mut());
        let mut outs = Vec::with_capacity(layout.groups.len());
        for g in &layout.groups {
            let split = |y: &Tensor| -> Result<Tensor> {
                y.index_select(&g.gather, 0)?
                    .reshape((g.b, g.t, self.heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (qg, kg, vg) = (split(&q)?, split(&k)?, split(&v)?);
            let scores = matmul_in(&qg, &kg.t()?, self.compute.matmul)?;
            let probs = g.mask.softmax(&scores, scale)?;
            let probs = match &flags {
                Some(flags) => probs.mul(&flags.group_mask(g, layout, &probs)?)?,
                None => dropout(probs, self.dropout, rng.as_deref_mut())?,
            };
            let ctx = matmul_in(&probs, &vg, self.compute.matmul)?
                .transpose(1, 2)?
                .reshape((g.b * g.t, h))?;
            outs.push(ctx.index_select(&g.real, 0)?);
        }
        let ctx = match outs.len() {
            // No sequence has a token: no rows.
            0 => Tensor::zeros((0, h), x.dtype(), x.device())?,
            1 => outs.pop().expect("one"),
            _ => Tensor::cat(&outs, 0)?,
        };
        match &layout.order {
            Some(order) => ctx.index_select(order, 0),
            None => Ok(ctx),
        }
    }

    /// On the CPU, the probabilities' dropout flags drawn as the fused path draws them (per
    /// sequence, head, query and key), so both paths train with the same masks; None elsewhere
    /// (a GPU draws its own) or without dropout.
    fn host_probs_flags(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        rng: Option<&mut DropoutRng>,
    ) -> Option<ProbsFlags> {
        if !x.device().is_cpu() {
            return None;
        }
        let count = crate::ops::probs_count(&layout.seqs, self.heads);
        let mask = keep_mask(rng, count, self.dropout)?;
        let first = crate::ops::probs_first(&layout.seqs, self.heads);
        Some(ProbsFlags {
            mask,
            heads: self.heads,
            first,
        })
    }

    /// The CPU's path: Q|K|V as one product, then attention over each sequence's own tokens.
    fn forward_fused(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let (q, k, v) = (&self.query, &self.key, &self.value);
        let w = Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?;
        let b = Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?;
        let qkv = crate::ops::linear(x, &w, &b)?;
        let probs = crate::ops::probs_count(&layout.seqs, self.heads);
        let dropout = keep_mask(rng, probs, self.dropout).map(|m| crate::ops::ProbsDropout {
            keep: m.keep,
            scale: m.scale,
        });
        crate::ops::attention(
            &qkv,
            layout.seqs.clone(),
            self.heads,
            self.head_dim,
            dropout,
        )
    }
}

/// The attention-probability dropout flags of a whole batch in the fused op's order
/// ([`crate::ops::attention`]).
struct ProbsFlags {
    mask: crate::ops::KeepMask,
    heads: usize,
    /// Where each batch row's flags start.
    first: Vec<usize>,
}

impl ProbsFlags {
    /// The multiplier `[b, heads, t, t]` of group `g`'s padded probabilities: each member's
    /// flags at its real queries and keys, zero at the padding.
    fn group_mask(
        &self,
        g: &AttentionGroup,
        layout: &BatchLayout,
        like: &Tensor,
    ) -> Result<Tensor> {
        let (t, heads, first) = (g.t, self.heads, &self.first);
        let mut m = vec![0f32; g.b * heads * t * t];
        for (i, &row) in g.members.iter().enumerate() {
            let len = layout.seqs[row].1;
            for h in 0..heads {
                for q in 0..len {
                    let from = first[row] + (h * len + q) * len;
                    let to = ((i * heads + h) * t + q) * t;
                    for k in 0..len {
                        if self.mask.keep[from + k] != 0 {
                            m[to + k] = self.mask.scale;
                        }
                    }
                }
            }
        }
        Tensor::from_vec(m, (g.b, heads, t, t), like.device())?.to_dtype(like.dtype())
    }
}

/// Dense, dropout, then LayerNorm of the residual sum: after attention (`BertSelfOutput`) and
/// after the feed-forward block (`BertOutput`) alike.
#[derive(Debug, Clone)]
pub struct ResidualNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    dropout: f64,
}

impl ResidualNorm {
    /// `vb` at `attention.output` or `output`; `dense` maps `in_dim` to the hidden size.
    fn load(vb: VarBuilder, in_dim: usize, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(ResidualNorm {
            dense: Linear::load(vb.pp("dense"), in_dim, h, cfg.initializer_range)?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// LayerNorm(dropout(dense(`x`)) + `residual`).
    pub fn forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let y = self.dense.forward(x)?;
        let ln = &self.layer_norm;
        if ln.compute.fused(&y) {
            let wb = Tensor::cat(&[&ln.weight, &ln.bias], 0)?;
            let mask = keep_mask(rng, y.elem_count(), self.dropout);
            return crate::ops::residual_norm(&y, residual, &wb, ln.eps, mask);
        }
        let y = dropout(y, self.dropout, rng)?;
        ln.forward(&(y + residual)?)
    }
}

/// The projection after attention, added to the layer's input (HF's `BertSelfOutput`).
#[derive(Debug, Clone)]
pub struct BertSelfOutput(pub ResidualNorm);

impl BertSelfOutput {
    /// `vb` at `attention.output`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        ResidualNorm::load(vb, cfg.hidden_size, cfg).map(BertSelfOutput)
    }

    pub fn forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        self.0.forward(x, residual, rng)
    }
}

/// Self-attention and its output block.
#[derive(Debug, Clone)]
pub struct BertAttention {
    pub self_attention: BertSelfAttention,
    pub output: BertSelfOutput,
}

impl BertAttention {
    /// `vb` at `attention`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(BertAttention {
            self_attention: BertSelfAttention::load(vb.pp("self"), cfg)?,
            output: BertSelfOutput::load(vb.pp("output"), cfg)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        mut rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let ctx = self.self_attention.forward(x, layout, rng.as_deref_mut())?;
        self.output.forward(&ctx, x, rng)
    }
}

/// The feed-forward block's widening projection and activation.
#[derive(Debug, Clone)]
pub struct BertIntermediate {
    pub dense: Linear,
    act: Activation,
    compute: Compute,
}

impl BertIntermediate {
    /// `vb` at `intermediate`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(BertIntermediate {
            dense: Linear::load(vb.pp("dense"), h, i, cfg.initializer_range)?,
            act: Activation::from_config(cfg.hidden_act),
            compute: Compute::for_device(vb.device()),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.act.apply(&self.dense.forward(x)?, self.compute)
    }
}

/// The feed-forward block's narrowing projection, added to its input (HF's `BertOutput`).
#[derive(Debug, Clone)]
pub struct BertOutput(pub ResidualNorm);

impl BertOutput {
    /// `vb` at `output`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        ResidualNorm::load(vb, cfg.intermediate_size, cfg).map(BertOutput)
    }

    pub fn forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        self.0.forward(x, residual, rng)
    }
}

/// One transformer layer: attention, then the feed-forward block.
#[derive(Debug, Clone)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

impl BertLayer {
    /// `vb` at `encoder.layer.N`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(BertLayer {
            attention: BertAttention::load(vb.pp("attention"), cfg)?,
            intermediate: BertIntermediate::load(vb.pp("intermediate"), cfg)?,
            output: BertOutput::load(vb.pp("output"), cfg)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        mut rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let attended = self.attention.forward(x, layout, rng.as_deref_mut())?;
        let inter = self.intermediate.forward(&attended)?;
        self.output.forward(&inter, &attended, rng)
    }
}

/// The stack of layers.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    pub layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// `vb` at `encoder`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("layer.{i}")), cfg))
            .collect::<Result<_>>()?;
        Ok(BertEncoder { layers })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        layout: &BatchLayout,
        mut rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, layout, rng.as_deref_mut())?;
        }
        Ok(x)
    }
}

/// A BERT encoder (no pooler), named as in HF checkpoints.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    config: BertConfig,
    device: Device,
    compute: Compute,
}

impl BertModel {
    /// Loads (or, over an empty `VarMap`, creates with BERT's init) every tensor under its HF name:
    /// `embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...
    /// A `bert.` prefix (checkpoints of BertFor* heads) is accepted.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<BertModel> {
        let vb = if !vb.contains_tensor("embeddings.word_embeddings.weight")
            && vb.contains_tensor("bert.embeddings.word_embeddings.weight")
        {
            vb.pp("bert")
        } else {
            vb
        };
        Ok(BertModel {
            embeddings: BertEmbeddings::load(vb.pp("embeddings"), cfg)?,
            encoder: BertEncoder::load(vb.pp("encoder"), cfg)?,
            config: cfg.clone(),
            device: vb.device().clone(),
            compute: Compute {
                matmul: vb.dtype(),
                ..Compute::for_device(vb.device())
            },
        })
    }

    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// Switches every layer to `compute` (the weights are untouched: they stay f32).
    pub fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
        self.embeddings.layer_norm.compute = compute;
        for layer in &mut self.encoder.layers {
            let att = &mut layer.attention;
            let sa = &mut att.self_attention;
            sa.compute = compute;
            for lin in [&mut sa.query, &mut sa.key, &mut sa.value] {
                lin.compute = compute;
            }
            layer.intermediate.compute = compute;
            layer.intermediate.dense.compute = compute;
            for rn in [&mut att.output.0, &mut layer.output.0] {
                rn.dense.compute = compute;
                rn.layer_norm.compute = compute;
            }
        }
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[BertLayer] {
        &self.encoder.layers
    }

    /// Last hidden states `[B, T, H]` for `input_ids` `[B, T]` (u32/i64) and `attention_mask`
    /// `[B, T]` (1 real, 0 padding; any dtype). `dropout: None` is eval mode; `Some(rng)` applies
    /// hidden and attention-probability dropout with the config's rates, masks drawn from `rng`.
    /// Padded slots hold zeros: only the real tokens are computed ([`BatchLayout`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        dropout_rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let (x, layout) = self.forward_rows(input_ids, attention_mask, dropout_rng)?;
        layout.unpack(&x)
    }

    /// The mean of each row's real tokens' last hidden states, `[B, H]` ([`mean_pool`] of
    /// [`Self::forward`]), pooled straight from the real tokens where the fused ops run.
    pub fn forward_mean_pooled(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        dropout_rng: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let (x, layout) = self.forward_rows(input_ids, attention_mask, dropout_rng)?;
        if self.compute.fused(&x) {
            return crate::ops::segment_mean(&x, layout.seqs.clone());
        }
        mean_pool(&layout.unpack(&x)?, attention_mask)
    }

    /// The real tokens' last hidden states `[N, H]` and where they sit in the batch.
    fn forward_rows(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mut dropout_rng: Option<&mut DropoutRng>,
    ) -> Result<(Tensor, BatchLayout)> {
        let (_, t) = input_ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence length {t} exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            );
        }
        let mask = attention_mask.to_dtype(DType::F32)?;
        let (b, t) = mask.dims2()?;
        let tokens = RealTokens::of(&mask)?;
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let ids = match tokens.slots.len() < b * t {
            true => ids.index_select(&Tensor::new(tokens.slots.as_slice(), ids.device())?, 0)?,
            false => ids,
        };
        let positions = Tensor::new(tokens.positions.as_slice(), ids.device())?;
        let x = self
            .embeddings
            .forward(&ids, &positions, dropout_rng.as_deref_mut())?;
        let layout = BatchLayout::new(&tokens, b, t, &x, self.compute)?;
        let x = self.encoder.forward(&x, &layout, dropout_rng)?;
        Ok((x, layout))
    }
}

/// A padded batch's real tokens: their slots in the flattened `[B·T]` batch, each one's
/// position among its row's real tokens (0-based), and each row's count, read from the mask.
struct RealTokens {
    slots: Vec<u32>,
    positions: Vec<u32>,
    lengths: Vec<usize>,
}

impl RealTokens {
    fn of(mask: &Tensor) -> Result<Self> {
        let rows = mask.to_vec2::<f32>()?;
        let (mut slots, mut positions) = (Vec::new(), Vec::new());
        let mut lengths = Vec::with_capacity(rows.len());
        let mut slot = 0u32;
        for row in rows {
            let mut seen = 0u32;
            for m in row {
                if m > 0.0 {
                    slots.push(slot);
                    positions.push(seen);
                    seen += 1;
                }
                slot += 1;
            }
            lengths.push(seen as usize);
        }
        Ok(RealTokens {
            slots,
            positions,
            lengths,
        })
    }
}

/// Mean of the real tokens' vectors: `[B, T, H]`, `[B, T]` → `[B, H]` (sentence-transformers'
/// formula, with the count clamped at 1e-9).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    sum.broadcast_div(&count)
}

/// The first real token's vector ([CLS] under right padding; still [CLS] under left padding).
pub fn cls_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut onehot = vec![0f32; b * t];
    for (i, row) in rows.iter().enumerate() {
        let first = row.iter().position(|&m| m > 0.0).unwrap_or(0);
        onehot[i * t + first] = 1.0;
    }
    let sel = Tensor::from_vec(onehot, (b, t, 1), hidden.device())?.to_dtype(hidden.dtype())?;
    hidden.broadcast_mul(&sel)?.sum(1)
}

/// Elementwise max over the real tokens (padding set to -1e9 first, as sentence-transformers).
pub fn max_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let neg = ((1.0 - &m)? * -1e9)?;
    hidden.broadcast_mul(&m)?.broadcast_add(&neg)?.max(1)
}

/// Pools with `mode`.
pub fn pool(hidden: &Tensor, mask: &Tensor, mode: PoolingMode) -> Result<Tensor> {
    match mode {
        PoolingMode::Mean => mean_pool(hidden, mask),
        PoolingMode::Cls => cls_pool(hidden, mask),
        PoolingMode::Max => max_pool(hidden, mask),
    }
}

/// Rows scaled to unit L2 norm (norm floored at 1e-12, as `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm.clamp(1e-12, f64::INFINITY)?)
}

#[cfg(test)]
mod tests {
    use super::{group_by_length, GROUP_COST};

    #[test]
    fn rows_are_grouped_by_length_where_splitting_saves_more_than_a_group_costs() {
        // Short rows beside long ones: two groups, each row with tokens once, shortest first.
        let lengths = [200, 4, 0, 3, 210, 5];
        assert_eq!(group_by_length(&lengths), vec![vec![3, 1, 5], vec![0, 4]]);
        // Similar lengths: padding them together costs less than a second group.
        assert_eq!(group_by_length(&[30, 28, 31, 29]), vec![vec![1, 3, 0, 2]]);
        // The same lengths always group the same way; none is empty; the total beats one group.
        let lengths: Vec<usize> = (0..64).map(|i| (i * 37) % 128 + 1).collect();
        let groups = group_by_length(&lengths);
        assert_eq!(groups, group_by_length(&lengths));
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        let cost = |g: &Vec<usize>| {
            let t = g.iter().map(|&r| lengths[r]).max().unwrap();
            g.len() * t * t + GROUP_COST
        };
        let one = cost(&(0..64).collect());
        assert!(
            groups.iter().map(cost).sum::<usize>() < one / 2,
            "{groups:?}"
        );
        assert!(group_by_length(&[]).is_empty());
        assert!(group_by_length(&[0, 0]).is_empty());
    }
}
