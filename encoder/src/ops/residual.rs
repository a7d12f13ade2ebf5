//! Dropout, and the tail of both BERT sublayers, `LayerNorm(dropout(y) + residual)`, as one node.
//!
//! Composed, the tail is a mask tensor, a multiply (whose backward also computes the mask's
//! gradient), an add and the LayerNorm: four nodes, each backward pass allocating and adding into
//! a zeroed gradient on one thread. Here dropout's flags are bytes, and the residual sum is
//! recomputed in the backward pass instead of kept.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, normalize_in_place, with_data, NormScratch, CHUNK, ROWS};

/// Inverted dropout's keep flags (1 keep, 0 drop) for a tensor's elements, in order, and the
/// scale of a kept value (1/(1-p)).
#[derive(Debug, Clone)]
pub struct KeepMask {
    pub keep: Arc<Vec<u8>>,
    pub scale: f32,
}

impl KeepMask {
    #[inline(always)]
    fn apply(&self, v: f32, i: usize) -> f32 {
        if self.keep[i] != 0 {
            v * self.scale
        } else {
            0.0
        }
    }
}

struct DropoutOp(KeepMask);

/// `x` with the elements `mask` drops zeroed and the rest scaled (CPU, f32).
pub fn dropout(x: &Tensor, mask: KeepMask) -> Result<Tensor> {
    if mask.keep.len() != x.elem_count() {
        bail!(
            "dropout: {} flags for {} values",
            mask.keep.len(),
            x.elem_count()
        );
    }
    x.contiguous()?.apply_op1(DropoutOp(mask))
}

/// `mask` applied to `x` into a new vector, in parallel chunks.
fn masked(x: &[f32], mask: &KeepMask) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (yc, xc))| {
            for (i, (y, &x)) in yc.iter_mut().zip(xc).enumerate() {
                *y = mask.apply(x, c * CHUNK + i);
            }
        });
    y
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "prep-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l)?;
        Ok((CpuStorage::F32(masked(x, &self.0)), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(dy, |dy| Ok(masked(dy, &self.0)))?;
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

/// `LayerNorm(dropout(y) + residual) · w + b` over the last dimension.
struct ResidualNormOp {
    eps: f32,
    dropout: Option<KeepMask>,
}

/// `LayerNorm(dropout(y) + residual)` with weight and bias `wb` = `[w | b]` (`[2H]`): `y` and
/// `residual` `[N, H]`, CPU, f32.
pub fn residual_norm(
    y: &Tensor,
    residual: &Tensor,
    wb: &Tensor,
    eps: f64,
    dropout: Option<KeepMask>,
) -> Result<Tensor> {
    if let Some(m) = &dropout {
        if m.keep.len() != y.elem_count() {
            bail!(
                "residual norm: {} dropout flags for {} values",
                m.keep.len(),
                y.elem_count()
            );
        }
    }
    y.contiguous()?.apply_op3(
        &residual.contiguous()?,
        &wb.contiguous()?,
        ResidualNormOp {
            eps: eps as f32,
            dropout,
        },
    )
}

impl ResidualNormOp {
    /// Row `r`'s residual sum `dropout(y) + residual` into `z`.
    #[inline(always)]
    fn sum_into(&self, z: &mut [f32], y: &[f32], res: &[f32], r: usize) {
        let h = z.len();
        match &self.dropout {
            Some(m) => {
                for i in 0..h {
                    z[i] = m.apply(y[i], r * h + i) + res[i];
                }
            }
            None => {
                for i in 0..h {
                    z[i] = y[i] + res[i];
                }
            }
        }
    }
}

impl CustomOp3 for ResidualNormOp {
    fn name(&self) -> &'static str {
        "prep-residual-norm"
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
        let (y, res, wb) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let h = wb.len() / 2;
        if h == 0 || l1.dims().last() != Some(&h) || l2.dims() != l1.dims() {
            bail!(
                "residual norm: y {:?}, residual {:?}, [w|b] {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let (w, b) = wb.split_at(h);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(ROWS * h)
            .enumerate()
            .for_each(|(c, oc)| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        for (i, o) in oc.chunks_exact_mut(h).enumerate() {
                            let r = c * ROWS + i;
                            self.sum_into(o, &y[r * h..(r + 1) * h], &res[r * h..(r + 1) * h], r);
                            normalize_in_place(o, w, b, self.eps);
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        res: &Tensor,
        wb: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = wb.dim(0)? / 2;
        let (dz, dy, dwb) = with_data(y, |y| {
            with_data(res, |res| {
                with_data(wb, |wb| {
                    with_data(dout, |dout| Ok(self.backward(y, res, &wb[..h], dout)))
                })
            })
        })?;
        let dev = y.device();
        let dz = Tensor::from_vec(dz, y.shape(), dev)?;
        let dy = match dy {
            Some(dy) => Tensor::from_vec(dy, y.shape(), dev)?,
            None => dz.clone(),
        };
        Ok((Some(dy), Some(dz), Some(Tensor::from_vec(dwb, 2 * h, dev)?)))
    }
}

impl ResidualNormOp {
    /// The gradients of the residual sum (= the residual's), of `y` (None: the same, without
    /// dropout) and of `[w | b]`.
    fn backward(
        &self,
        y: &[f32],
        res: &[f32],
        w: &[f32],
        dout: &[f32],
    ) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
        let h = w.len();
        let mut dz = vec![0f32; y.len()];
        // Per-chunk partial dw/db, summed in chunk order afterwards (deterministic).
        let partials: Vec<Vec<f32>> = dz
            .par_chunks_mut(ROWS * h)
            .enumerate()
            .map(|(c, dzc)| {
                crate::simd::dispatch(
                    #[inline(always)]
                    || {
                        let mut dwb = vec![0f32; 2 * h];
                        let (mut z, mut scratch) = (vec![0f32; h], NormScratch::new(h));
                        for (i, dzr) in dzc.chunks_exact_mut(h).enumerate() {
                            let r = c * ROWS + i;
                            let span = r * h..(r + 1) * h;
                            self.sum_into(&mut z, &y[span.clone()], &res[span.clone()], r);
                            let (dw, db) = dwb.split_at_mut(h);
                            scratch.backward_row(&z, &dout[span], w, self.eps, (dzr, dw, db));
                        }
                        dwb
                    },
                )
            })
            .collect();
        let mut dwb = vec![0f32; 2 * h];
        for p in &partials {
            for (s, v) in dwb.iter_mut().zip(p) {
                *s += v;
            }
        }
        let dy = self.dropout.as_ref().map(|m| masked(&dz, m));
        (dz, dy, dwb)
    }
}

/// The mean of each sequence's rows: `x` `[N, H]`, sequences as (first row, length) → `[B, H]`
/// (a sequence without rows gets zeros, as sentence-transformers' clamped count gives).
struct SegmentMean {
    seqs: Arc<Vec<(usize, usize)>>,
}

/// Mean pooling over each sequence's rows of `x` `[N, H]` (CPU, f32).
pub fn segment_mean(x: &Tensor, seqs: Arc<Vec<(usize, usize)>>) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SegmentMean { seqs })
}

impl CustomOp1 for SegmentMean {
    fn name(&self) -> &'static str {
        "prep-segment-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l)?;
        let (n, h) = l.shape().dims2()?;
        let mut end = 0;
        for &(start, len) in self.seqs.iter() {
            if start < end || start + len > n {
                bail!("segment mean: sequences must be in order, within the {n} rows");
            }
            end = start + len;
        }
        let mut out = vec![0f32; self.seqs.len() * h];
        out.par_chunks_mut(h.max(1))
            .zip(self.seqs.par_iter())
            .for_each(|(o, &(start, len))| {
                for row in x[start * h..(start + len) * h].chunks_exact(h) {
                    for (a, v) in o.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                let inv = 1.0 / (len.max(1) as f32);
                o.iter_mut().for_each(|a| *a *= inv);
            });
        Ok((CpuStorage::F32(out), (self.seqs.len(), h).into()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (n, h) = arg.dims2()?;
        let dx = with_data(dy, |dy| {
            let mut dx = vec![0f32; n * h];
            let mut rest = dx.as_mut_slice();
            let mut parts = Vec::with_capacity(self.seqs.len());
            let mut at = 0;
            for (b, &(start, len)) in self.seqs.iter().enumerate() {
                let (_, tail) = rest.split_at_mut((start - at) * h);
                let (mine, tail) = tail.split_at_mut(len * h);
                parts.push((b, len, mine));
                rest = tail;
                at = start + len;
            }
            parts.into_par_iter().for_each(|(b, len, rows)| {
                let inv = 1.0 / (len.max(1) as f32);
                let g = &dy[b * h..(b + 1) * h];
                for row in rows.chunks_exact_mut(h) {
                    for (d, v) in row.iter_mut().zip(g) {
                        *d = v * inv;
                    }
                }
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, (n, h), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::{Device, Var, D};

    fn var(shape: &[usize], mean: f32) -> Var {
        Var::from_tensor(&Tensor::randn(mean, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// `LayerNorm(y ⊙ m + r)` and dropout alone, values and gradients, against candle's ops.
    #[test]
    fn residual_norm_and_dropout_match_the_composed_ops() {
        let (n, h) = (37, 48);
        let (y, r, w, b) = (
            var(&[n, h], 0.5),
            var(&[n, h], 0.0),
            var(&[h], 1.0),
            var(&[h], 0.0),
        );
        let keep: Vec<u8> = (0..n * h).map(|i| u8::from(i % 5 != 1)).collect();
        let mask = KeepMask {
            keep: Arc::new(keep.clone()),
            scale: 1.25,
        };
        let m: Vec<f32> = keep.iter().map(|&k| f32::from(k) * 1.25).collect();
        let m = Tensor::from_vec(m, (n, h), &Device::Cpu).unwrap();
        let g = Tensor::randn(0f32, 1.0, (n, h), &Device::Cpu).unwrap();
        for drop in [None, Some(mask.clone())] {
            let wb = Tensor::cat(&[w.as_tensor(), b.as_tensor()], 0).unwrap();
            let fused = residual_norm(&y, &r, &wb, 1e-12, drop.clone()).unwrap();
            let z = match drop {
                Some(_) => ((y.as_tensor() * &m).unwrap() + r.as_tensor()).unwrap(),
                None => (y.as_tensor() + r.as_tensor()).unwrap(),
            };
            let mean = z.mean_keepdim(D::Minus1).unwrap();
            let zc = z.broadcast_sub(&mean).unwrap();
            let var = zc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let want = zc
                .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
                .unwrap();
            let want = want.broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap();
            assert!(max_diff(&fused, &want) < 1e-5);
            let gf = (fused * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (want * &g).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&y, &r, &w, &b] {
                let d = max_diff(gf.get(v).unwrap(), gc.get(v).unwrap());
                assert!(d < 1e-4, "gradient differs by {d}");
            }
        }
        let fused = dropout(&y, mask).unwrap();
        let want = (y.as_tensor() * &m).unwrap();
        assert_eq!(max_diff(&fused, &want), 0.0);
        let gf = (fused * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(max_diff(gf.get(&y).unwrap(), &(&g * &m).unwrap()), 0.0);
    }

    /// Each sequence's mean and its gradient (1/len to each of its rows; a sequence without
    /// rows gets zeros and gives nothing).
    #[test]
    fn segment_mean_averages_each_sequences_rows() {
        let x = var(&[9, 4], 0.0);
        let seqs = vec![(0, 3), (3, 0), (3, 6)];
        let pooled = segment_mean(&x, Arc::new(seqs)).unwrap();
        let want = Tensor::stack(
            &[
                x.narrow(0, 0, 3).unwrap().mean(0).unwrap(),
                Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
                x.narrow(0, 3, 6).unwrap().mean(0).unwrap(),
            ],
            0,
        )
        .unwrap();
        assert!(max_diff(&pooled, &want) < 1e-6);
        let grad = pooled.sum_all().unwrap().backward().unwrap();
        let got: Vec<Vec<f32>> = grad.get(&x).unwrap().to_vec2().unwrap();
        for (i, row) in got.iter().enumerate() {
            let want = if i < 3 { 1.0 / 3.0 } else { 1.0 / 6.0 };
            assert!(
                row.iter().all(|&v| (v - want).abs() < 1e-7),
                "row {i}: {row:?}"
            );
        }
    }
}
