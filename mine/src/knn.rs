//! Exact nearest neighbours by blocked matrix products: a block of queries against a block of
//! the corpus at a time, so memory is `threads × query_block × corpus_block` scores, never a
//! queries × corpus matrix.

use std::cmp::Ordering;
use std::ops::Range;

use encoder::linalg::{gemm, MatRef, Parallelism};
use rayon::prelude::*;
use schemas::{Progress, Unit};

use crate::embed::Embeddings;

/// A corpus row and its score against a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row within the searched corpus range (0 = its first row).
    pub index: u32,
    pub score: f32,
}

/// Best first: higher score, then lower index (so ties resolve the same way every run).
pub fn better(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.index.cmp(&b.index))
}

/// Block sizes of the search: memory per thread is `query_block × corpus_block` floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    pub query_block: usize,
    pub corpus_block: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            query_block: 256,
            corpus_block: 4096,
        }
    }
}

/// The `k` best hits seen so far, kept in a buffer pruned back to `k` when it reaches `2k`.
struct TopK {
    k: usize,
    buf: Vec<Hit>,
    /// The k-th best score after the last prune: anything below can never enter.
    floor: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::with_capacity(2 * k),
            floor: f32::NEG_INFINITY,
        }
    }

    fn offer_row(&mut self, scores: &[f32], first_index: u32) {
        for (j, &score) in scores.iter().enumerate() {
            if score < self.floor {
                continue;
            }
            self.buf.push(Hit {
                index: first_index + j as u32,
                score,
            });
            if self.buf.len() >= 2 * self.k {
                self.prune();
            }
        }
    }

    fn prune(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, better);
            self.buf.truncate(self.k);
        }
        if self.buf.len() == self.k {
            self.floor = self
                .buf
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
        }
    }

    fn into_sorted(mut self) -> Vec<Hit> {
        self.buf.sort_unstable_by(better);
        self.buf.truncate(self.k);
        self.buf
    }
}

/// Copies rows `rows` of `emb` into one contiguous block.
fn gather(emb: &Embeddings, rows: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * emb.dim);
    for &r in rows {
        out.extend_from_slice(emb.row(r as usize));
    }
    out
}

/// `scores[i, j] = queries[i] · corpus[j]` for a block (`scores` row-major, `n` columns).
pub(crate) fn score_block(queries: &[f32], corpus: &[f32], dim: usize, scores: &mut [f32]) {
    let m = queries.len() / dim;
    let n = corpus.len() / dim;
    // The corpus block, read transposed: element (k, j) of the right-hand side is corpus[j][k].
    let rhs = MatRef {
        data: corpus,
        row_stride: 1,
        col_stride: dim,
    };
    // One thread per product: the parallelism is over query blocks, and a product computed the
    // same way every time keeps scores (and so ties) identical across thread counts.
    gemm(
        (m, n, dim),
        scores,
        n,
        MatRef::rows(queries, dim),
        rhs,
        false,
        1.0,
        Parallelism::None,
    );
}

/// For each of `query_rows` (rows of `emb`), the `k` best rows of `emb[corpus]` by dot product,
/// best first ([`better`]); `Hit::index` counts from `corpus.start`. On all rayon threads.
pub fn top_k(
    emb: &Embeddings,
    query_rows: &[u32],
    corpus: Range<usize>,
    k: usize,
    options: SearchOptions,
    progress: &dyn Progress,
) -> Vec<Vec<Hit>> {
    let k = k.min(corpus.len());
    if k == 0 {
        return vec![Vec::new(); query_rows.len()];
    }
    let dim = emb.dim;
    let qb = options.query_block.max(1);
    let cb = options.corpus_block.max(1);
    progress.begin("searching", Some(query_rows.len() as u64), Unit::Items);
    let blocks: Vec<Vec<Vec<Hit>>> = query_rows
        .par_chunks(qb)
        .map(|rows| {
            let queries = gather(emb, rows);
            let mut tops: Vec<TopK> = rows.iter().map(|_| TopK::new(k)).collect();
            let mut scores = vec![0f32; rows.len() * cb.min(corpus.len())];
            for start in corpus.clone().step_by(cb) {
                let end = (start + cb).min(corpus.end);
                let n = end - start;
                score_block(
                    &queries,
                    emb.slice(start..end),
                    dim,
                    &mut scores[..rows.len() * n],
                );
                for (r, top) in tops.iter_mut().enumerate() {
                    top.offer_row(&scores[r * n..(r + 1) * n], (start - corpus.start) as u32);
                }
            }
            progress.advance(rows.len() as u64);
            tops.into_iter().map(TopK::into_sorted).collect()
        })
        .collect();
    progress.finish();
    blocks.into_iter().flatten().collect()
}
