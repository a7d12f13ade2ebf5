//! Retrieval scoring and metrics (MRR@10, Recall@1/@10, nDCG@10) over dot-product scores, for
//! `prep eval`, `prep search` and the trainer alike.

use serde::{Deserialize, Serialize};

/// Metrics of a retrieval run where each query has exactly one relevant candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    pub queries: usize,
    pub candidates: usize,
    pub mrr_at_10: f64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub ndcg_at_10: f64,
}

/// 1-based rank of candidate `relevant` in a row of scores: one plus the number of candidates
/// scored strictly higher (ties resolve in the relevant one's favour, which only matters for
/// duplicate texts).
pub fn rank_of(scores: &[f32], relevant: usize) -> usize {
    let s = scores[relevant];
    1 + scores.iter().filter(|&&v| v > s).count()
}

/// Ranks for a row-major `[queries, candidates]` score matrix; `relevant[q]` is query q's
/// relevant candidate.
pub fn ranks(scores: &[f32], candidates: usize, relevant: &[usize]) -> Vec<usize> {
    assert_eq!(
        scores.len(),
        relevant.len() * candidates,
        "score matrix shape"
    );
    scores
        .chunks_exact(candidates.max(1))
        .zip(relevant)
        .map(|(row, &r)| rank_of(row, r))
        .collect()
}

/// MRR@10, Recall@1, Recall@10 and nDCG@10 (one relevant item: 1/log2(rank+1)) from ranks.
pub fn metrics_from_ranks(ranks: &[usize], candidates: usize) -> RetrievalMetrics {
    let n = ranks.len().max(1) as f64;
    let mut m = RetrievalMetrics {
        queries: ranks.len(),
        candidates,
        mrr_at_10: 0.0,
        recall_at_1: 0.0,
        recall_at_10: 0.0,
        ndcg_at_10: 0.0,
    };
    for &r in ranks {
        if r <= 10 {
            m.mrr_at_10 += 1.0 / r as f64;
            m.recall_at_10 += 1.0;
            m.ndcg_at_10 += 1.0 / ((r + 1) as f64).log2();
        }
        if r == 1 {
            m.recall_at_1 += 1.0;
        }
    }
    m.mrr_at_10 /= n;
    m.recall_at_1 /= n;
    m.recall_at_10 /= n;
    m.ndcg_at_10 /= n;
    m
}

/// Row-major `[q, c]` dot products of `queries` (`[q, dim]`, flat) with `corpus` (`[c, dim]`).
pub fn score_matrix(queries: &[f32], corpus: &[f32], dim: usize) -> Vec<f32> {
    let q = queries.len() / dim.max(1);
    let c = corpus.len() / dim.max(1);
    let mut out = vec![0f32; q * c];
    if q == 0 || c == 0 {
        return out;
    }
    // corpus is read transposed: element (d, j) at j·dim + d.
    let lhs = crate::linalg::MatRef::rows(queries, dim);
    let rhs = crate::linalg::MatRef {
        data: corpus,
        row_stride: 1,
        col_stride: dim,
    };
    crate::linalg::gemm(
        (q, c, dim),
        &mut out,
        c,
        lhs,
        rhs,
        false,
        1.0,
        crate::linalg::parallelism(),
    );
    out
}

/// Metrics for queries against candidates (both flat `[n, dim]`), where query i's relevant
/// candidate is `relevant[i]`. Scores a block of queries at a time, so memory stays at
/// block × candidates.
pub fn evaluate(
    queries: &[f32],
    candidates: &[f32],
    dim: usize,
    relevant: &[usize],
) -> RetrievalMetrics {
    let c = candidates.len() / dim.max(1);
    const BLOCK: usize = 512;
    let mut all = Vec::with_capacity(relevant.len());
    for (qi, rel) in queries.chunks(BLOCK * dim).zip(relevant.chunks(BLOCK)) {
        let scores = score_matrix(qi, candidates, dim);
        all.extend(ranks(&scores, c, rel));
    }
    metrics_from_ranks(&all, c)
}

/// The `k` best candidates for one query, best first, as (index, score); ties by lower index.
pub fn top_k(query: &[f32], corpus: &[f32], dim: usize, k: usize) -> Vec<(usize, f32)> {
    let scores = score_matrix(query, corpus, dim);
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, scores[i])).collect()
}

/// A retrieval task built from pairs/triplets: each anchor must find its positive among all
/// positives and negatives. Candidates are deduplicated by text, so repeated answers are one
/// candidate (and never compete with themselves).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSet {
    pub queries: Vec<String>,
    pub candidates: Vec<String>,
    /// `relevant[i]`: index in `candidates` of query i's positive.
    pub relevant: Vec<usize>,
}

impl EvalSet {
    /// From (anchor, positive, optional negative) records, in order.
    pub fn from_records<I>(records: I) -> Self
    where
        I: IntoIterator<Item = (String, String, Option<String>)>,
    {
        let mut set = EvalSet::default();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        let mut intern = |set: &mut EvalSet, text: String| -> usize {
            if let Some(&i) = index.get(&text) {
                return i;
            }
            let i = set.candidates.len();
            index.insert(text.clone(), i);
            set.candidates.push(text);
            i
        };
        for (anchor, positive, negative) in records {
            let p = intern(&mut set, positive);
            set.queries.push(anchor);
            set.relevant.push(p);
            if let Some(n) = negative {
                intern(&mut set, n);
            }
        }
        set
    }

    /// Embeds queries and candidates with `embed` (vectors of one dim) and scores by dot product.
    pub fn evaluate<E>(
        &self,
        mut embed: impl FnMut(&[&str]) -> Result<Vec<Vec<f32>>, E>,
    ) -> Result<RetrievalMetrics, E> {
        let q: Vec<&str> = self.queries.iter().map(|s| s.as_str()).collect();
        let c: Vec<&str> = self.candidates.iter().map(|s| s.as_str()).collect();
        let qv = embed(&q)?;
        let cv = embed(&c)?;
        let dim = qv.first().or(cv.first()).map(|v| v.len()).unwrap_or(0);
        Ok(evaluate(&qv.concat(), &cv.concat(), dim, &self.relevant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_ranks() {
        // ranks 1, 2, 11: MRR = (1 + 1/2 + 0)/3, R@1 = 1/3, R@10 = 2/3,
        // nDCG = (1 + 1/log2(3))/3.
        let m = metrics_from_ranks(&[1, 2, 11], 20);
        assert!((m.mrr_at_10 - 0.5).abs() < 1e-12);
        assert!((m.recall_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.recall_at_10 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg_at_10 - (1.0 + 1.0 / 3f64.log2()) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ranks_from_scores_and_gemm_scores() {
        // 2 queries, 3 candidates, dim 2.
        let q = [1.0, 0.0, 0.0, 1.0];
        let c = [0.9, 0.1, 0.2, 0.8, 0.5, 0.5];
        let s = score_matrix(&q, &c, 2);
        assert_eq!(s, vec![0.9, 0.2, 0.5, 0.1, 0.8, 0.5]);
        assert_eq!(ranks(&s, 3, &[0, 2]), vec![1, 2]);
        let m = evaluate(&q, &c, 2, &[0, 2]);
        assert_eq!(m.recall_at_1, 0.5);
        assert_eq!(top_k(&q[..2], &c, 2, 2), vec![(0, 0.9), (2, 0.5)]);
    }

    #[test]
    fn eval_set_dedupes_candidates() {
        let set = EvalSet::from_records(vec![
            ("q1".to_owned(), "a".to_owned(), Some("n".to_owned())),
            ("q2".to_owned(), "a".to_owned(), None),
            ("q3".to_owned(), "b".to_owned(), None),
        ]);
        assert_eq!(set.candidates, vec!["a", "n", "b"]);
        assert_eq!(set.relevant, vec![0, 0, 2]);
        // One-hot "embeddings" by first letter: every query finds its positive first.
        let m = set
            .evaluate(|texts| -> Result<Vec<Vec<f32>>, ()> {
                Ok(texts
                    .iter()
                    .map(|t| match t {
                        &"q1" | &"q2" | &"a" => vec![1.0, 0.0],
                        &"q3" | &"b" => vec![0.0, 1.0],
                        _ => vec![0.5, 0.0],
                    })
                    .collect())
            })
            .unwrap();
        assert_eq!(m.recall_at_1, 1.0);
        assert_eq!(m.candidates, 3);
    }
}
