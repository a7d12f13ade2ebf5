//! Fused CPU ops with a backward pass: LayerNorm, scaled + masked softmax, GELU (erf).
//!
//! The composed versions in `model.rs` (which every device can run) cost several passes over
//! the activations and keep each intermediate alive until backward. These do one pass forward
//! and one backward, over contiguous f32 rows, in parallel on rayon. Row-wise reductions use a
//! fixed chunking and sum partials in chunk order, so results do not depend on the thread count
//! or on scheduling (resume must be bit-exact). Used on the CPU for f32 only; other devices and
//! dtypes keep the composed ops.

use std::sync::Arc;

mod attention;
mod linear;
mod residual;

pub use attention::{attention, probs_count, probs_first, ProbsDropout};
pub use linear::linear;
pub use residual::{dropout, residual_norm, segment_mean, KeepMask};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the fused ops can run on `x` (CPU, f32). Whether a model uses them is its
/// [`crate::model::Compute`]'s choice (by device; `PREP_FUSED_OPS=0` turns them off for A/B timing).
pub fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of `t` (copied only if `t` is strided).
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        candle_core::Storage::Cpu(c) => f(cpu_slice(c, l)?),
        _ => bail!("fused op: CPU tensors only"),
    }
}

/// Rows per rayon task.
const ROWS: usize = 16;
/// Elements per rayon task in elementwise loops.
const CHUNK: usize = 16 * 1024;
/// Independent accumulators, so float reductions vectorise.
const LANES: usize = 16;

#[inline(always)]
pub(crate) fn sum_of(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// Mean and 1/sqrt(var + eps) of one row (two-pass, as PyTorch).
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum_of(row) / n;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + rest.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// exp(x) for f32 (Cephes' polynomial after range reduction by ln 2; ~1 ulp), branch-free so
/// loops over it vectorise. Inputs below -87 give ~1e-38, not 0: callers zero masked lanes.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// erf (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7, as PyTorch's vectorised CPU GELU).
#[inline(always)]
pub(crate) fn erf(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(z)
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// `LayerNorm(x) * w + b` over the last dimension; backward gives dx, dw and db.
struct LayerNormOp {
    eps: f32,
}

/// Fused LayerNorm of `x` (last dimension) with weight `w` and bias `b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(w, b, LayerNormOp { eps: eps as f32 })
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "prep-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let h = w.len();
        if h == 0 || b.len() != h || l1.dims().last() != Some(&h) {
            bail!("layer norm: weight/bias do not match the last dimension");
        }
        let eps = self.eps;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROWS * h)
            .zip(x.par_chunks(ROWS * h))
            .for_each(|(yc, xc)| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        for (yr, xr) in yc.chunks_exact_mut(h).zip(xc.chunks_exact(h)) {
                            yr.copy_from_slice(xr);
                            normalize_in_place(yr, w, b, eps);
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.dim(0)?;
        let eps = self.eps;
        let (dx, dw, db) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(dy, |dy| {
                    let mut dx = vec![0f32; x.len()];
                    // Per-chunk partial dw/db, summed in chunk order afterwards (deterministic).
                    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
                        .par_chunks_mut(ROWS * h)
                        .zip(x.par_chunks(ROWS * h))
                        .zip(dy.par_chunks(ROWS * h))
                        .map(|((dxc, xc), dyc)| {
                            crate::simd::dispatch(
                                #[inline(always)]
                                || {
                                    let mut dw = vec![0f32; h];
                                    let mut db = vec![0f32; h];
                                    let mut scratch = NormScratch::new(h);
                                    for ((dxr, xr), dyr) in dxc
                                        .chunks_exact_mut(h)
                                        .zip(xc.chunks_exact(h))
                                        .zip(dyc.chunks_exact(h))
                                    {
                                        let grads = (dxr, &mut dw[..], &mut db[..]);
                                        scratch.backward_row(xr, dyr, w, eps, grads);
                                    }
                                    (dw, db)
                                },
                            )
                        })
                        .collect();
                    let mut dw = vec![0f32; h];
                    let mut db = vec![0f32; h];
                    for (pw, pb) in &partials {
                        for i in 0..h {
                            dw[i] += pw[i];
                            db[i] += pb[i];
                        }
                    }
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, h, dev)?),
            Some(Tensor::from_vec(db, h, dev)?),
        ))
    }
}

/// One row of `LayerNorm(row) · w + b`, in place.
#[inline(always)]
pub(crate) fn normalize_in_place(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, inv) = moments(row, eps);
    for ((v, &wi), &bi) in row.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * wi + bi;
    }
}

/// Scratch rows for LayerNorm's backward, one row at a time.
pub(crate) struct NormScratch {
    xhat: Vec<f32>,
    g: Vec<f32>,
}

impl NormScratch {
    pub(crate) fn new(h: usize) -> Self {
        NormScratch {
            xhat: vec![0f32; h],
            g: vec![0f32; h],
        }
    }

    /// One row of `LayerNorm(x) · w + b`'s backward: writes dx from the row `x` and its output
    /// gradient `dy`, and adds the row's share into dw and db.
    #[inline(always)]
    pub(crate) fn backward_row(
        &mut self,
        x: &[f32],
        dy: &[f32],
        w: &[f32],
        eps: f32,
        (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (xhat, g, h) = (&mut self.xhat, &mut self.g, w.len());
        let (mean, inv) = moments(x, eps);
        for i in 0..h {
            xhat[i] = (x[i] - mean) * inv;
            g[i] = dy[i] * w[i];
            dw[i] += dy[i] * xhat[i];
            db[i] += dy[i];
        }
        let a = sum_of(g) / h as f32;
        let c = dot(g, xhat) / h as f32;
        for i in 0..h {
            dx[i] = inv * (g[i] - a - xhat[i] * c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax(scale · scores + mask)

/// `softmax(scale · s + mask)` over the last dimension of attention scores `[B, N, Tq, Tk]`,
/// where `keep[b·Tk + j]` says whether key `j` of sequence `b` is real. Masked keys get exactly 0
/// (as exp of the most negative f32 does in the composed version).
struct MaskedSoftmax {
    scale: f32,
    keep: Arc<Vec<bool>>,
    /// Rows per sequence (`N · Tq`).
    rows_per_seq: usize,
}

/// Fused attention softmax: `scores` `[B, N, Tq, Tk]`, `keep` `[B·Tk]`.
pub fn masked_softmax(scores: &Tensor, scale: f64, keep: Arc<Vec<bool>>) -> Result<Tensor> {
    let (_, n, tq, _) = scores.dims4()?;
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        scale: scale as f32,
        keep,
        rows_per_seq: n * tq,
    })
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "prep-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l)?;
        let tk = *l.dims().last().unwrap_or(&0);
        if tk == 0 || self.keep.len() * self.rows_per_seq != x.len() {
            bail!("masked softmax: mask does not match the scores");
        }
        let (scale, keep, rps) = (self.scale, &self.keep, self.rows_per_seq);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROWS * tk)
            .zip(x.par_chunks(ROWS * tk))
            .enumerate()
            .for_each(|(ci, (yc, xc))| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        for (ri, (yr, xr)) in
                            yc.chunks_exact_mut(tk).zip(xc.chunks_exact(tk)).enumerate()
                        {
                            let seq = (ci * ROWS + ri) / rps;
                            let k = &keep[seq * tk..(seq + 1) * tk];
                            let mut max = f32::NEG_INFINITY;
                            for j in 0..tk {
                                let v = xr[j] * scale;
                                if k[j] && v > max {
                                    max = v;
                                }
                            }
                            for j in 0..tk {
                                let e = exp(xr[j] * scale - max);
                                yr[j] = if k[j] { e } else { 0.0 };
                            }
                            let inv = 1.0 / sum_of(yr);
                            for v in yr.iter_mut() {
                                *v *= inv;
                            }
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let tk = res.dim(candle_core::D::Minus1)?;
        let scale = self.scale;
        let dx = with_data(res, |p| {
            with_data(dy, |dy| {
                let mut dx = vec![0f32; p.len()];
                dx.par_chunks_mut(ROWS * tk)
                    .zip(p.par_chunks(ROWS * tk))
                    .zip(dy.par_chunks(ROWS * tk))
                    .for_each(|((dxc, pc), dyc)| {
                        crate::simd::dispatch(
                            #[inline(always)]
                            || {
                                for ((dxr, pr), dyr) in dxc
                                    .chunks_exact_mut(tk)
                                    .zip(pc.chunks_exact(tk))
                                    .zip(dyc.chunks_exact(tk))
                                {
                                    let s = dot(pr, dyr);
                                    for j in 0..tk {
                                        dxr[j] = scale * pr[j] * (dyr[j] - s);
                                    }
                                }
                            },
                        )
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf)

struct GeluErf;

/// Fused GELU with erf: `0.5 x (1 + erf(x/√2))`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "prep-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        for (y, &x) in yc.iter_mut().zip(xc) {
                            *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        // d/dx = Φ(x) + x φ(x) = 0.5 (1 + erf(x/√2)) + x exp(-x²/2) / √(2π)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let dx = with_data(arg, |x| {
            with_data(dy, |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .zip(dy.par_chunks(CHUNK))
                    .for_each(|((dc, xc), gc)| {
                        crate::simd::dispatch(
                            #[inline(always)]
                            || {
                                for ((d, &x), &g) in dc.iter_mut().zip(xc).zip(gc) {
                                    let cdf =
                                        0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                                    let pdf = exp(-0.5 * x * x) * INV_SQRT_2PI;
                                    *d = g * (cdf + x * pdf);
                                }
                            },
                        )
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// The largest absolute difference between two tensors (the ops' tests).
#[cfg(test)]
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn composed_ln(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
        xn.broadcast_mul(w)?.broadcast_add(b)
    }

    /// Fused ops agree with the composed candle ops, values and gradients, on random data.
    #[test]
    fn fused_ops_match_composed() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (37, 48), &dev)? + 0.5)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 48, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 48, &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (37, 48), &dev)?;
        let f = layer_norm(&x, &w, &b, 1e-12)?;
        let c = composed_ln(&x, &w, &b, 1e-12)?;
        assert!(max_diff(&f, &c) < 1e-5);
        let gf = (f * &r)?.sum_all()?.backward()?;
        let gc = (c * &r)?.sum_all()?.backward()?;
        for v in [&x, &w, &b] {
            let d = max_diff(gf.get(v).unwrap(), gc.get(v).unwrap());
            assert!(d < 1e-4, "layer norm grad differs by {d}");
        }

        // GELU
        let gx = Var::from_tensor(&Tensor::randn(0f32, 3.0, (5, 1000), &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (5, 1000), &dev)?;
        let f = gelu_erf(&gx)?;
        let c = gx.gelu_erf()?;
        assert!(max_diff(&f, &c) < 1e-6);
        let gf = (f * &r)?.sum_all()?.backward()?;
        let gc = (c * &r)?.sum_all()?.backward()?;
        assert!(max_diff(gf.get(&gx).unwrap(), gc.get(&gx).unwrap()) < 1e-5);

        // Masked softmax: 2 sequences, 3 heads, 5 queries, 7 keys; second has 3 padded keys.
        let s = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &dev)?)?;
        let mut keep = vec![true; 14];
        keep[11..].iter_mut().for_each(|k| *k = false);
        let add: Vec<f32> = keep
            .iter()
            .map(|&k| if k { 0.0 } else { f32::MIN })
            .collect();
        let add = Tensor::from_vec(add, (2, 1, 1, 7), &dev)?;
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev)?;
        let f = masked_softmax(&s, 0.125, Arc::new(keep))?;
        let z = (s.as_tensor() * 0.125)?.broadcast_add(&add)?;
        let max = z.max_keepdim(D::Minus1)?.detach();
        let e = z.broadcast_sub(&max)?.exp()?;
        let c = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        assert!(max_diff(&f, &c) < 1e-6);
        let gf = (f * &r)?.sum_all()?.backward()?;
        let gc = (c * &r)?.sum_all()?.backward()?;
        assert!(max_diff(gf.get(&s).unwrap(), gc.get(&s).unwrap()) < 1e-6);
        Ok(())
    }
}
