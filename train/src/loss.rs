//! MultipleNegativesRankingLoss on L2-normalised embeddings (scores = scale × cosine).
//!
//! Written from ops that all have a backward (no fused softmax), so gradients reach the
//! embeddings and, through them, every weight.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// How pair batches are scored. Batches with negatives (one column or several) are always
/// one-way over `[positives; every negative column]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Upstream's pair loss: `(CE(S) + CE(Sᵀ)) / 2`.
    #[default]
    Symmetric,
    /// sentence-transformers' `MultipleNegativesRankingLoss` default: `CE(S)`.
    OneWay,
}

/// Mean cross-entropy of each row `i` of `scores` `[B, C]` (C ≥ B) against label `i`.
pub fn cross_entropy_diagonal(scores: &Tensor) -> Result<Tensor> {
    let (b, _) = scores.dims2()?;
    // The max is only for range; its gradient cancels, so detaching it is exact.
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let lse = scores
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&max)?
        .squeeze(1)?;
    let eye = Tensor::eye(b, scores.dtype(), scores.device())?;
    let diag = scores.narrow(1, 0, b)?.mul(&eye)?.sum(1)?;
    (lse - diag)?.mean_all()
}

/// The batch loss. `anchor`, `positive` and each of `negatives` (one per negative column) are
/// `[B, H]` unit vectors.
///
/// With negatives, each anchor's candidates are every positive and every negative of the batch,
/// `[positives; negatives_1; ...; negatives_N]` (B × (N+1)·B scores, label: its own positive), as
/// sentence-transformers' `MultipleNegativesRankingLoss` does with several negative columns. It
/// stays one-way whatever `kind`: upstream scored triplets so, and a symmetric term would rank
/// positives against anchors only, leaving the negatives out.
pub fn mnrl(
    anchor: &Tensor,
    positive: &Tensor,
    negatives: &[Tensor],
    scale: f64,
    kind: LossKind,
) -> Result<Tensor> {
    match negatives {
        [_, ..] => {
            let columns: Vec<&Tensor> = std::iter::once(positive).chain(negatives).collect();
            let candidates = Tensor::cat(&columns, 0)?;
            let s = (anchor.matmul(&candidates.t()?)? * scale)?;
            cross_entropy_diagonal(&s)
        }
        [] => {
            let s = (anchor.matmul(&positive.t()?)? * scale)?;
            match kind {
                LossKind::OneWay => cross_entropy_diagonal(&s),
                LossKind::Symmetric => {
                    let a = cross_entropy_diagonal(&s)?;
                    let b = cross_entropy_diagonal(&s.t()?)?;
                    (a + b)? * 0.5
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// log-softmax CE computed on the host in f64.
    fn ce_host(s: &[Vec<f64>]) -> f64 {
        let mut total = 0.0;
        for (i, row) in s.iter().enumerate() {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            total += lse - row[i];
        }
        total / s.len() as f64
    }

    fn unit_rows(n: usize, d: usize, seed: u32) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                let v: Vec<f64> = (0..d)
                    .map(|j| (((i * 31 + j * 17) as u32 ^ seed) % 97) as f64 / 97.0 - 0.5)
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect()
    }

    fn t(rows: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    fn scores(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
        a.iter()
            .map(|x| {
                b.iter()
                    .map(|y| 20.0 * x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_host_formulas() {
        let a = unit_rows(5, 8, 1);
        let p = unit_rows(5, 8, 77);
        let n = unit_rows(5, 8, 1234);
        let s = scores(&a, &p);
        let st: Vec<Vec<f64>> = (0..5).map(|j| (0..5).map(|i| s[i][j]).collect()).collect();
        let sym = mnrl(&t(&a), &t(&p), &[], 20.0, LossKind::Symmetric).unwrap();
        let want = (ce_host(&s) + ce_host(&st)) / 2.0;
        assert!((sym.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-5);
        let one = mnrl(&t(&a), &t(&p), &[], 20.0, LossKind::OneWay).unwrap();
        assert!((one.to_scalar::<f32>().unwrap() as f64 - ce_host(&s)).abs() < 1e-5);
        let pn: Vec<Vec<f64>> = p.iter().chain(&n).cloned().collect();
        let tri = mnrl(&t(&a), &t(&p), &[t(&n)], 20.0, LossKind::Symmetric).unwrap();
        assert!((tri.to_scalar::<f32>().unwrap() as f64 - ce_host(&scores(&a, &pn))).abs() < 1e-5);
        // Three negative columns: candidates [p; n; n2; n3].
        let (n2, n3) = (unit_rows(5, 8, 555), unit_rows(5, 8, 4242));
        let all: Vec<Vec<f64>> = p.iter().chain(&n).chain(&n2).chain(&n3).cloned().collect();
        let negs = [t(&n), t(&n2), t(&n3)];
        let four = mnrl(&t(&a), &t(&p), &negs, 20.0, LossKind::OneWay).unwrap();
        assert!(
            (four.to_scalar::<f32>().unwrap() as f64 - ce_host(&scores(&a, &all))).abs() < 1e-5
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let a = Var::from_tensor(&t(&unit_rows(4, 6, 3))).unwrap();
        let p = t(&unit_rows(4, 6, 9));
        let loss = mnrl(&a, &p, &[], 20.0, LossKind::Symmetric).unwrap();
        let g = loss.backward().unwrap();
        let ga = g.get(&a).unwrap().to_vec2::<f32>().unwrap();
        let base = a.to_vec2::<f32>().unwrap();
        let h = 1e-3f32;
        for (i, j) in [(0usize, 0usize), (2, 3), (3, 5)] {
            let mut plus = base.clone();
            plus[i][j] += h;
            let mut minus = base.clone();
            minus[i][j] -= h;
            let f = |m: Vec<Vec<f32>>| {
                let rows: Vec<Vec<f64>> = m
                    .iter()
                    .map(|r| r.iter().map(|&x| x as f64).collect())
                    .collect();
                mnrl(&t(&rows), &p, &[], 20.0, LossKind::Symmetric)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let fd = (f(plus) - f(minus)) / (2.0 * h);
            assert!(
                (fd - ga[i][j]).abs() < 2e-2 * (1.0 + fd.abs()),
                "{i},{j}: {fd} vs {}",
                ga[i][j]
            );
        }
    }
}
