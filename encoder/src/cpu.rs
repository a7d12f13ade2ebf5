//! The CPU inference path: the same BERT as [`crate::BertModel`], on packed token rows.
//!
//! Why a second path: candle's CPU forward pays for padding (every sequence padded to the longest
//! in its batch, attention over padded keys), runs one small gemm per sequence and head for
//! batched matmuls, copies for every transpose, allocates per op, and runs elementwise ops (GELU,
//! exp, LayerNorm's pieces) on one thread with scalar libm calls. Here all real tokens of a batch
//! are packed into one `[N, H]` matrix (no padding at all), each projection is one gemm over all
//! of them with the bias as the gemm's initial value, Q/K/V come from one fused projection,
//! attention runs per (sequence, head) on exactly its own tokens in parallel, and GELU, softmax
//! and residual+LayerNorm are fused loops over vectorisable exp/erf (AVX-512 or AVX2 chosen at
//! run time). The weights are the model's own, copied once at load.

use crate::linalg::{self, parallelism, MatRef, Parallelism};
use crate::lowp::{Format, PackedWeight};
use crate::precision::Precision;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::config::{HiddenAct, PoolingMode};
use crate::model::BertModel;

/// How a [`Dense`] stores its weight: f32 for the `gemm` crate, or packed bf16/int8.
enum Weight {
    F32(Vec<f32>),
    Packed(PackedWeight),
}

/// One row-major `[in, out]` weight with its bias.
struct Dense {
    w: Weight,
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    fn from_linears(parts: &[&crate::model::Linear], format: Option<Format>) -> Result<Self> {
        // candle keeps `[out, in]`; transpose once so every gemm reads `[in, out]`, and stack the
        // parts' columns (Q|K|V) side by side.
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        for l in parts {
            ws.push(l.weight.t()?.contiguous()?);
            bs.push(l.bias.clone());
        }
        let w = Tensor::cat(&ws, 1)?;
        let b = Tensor::cat(&bs, 0)?;
        let (inp, out) = w.dims2()?;
        let w: Vec<f32> = w
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        Ok(Dense {
            w: match format {
                None => Weight::F32(w),
                Some(f) => Weight::Packed(PackedWeight::pack(&w, inp, out, f)),
            },
            b: b.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            inp,
            out,
        })
    }

    /// `y[m, out] = x[m, in] · W + b`.
    fn forward(&self, x: &[f32], y: &mut [f32], m: usize, par: Parallelism) {
        let w = match &self.w {
            Weight::F32(w) => w,
            Weight::Packed(p) => {
                return p.forward(x, y, &self.b, m, !matches!(par, Parallelism::None))
            }
        };
        for row in y.chunks_exact_mut(self.out) {
            row.copy_from_slice(&self.b);
        }
        let (x, w) = (MatRef::rows(x, self.inp), MatRef::rows(w, self.out));
        linalg::gemm((m, self.out, self.inp), y, self.out, x, w, true, 1.0, par);
    }
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn from(ln: &crate::model::LayerNorm) -> Result<Self> {
        Ok(Norm {
            w: ln.weight.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            b: ln.bias.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            eps: ln.eps as f32,
        })
    }
}

struct CpuLayer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
}

/// Activation of the feed-forward block.
#[derive(Clone, Copy)]
enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

/// A CPU copy of a [`BertModel`]'s weights laid out for the packed forward.
pub struct CpuBert {
    hidden: usize,
    heads: usize,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    type0: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<CpuLayer>,
    act: Act,
}

impl CpuBert {
    pub fn from_model(model: &BertModel) -> Result<Self> {
        Self::from_model_at(model, Precision::F32)
    }

    /// As [`CpuBert::from_model`], with the Linear layers' weights in `precision`'s format,
    /// packed by [`crate::lowp`]: bf16 all of them; int8 Q|K|V, the attention output and the
    /// feed-forward input projection, with the feed-forward output projection at bf16 (see
    /// below). f32 and tf32 keep f32; bf16 runs as f32 products of bf16-rounded values where the
    /// CPU has no bf16 dot product ([`crate::lowp::has_bf16_dot`]). Embeddings, LayerNorm,
    /// softmax, GELU and pooling stay f32.
    pub fn from_model_at(model: &BertModel, precision: Precision) -> Result<Self> {
        let format = precision.cpu_format();
        let dense = |parts: &[&crate::model::Linear]| Dense::from_linears(parts, format);
        // The feed-forward output projection reads GELU's outputs, the widest and most
        // heavy-tailed activations: at int8 it alone brings the blank-ish texts ("No.", "yes.",
        // whose vectors are mostly [CLS]/[SEP]) to cosine 0.994 to f32 on the bench corpus; kept
        // at bf16 they stay ≥ 0.997, for a third of the products.
        let out_format = match format {
            Some(Format::Int8) => Some(Format::Bf16),
            other => other,
        };
        let cfg = model.config();
        let e = &model.embeddings;
        let f32v = |t: &Tensor| -> Result<Vec<f32>> {
            t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()
        };
        let act = match cfg.hidden_act {
            HiddenAct::Gelu => Act::GeluErf,
            HiddenAct::Relu => Act::Relu,
            HiddenAct::GeluNew | HiddenAct::GeluPytorchTanh => Act::GeluTanh,
        };
        let mut layers = Vec::with_capacity(model.layers().len());
        for l in model.layers() {
            let (att, attn_out) = (&l.attention.self_attention, &l.attention.output.0);
            let out = &l.output.0;
            layers.push(CpuLayer {
                qkv: dense(&[&att.query, &att.key, &att.value])?,
                attn_out: dense(&[&attn_out.dense])?,
                attn_norm: Norm::from(&attn_out.layer_norm)?,
                inter: dense(&[&l.intermediate.dense])?,
                out: Dense::from_linears(&[&out.dense], out_format)?,
                out_norm: Norm::from(&out.layer_norm)?,
            });
        }
        Ok(CpuBert {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            max_positions: cfg.max_position_embeddings,
            word: f32v(&e.word)?,
            position: f32v(&e.position)?,
            type0: f32v(&e.token_type.narrow(0, 0, 1)?)?,
            emb_norm: Norm::from(&e.layer_norm)?,
            layers,
            act,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Last hidden states of every token of every sequence, packed: row `offsets[i] + j` is token
    /// `j` of sequence `i`. Spreads each step over the current rayon pool.
    pub fn forward_packed(&self, seqs: &[&[u32]]) -> (Vec<f32>, Vec<usize>) {
        self.forward_packed_with(seqs, rayon::current_num_threads() > 1)
    }

    /// As [`CpuBert::forward_packed`]; `threaded: false` runs on the calling thread alone (for
    /// callers that run several batches side by side).
    pub fn forward_packed_with(&self, seqs: &[&[u32]], threaded: bool) -> (Vec<f32>, Vec<usize>) {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        let mut n = 0;
        for s in seqs {
            offsets.push(n);
            n += s.len();
        }
        offsets.push(n);
        let par = if threaded {
            parallelism()
        } else {
            Parallelism::None
        };

        // Embeddings: word + position + type 0, then LayerNorm.
        let mut x = vec![0f32; n * h];
        let vocab = self.word.len() / h;
        for (si, s) in seqs.iter().enumerate() {
            for (j, &id) in s.iter().enumerate() {
                let id = (id as usize).min(vocab - 1);
                let p = j.min(self.max_positions - 1);
                let row = &mut x[(offsets[si] + j) * h..(offsets[si] + j + 1) * h];
                let w = &self.word[id * h..(id + 1) * h];
                let pe = &self.position[p * h..(p + 1) * h];
                for k in 0..h {
                    row[k] = w[k] + pe[k] + self.type0[k];
                }
            }
        }
        add_layer_norm(&mut x, None, &self.emb_norm, h, threaded);

        let inter_dim = self.layers.first().map(|l| l.inter.out).unwrap_or(0);
        let mut qkv = vec![0f32; n * 3 * h];
        let mut ctx = vec![0f32; n * h];
        // Per-head attention outputs before they are interleaved into `ctx`: allocated once per
        // forward, every element overwritten by each layer.
        let mut heads = vec![0f32; n * h];
        let mut tmp = vec![0f32; n * h];
        let mut inter = vec![0f32; n * inter_dim];
        for layer in &self.layers {
            layer.qkv.forward(&x, &mut qkv, n, par);
            self.attention(&qkv, &mut ctx, &mut heads, &offsets, threaded);
            layer.attn_out.forward(&ctx, &mut tmp, n, par);
            add_layer_norm(&mut x, Some(&tmp), &layer.attn_norm, h, threaded);
            layer.inter.forward(&x, &mut inter, n, par);
            activate(&mut inter, self.act, threaded);
            layer.out.forward(&inter, &mut tmp, n, par);
            add_layer_norm(&mut x, Some(&tmp), &layer.out_norm, h, threaded);
        }
        (x, offsets)
    }

    /// Scaled dot-product attention of each sequence with itself, one task per (sequence, head).
    fn attention(
        &self,
        qkv: &[f32],
        ctx: &mut [f32],
        heads: &mut [f32],
        offsets: &[usize],
        threaded: bool,
    ) {
        let (h, nh) = (self.hidden, self.heads);
        let dh = h / nh;
        let scale = 1.0 / (dh as f32).sqrt();
        let ld = 3 * h;
        // Each task writes its own contiguous `len × dh` block (sequence-major, then head), so
        // tasks hold disjoint slices; one pass then interleaves the heads into `ctx`'s rows.
        let mut tasks = Vec::with_capacity((offsets.len() - 1) * nh);
        for (si, rows) in split_rows(heads, offsets, h).into_iter().enumerate() {
            let (start, len) = (offsets[si], offsets[si + 1] - offsets[si]);
            if len > 0 {
                tasks.extend(
                    rows.chunks_mut(len * dh)
                        .enumerate()
                        .map(|(hd, b)| (start, len, hd, b)),
                );
            }
        }
        let run = |scores: &mut Vec<f32>,
                   (start, len, head, block): (usize, usize, usize, &mut [f32])| {
            scores.clear();
            scores.resize(len * len, 0.0);
            let at = |col: usize| MatRef {
                data: &qkv[start * ld + col..],
                row_stride: ld,
                col_stride: 1,
            };
            let (q, v) = (at(head * dh), at(2 * h + head * dh));
            let k_t = MatRef {
                row_stride: 1,
                col_stride: ld,
                ..at(h + head * dh)
            };
            // scores = scale · Q Kᵀ, then ctx = softmax(scores) V
            linalg::gemm(
                (len, len, dh),
                scores,
                len,
                q,
                k_t,
                false,
                scale,
                Parallelism::None,
            );
            softmax_rows(scores, len);
            let p = MatRef::rows(scores, len);
            linalg::gemm(
                (len, dh, len),
                block,
                dh,
                p,
                v,
                false,
                1.0,
                Parallelism::None,
            );
        };
        if threaded {
            tasks.into_par_iter().for_each_init(Vec::new, run);
        } else {
            let mut scores = Vec::new();
            tasks.into_iter().for_each(|t| run(&mut scores, t));
        }
        let place = |(si, rows): (usize, &mut [f32])| {
            let (start, len) = (offsets[si], offsets[si + 1] - offsets[si]);
            let blocks = &heads[start * h..(start + len) * h];
            for (t, row) in rows.chunks_exact_mut(h).enumerate() {
                for (head, out) in row.chunks_exact_mut(dh).enumerate() {
                    out.copy_from_slice(&blocks[(head * len + t) * dh..][..dh]);
                }
            }
        };
        let seqs = split_rows(ctx, offsets, h);
        if threaded {
            seqs.into_par_iter().enumerate().for_each(place);
        } else {
            seqs.into_iter().enumerate().for_each(place);
        }
    }

    /// Pools packed hidden states into one vector per sequence (`normalize`: unit L2 norm).
    pub fn pool(
        &self,
        hidden: &[f32],
        offsets: &[usize],
        mode: PoolingMode,
        normalize: bool,
    ) -> Vec<Vec<f32>> {
        let h = self.hidden;
        (0..offsets.len() - 1)
            .map(|i| {
                let rows = &hidden[offsets[i] * h..offsets[i + 1] * h];
                let len = offsets[i + 1] - offsets[i];
                let mut v = vec![0f32; h];
                match mode {
                    PoolingMode::Mean => {
                        for row in rows.chunks_exact(h) {
                            for (a, b) in v.iter_mut().zip(row) {
                                *a += b;
                            }
                        }
                        let inv = 1.0 / (len as f32).max(1e-9);
                        v.iter_mut().for_each(|a| *a *= inv);
                    }
                    PoolingMode::Cls => {
                        if len > 0 {
                            v.copy_from_slice(&rows[..h]);
                        }
                    }
                    PoolingMode::Max => {
                        v.fill(f32::NEG_INFINITY);
                        for row in rows.chunks_exact(h) {
                            for (a, b) in v.iter_mut().zip(row) {
                                *a = a.max(*b);
                            }
                        }
                    }
                }
                if normalize {
                    normalize_in_place(&mut v);
                }
                v
            })
            .collect()
    }
}

pub(crate) fn normalize_in_place(v: &mut [f32]) {
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|a| *a /= norm);
}

/// `x = LayerNorm(x + add)` row by row (`add: None` normalises `x` alone), rows in parallel.
fn add_layer_norm(x: &mut [f32], add: Option<&[f32]>, norm: &Norm, h: usize, threaded: bool) {
    const ROWS: usize = 32;
    let work = |(ci, chunk): (usize, &mut [f32])| {
        for (ri, row) in chunk.chunks_exact_mut(h).enumerate() {
            let base = (ci * ROWS + ri) * h;
            let add = add.map(|a| &a[base..base + h]).unwrap_or(&[]);
            simd::add_norm(row, add, &norm.w, &norm.b, norm.eps);
        }
    };
    if threaded {
        x.par_chunks_mut(ROWS * h).enumerate().for_each(work);
    } else {
        x.chunks_mut(ROWS * h).enumerate().for_each(work);
    }
}

fn activate(x: &mut [f32], act: Act, threaded: bool) {
    const CHUNK: usize = 16 * 1024;
    let f = |c: &mut [f32]| match act {
        Act::GeluErf => simd::gelu_erf(c),
        Act::GeluTanh => c.iter_mut().for_each(|v| {
            let u = 0.797_884_6 * (*v + 0.044715 * *v * *v * *v);
            *v = 0.5 * *v * (1.0 + u.tanh());
        }),
        Act::Relu => c.iter_mut().for_each(|v| *v = v.max(0.0)),
    };
    if threaded {
        x.par_chunks_mut(CHUNK).for_each(f);
    } else {
        x.chunks_mut(CHUNK).for_each(f);
    }
}

/// `buf`'s rows (of `width` floats) split per sequence at `offsets`.
fn split_rows<'a>(mut buf: &'a mut [f32], offsets: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (seq, rest) = std::mem::take(&mut buf).split_at_mut((w[1] - w[0]) * width);
        out.push(seq);
        buf = rest;
    }
    out
}

fn softmax_rows(s: &mut [f32], len: usize) {
    for row in s.chunks_exact_mut(len) {
        simd::softmax(row);
    }
}

/// Branch-free exp/erf loops, compiled three times (AVX-512, AVX2+FMA, baseline) and picked at
/// run time, so LLVM vectorises them at the widest width the machine has.
pub(crate) mod simd {
    // The same branch-free exp and erf as the fused training ops, so both paths agree.
    use crate::ops::{erf, exp};

    /// GELU with erf, as PyTorch's vectorised CPU kernel computes it.
    #[inline(always)]
    fn gelu_one(x: f32) -> f32 {
        0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
    }

    #[inline(always)]
    fn gelu_impl(xs: &mut [f32]) {
        for v in xs.iter_mut() {
            *v = gelu_one(*v);
        }
    }

    /// Lanes of the independent accumulators below: float reductions do not vectorise on their
    /// own (LLVM may not reassociate), sixteen separate running values do.
    const LANES: usize = 16;

    #[inline(always)]
    fn max_of(row: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..LANES {
                acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for &v in acc.iter().chain(rest) {
            m = if v > m { v } else { m };
        }
        m
    }

    #[inline(always)]
    fn softmax_impl(row: &mut [f32]) {
        let max = max_of(row);
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                let e = exp(c[i] - max);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }

    /// `row = LayerNorm(row + add)` (two-pass mean/variance, like PyTorch).
    #[inline(always)]
    fn add_norm_impl(row: &mut [f32], add: &[f32], w: &[f32], b: &[f32], eps: f32) {
        if !add.is_empty() {
            for (a, x) in row.iter_mut().zip(add) {
                *a += x;
            }
        }
        crate::ops::normalize_in_place(row, w, b, eps);
    }

    /// Residual add + LayerNorm of one row, at the widest SIMD width available.
    pub fn add_norm(row: &mut [f32], add: &[f32], w: &[f32], b: &[f32], eps: f32) {
        crate::simd::dispatch(
            #[inline(always)]
            || add_norm_impl(row, add, w, b, eps),
        )
    }

    pub fn gelu_erf(xs: &mut [f32]) {
        crate::simd::dispatch(
            #[inline(always)]
            || gelu_impl(xs),
        )
    }

    pub fn softmax(xs: &mut [f32]) {
        crate::simd::dispatch(
            #[inline(always)]
            || softmax_impl(xs),
        )
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_and_gelu_match_libm() {
            for i in -2000..2000 {
                let x = i as f32 / 100.0;
                let e = super::exp(x);
                let want = (x as f64).exp();
                assert!(
                    ((e as f64 - want) / want).abs() < 3e-7,
                    "exp({x}) = {e}, want {want}"
                );
                let mut g = [x];
                super::gelu_erf(&mut g);
                let want = 0.5 * x as f64 * (1.0 + erf64(x as f64 / 2f64.sqrt()));
                assert!((g[0] as f64 - want).abs() < 2e-6, "gelu({x})");
            }
        }

        /// Reference erf (candle's double-precision implementation).
        fn erf64(x: f64) -> f64 {
            candle_core::cpu::erf::erf_f64(x)
        }
    }
}
