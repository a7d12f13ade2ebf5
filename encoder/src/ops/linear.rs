//! `x Wᵀ + b` with its backward, straight on the `gemm` crate.
//!
//! Composed, a Linear is four graph nodes (reshape, transposed view, matmul, broadcast add) whose
//! backward computes the weight's gradient transposed, sums the bias's over rows on one thread,
//! and gives every node a zeroed gradient to add into. Here it is one node: the bias is the
//! product's starting value, and the backward writes dx, dW (in W's own layout) and db directly.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, with_data};
use crate::linalg::{gemm, parallelism, MatRef};

/// Rows per task when summing the bias gradient (fixed, so the sum's order is too).
const ROWS: usize = 64;

struct LinearOp;

/// `x Wᵀ + b` for `x` `[N, in]`, `w` `[out, in]`, `b` `[out]` (CPU, f32).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp)
}

/// `(rows, in, out)` of a Linear's operands, or why they do not fit.
fn shapes(x: &Layout, w: &Layout, b: &Layout) -> Result<(usize, usize, usize)> {
    let (n, k) = x.shape().dims2()?;
    let (o, kw) = w.shape().dims2()?;
    if kw != k || b.shape().dims() != [o] {
        bail!(
            "linear: x {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    Ok((n, k, o))
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "prep-linear"
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
        let (n, k, o) = shapes(l1, l2, l3)?;
        let (x, w, b) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let mut y = vec![0f32; n * o];
        y.par_chunks_mut(ROWS * o.max(1)).for_each(|rows| {
            for row in rows.chunks_exact_mut(o.max(1)) {
                row.copy_from_slice(b);
            }
        });
        // W read transposed in place: element (k, o) of Wᵀ is w[o·in + k].
        let wt = MatRef {
            data: w,
            row_stride: 1,
            col_stride: k,
        };
        gemm(
            (n, o, k),
            &mut y,
            o,
            MatRef::rows(x, k),
            wt,
            true,
            1.0,
            parallelism(),
        );
        Ok((CpuStorage::F32(y), (n, o).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let o = w.dim(0)?;
        let (dx, dw, db) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(dy, |dy| {
                    let par = parallelism();
                    let mut dx = vec![0f32; n * k];
                    gemm(
                        (n, k, o),
                        &mut dx,
                        k,
                        MatRef::rows(dy, o),
                        MatRef::rows(w, k),
                        false,
                        1.0,
                        par,
                    );
                    // dW = dyᵀ x, dyᵀ read in place: element (o, n) is dy[n·out + o].
                    let dyt = MatRef {
                        data: dy,
                        row_stride: 1,
                        col_stride: o,
                    };
                    let mut dw = vec![0f32; o * k];
                    gemm(
                        (o, k, n),
                        &mut dw,
                        k,
                        dyt,
                        MatRef::rows(x, k),
                        false,
                        1.0,
                        par,
                    );
                    Ok((dx, dw, column_sums(dy, o)))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, k), dev)?),
            Some(Tensor::from_vec(dw, (o, k), dev)?),
            Some(Tensor::from_vec(db, o, dev)?),
        ))
    }
}

/// Sums of the columns of `m` (rows of `cols`): partial sums over fixed row blocks in parallel,
/// added in block order, so the result does not depend on the thread count.
pub(crate) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    if cols == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f32>> = m
        .par_chunks(ROWS * cols)
        .map(|block| {
            let mut sum = vec![0f32; cols];
            for row in block.chunks_exact(cols) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sum
        })
        .collect();
    let mut sum = vec![0f32; cols];
    for p in &partials {
        for (s, v) in sum.iter_mut().zip(p) {
            *s += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::{Device, Var};

    /// Values and all three gradients equal candle's matmul + broadcast add (over more rows
    /// than one bias-sum block, so the blocks' partial sums are exercised).
    #[test]
    fn linear_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let var = |shape: &[usize]| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (x, w, b) = (var(&[150, 24]), var(&[40, 24]), var(&[40]));
        let r = Tensor::randn(0f32, 1.0, (150, 40), &dev).unwrap();
        let fused = linear(&x, &w, &b).unwrap();
        let want = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&fused, &want) < 1e-5);
        let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (v, name) in [(&x, "x"), (&w, "w"), (&b, "b")] {
            let d = max_diff(gf.get(v).unwrap(), gc.get(v).unwrap());
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
    }
}
