//! Multi-head self-attention over unpadded sequences, with its backward.
//!
//! The composed attention pads each group of sequences to its longest, copies Q, K and V into
//! `[B, heads, T, d]`, and is a dozen graph nodes per layer, each with a zeroed gradient to add
//! into. Here each (sequence, head) is two small products over exactly its own tokens, read in
//! place from the packed `[N, 3H]` projections, and the whole layer's attention is one node.
//! The backward recomputes the probabilities (two products per head, cheaper than keeping
//! `heads · L²` floats per sequence alive until the backward pass).

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, dot, exp, sum_of, with_data};
use crate::linalg::{gemm, MatRef, Parallelism};

/// Dropout of the attention probabilities: one keep flag per (sequence, head, query, key), in
/// that order, and the scale of a kept value (1/(1-p)).
#[derive(Debug, Clone)]
pub struct ProbsDropout {
    pub keep: Arc<Vec<u8>>,
    pub scale: f32,
}

/// The geometry of one attention call.
#[derive(Debug, Clone)]
struct AttentionOp {
    /// (first row, length) of each sequence; the rows of `qkv` are the sequences' tokens in order.
    seqs: Arc<Vec<(usize, usize)>>,
    heads: usize,
    head_dim: usize,
    dropout: Option<ProbsDropout>,
}

/// Flags one attention call's probability dropout takes for `seqs` (first row, length).
pub fn probs_count(seqs: &[(usize, usize)], heads: usize) -> usize {
    seqs.iter().map(|&(_, l)| heads * l * l).sum()
}

/// Where each sequence's flags start among those [`probs_count`] counts (they run per sequence,
/// head, query and key).
pub fn probs_first(seqs: &[(usize, usize)], heads: usize) -> Vec<usize> {
    let mut at = 0;
    seqs.iter()
        .map(|&(_, l)| {
            let first = at;
            at += heads * l * l;
            first
        })
        .collect()
}

/// Per-head `softmax(q kᵀ/√d) v` for every sequence, from `qkv` `[N, 3H]` (query | key | value
/// columns, each `heads × head_dim`) to the context `[N, H]`. `seqs` lists each sequence's
/// (first row, length); together they cover the rows in order. CPU, f32.
pub fn attention(
    qkv: &Tensor,
    seqs: Arc<Vec<(usize, usize)>>,
    heads: usize,
    head_dim: usize,
    dropout: Option<ProbsDropout>,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(AttentionOp {
        seqs,
        heads,
        head_dim,
        dropout,
    })
}

impl AttentionOp {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    fn check(&self, l: &Layout) -> Result<usize> {
        let (n, w) = l.shape().dims2()?;
        let mut at = 0;
        for &(start, len) in self.seqs.iter() {
            if start != at {
                bail!("attention: sequences must cover the rows in order");
            }
            at += len;
        }
        if w != 3 * self.hidden() || at != n {
            bail!(
                "attention: qkv {:?} does not hold the sequences' rows × 3·hidden",
                l.dims()
            );
        }
        let flags = probs_count(&self.seqs, self.heads);
        if let Some(d) = &self.dropout {
            if d.keep.len() != flags {
                bail!(
                    "attention: {} dropout flags for {flags} probabilities",
                    d.keep.len()
                );
            }
        }
        Ok(n)
    }

    /// Each sequence's rows of `out` (`width` floats per row) with its first dropout flag.
    fn split<'a>(
        &self,
        out: &'a mut [f32],
        width: usize,
    ) -> Vec<(usize, usize, usize, &'a mut [f32])> {
        let mut parts = Vec::with_capacity(self.seqs.len());
        let mut rest = out;
        let first = probs_first(&self.seqs, self.heads);
        for (&(start, len), flag) in self.seqs.iter().zip(first) {
            let (mine, tail) = rest.split_at_mut(len * width);
            parts.push((start, len, flag, mine));
            rest = tail;
        }
        parts
    }

    /// Columns `at..` of rows `stride` apart, as a matrix (`transposed`: read as its transpose).
    #[inline(always)]
    fn view(data: &[f32], at: usize, stride: usize, transposed: bool) -> MatRef<'_> {
        let (row_stride, col_stride) = if transposed { (1, stride) } else { (stride, 1) };
        MatRef {
            data: &data[at..],
            row_stride,
            col_stride,
        }
    }

    /// The probabilities of head `h` of the sequence whose `qkv` rows start at `q`, `len` long,
    /// into `p` (`len × len`). Inlined into the callers' `simd::dispatch` frames, so `exp`
    /// vectorises there.
    #[inline(always)]
    fn probs(&self, q: &[f32], len: usize, h: usize, p: &mut [f32]) {
        let (hw, d) = (self.hidden(), self.head_dim);
        let query = Self::view(q, h * d, 3 * hw, false);
        let key_t = Self::view(q, hw + h * d, 3 * hw, true);
        let scale = 1.0 / (d as f32).sqrt();
        gemm((len, len, d), p, len, query, key_t, false, scale, SERIAL);
        for row in p.chunks_exact_mut(len) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let inv = 1.0 / sum_of(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }

    /// `p` as dropout leaves it, in `pd` (or `p` itself without dropout).
    #[inline(always)]
    fn dropped<'a>(&self, p: &'a [f32], flag: usize, pd: &'a mut [f32]) -> &'a [f32] {
        match &self.dropout {
            Some(drop) => {
                let keep = &drop.keep[flag..flag + p.len()];
                for ((o, &v), &k) in pd.iter_mut().zip(p).zip(keep) {
                    *o = if k != 0 { v * drop.scale } else { 0.0 };
                }
                pd
            }
            None => p,
        }
    }

    /// Head `h` of one sequence, backward: from its `qkv` rows `q` and context gradient rows
    /// `dc`, writes the head's dQ, dK and dV into its rows `dq` of the `[N, 3H]` gradient.
    #[inline(always)]
    fn backward_head(
        &self,
        (q, dc, dq): (&[f32], &[f32], &mut [f32]),
        len: usize,
        h: usize,
        flag: usize,
        buf: &mut [Vec<f32>; 3],
    ) {
        let (hw, d) = (self.hidden(), self.head_dim);
        let [p, pd, g] = buf;
        self.probs(q, len, h, p);
        let probs = self.dropped(p, flag, pd);
        let dctx = Self::view(dc, h * d, hw, false);
        // dV = P'ᵀ dC; dP' = dC Vᵀ.
        let probs_t = Self::view(probs, 0, len, true);
        gemm(
            (len, d, len),
            &mut dq[2 * hw + h * d..],
            3 * hw,
            probs_t,
            dctx,
            false,
            1.0,
            SERIAL,
        );
        let value_t = Self::view(q, 2 * hw + h * d, 3 * hw, true);
        gemm((len, len, d), g, len, dctx, value_t, false, 1.0, SERIAL);
        // Through dropout, then the softmax: dS = P ⊙ (dP − rowsum(dP ⊙ P)).
        if let Some(drop) = &self.dropout {
            for (v, &k) in g.iter_mut().zip(&drop.keep[flag..flag + len * len]) {
                *v = if k != 0 { *v * drop.scale } else { 0.0 };
            }
        }
        for (gr, pr) in g.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
            let s = dot(gr, pr);
            for (v, &pv) in gr.iter_mut().zip(pr.iter()) {
                *v = pv * (*v - s);
            }
        }
        // dQ = scale · dS K, dK = scale · dSᵀ Q.
        let scale = 1.0 / (d as f32).sqrt();
        let (key, query) = (
            Self::view(q, hw + h * d, 3 * hw, false),
            Self::view(q, h * d, 3 * hw, false),
        );
        let ds = MatRef::rows(g, len);
        gemm(
            (len, d, len),
            &mut dq[h * d..],
            3 * hw,
            ds,
            key,
            false,
            scale,
            SERIAL,
        );
        let ds_t = Self::view(g, 0, len, true);
        gemm(
            (len, d, len),
            &mut dq[hw + h * d..],
            3 * hw,
            ds_t,
            query,
            false,
            scale,
            SERIAL,
        );
    }
}

/// Each (sequence, head) is one task's pair of small products: the tasks run in parallel.
const SERIAL: Parallelism = Parallelism::None;

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "prep-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = self.check(l)?;
        let qkv = cpu_slice(s, l)?;
        let (hw, d) = (self.hidden(), self.head_dim);
        let mut out = vec![0f32; n * hw];
        self.split(&mut out, hw)
            .into_par_iter()
            .filter(|&(_, len, _, _)| len > 0)
            .for_each(|(start, len, flag, ctx)| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        let q = &qkv[start * 3 * hw..];
                        let (mut p, mut pd) = (vec![0f32; len * len], vec![0f32; len * len]);
                        for h in 0..self.heads {
                            self.probs(q, len, h, &mut p);
                            let probs = self.dropped(&p, flag + h * len * len, &mut pd);
                            let value = Self::view(q, 2 * hw + h * d, 3 * hw, false);
                            let probs = MatRef::rows(probs, len);
                            gemm(
                                (len, d, len),
                                &mut ctx[h * d..],
                                hw,
                                probs,
                                value,
                                false,
                                1.0,
                                SERIAL,
                            );
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(out), (n, hw).into()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (n, _) = arg.dims2()?;
        let hw = self.hidden();
        let dqkv = with_data(arg, |qkv| {
            with_data(dy, |dy| {
                let mut dqkv = vec![0f32; n * 3 * hw];
                self.split(&mut dqkv, 3 * hw)
                    .into_par_iter()
                    .filter(|&(_, len, _, _)| len > 0)
                    .for_each(|(start, len, flag, dq)| {
                        crate::simd::dispatch(
                            #[inline(always)]
                            || {
                                let rows = (&qkv[start * 3 * hw..], &dy[start * hw..]);
                                let mut buf = [0; 3].map(|_| vec![0f32; len * len]);
                                for h in 0..self.heads {
                                    let at = flag + h * len * len;
                                    self.backward_head(
                                        (rows.0, rows.1, &mut *dq),
                                        len,
                                        h,
                                        at,
                                        &mut buf,
                                    );
                                }
                            },
                        )
                    });
                Ok(dqkv)
            })
        })?;
        Ok(Some(Tensor::from_vec(dqkv, (n, 3 * hw), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::{Device, Var};

    /// The same attention from candle's composed ops, one (sequence, head) at a time.
    fn composed(
        qkv: &Tensor,
        seqs: &[(usize, usize)],
        heads: usize,
        d: usize,
        drop: Option<&ProbsDropout>,
    ) -> Tensor {
        let hw = heads * d;
        let mut rows = Vec::new();
        let mut flag = 0;
        for &(start, len) in seqs {
            if len == 0 {
                continue;
            }
            let x = qkv.narrow(0, start, len).unwrap();
            let mut per_head = Vec::new();
            for h in 0..heads {
                let q = x.narrow(1, h * d, d).unwrap();
                let k = x.narrow(1, hw + h * d, d).unwrap();
                let v = x.narrow(1, 2 * hw + h * d, d).unwrap();
                let s = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
                let mut p = crate::model::softmax_last_dim(&s).unwrap();
                if let Some(drop) = drop {
                    let m: Vec<f32> = drop.keep[flag..flag + len * len]
                        .iter()
                        .map(|&k| if k != 0 { drop.scale } else { 0.0 })
                        .collect();
                    p = (p * Tensor::from_vec(m, (len, len), &Device::Cpu).unwrap()).unwrap();
                }
                flag += len * len;
                per_head.push(p.matmul(&v).unwrap());
            }
            rows.push(Tensor::cat(&per_head, 1).unwrap());
        }
        Tensor::cat(&rows, 0).unwrap()
    }

    /// Values and gradients equal the composed ops' (with dropout, and a sequence without
    /// tokens between two others).
    #[test]
    fn attention_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let (heads, d) = (3, 8);
        let seqs = vec![(0, 5), (5, 0), (5, 17), (22, 1)];
        let n = 23;
        let qkv =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, 3 * heads * d), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (n, heads * d), &dev).unwrap();
        let count = probs_count(&seqs, heads);
        let keep: Vec<u8> = (0..count).map(|i| u8::from(i % 7 != 3)).collect();
        for drop in [
            None,
            Some(ProbsDropout {
                keep: Arc::new(keep),
                scale: 1.25,
            }),
        ] {
            let fused = attention(&qkv, Arc::new(seqs.clone()), heads, d, drop.clone()).unwrap();
            let want = composed(&qkv, &seqs, heads, d, drop.as_ref());
            assert!(
                max_diff(&fused, &want) < 1e-5,
                "values differ by {}",
                max_diff(&fused, &want)
            );
            let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let diff = max_diff(gf.get(&qkv).unwrap(), gc.get(&qkv).unwrap());
            assert!(
                diff < 1e-5,
                "gradients differ by {diff} (dropout: {})",
                drop.is_some()
            );
        }
    }
}
