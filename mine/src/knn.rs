//! Nearest neighbours by dot product (cosine on unit vectors). Exact by default: blocked matrix
//! products, a block of queries against a block of the corpus at a time, so memory is
//! `threads × query_block × corpus_block` scores, never a queries × corpus matrix. For corpora
//! of millions, an approximate HNSW index ([`Index::Hnsw`], the `instant-distance` crate) whose
//! candidates are re-scored by the same matrix product, so scores match the exact search's (to
//! float rounding) wherever the index finds the same rows.

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

/// How neighbours are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Index {
    /// Every corpus row scored: the true top k.
    #[default]
    Exact,
    /// An HNSW graph over the corpus (built once per search, on one thread so that the same
    /// inputs give the same graph); each query explores `max(ef_search, k)` candidates.
    Hnsw {
        ef_construction: usize,
        ef_search: usize,
        seed: u64,
    },
}

/// Block sizes of the exact search (memory per thread is `query_block × corpus_block` floats)
/// and the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    pub query_block: usize,
    pub corpus_block: usize,
    pub index: Index,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            query_block: 256,
            corpus_block: 4096,
            index: Index::Exact,
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

/// Copies rows `rows` (offset by `first`) of `emb` into `out`, one contiguous block.
fn gather_into(
    emb: &Embeddings,
    rows: impl IntoIterator<Item = u32>,
    first: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    for r in rows {
        out.extend_from_slice(emb.row(first + r as usize));
    }
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
    if let Index::Hnsw {
        ef_construction,
        ef_search,
        seed,
    } = options.index
    {
        // The crate reports no progress while it builds: a phase without a total (a spinner).
        progress.begin("building the HNSW graph (one thread)", None, Unit::Items);
        let graph = HnswGraph::build(emb, corpus, ef_construction, ef_search.max(k), seed);
        progress.finish();
        return graph.top_k(emb, query_rows, k, progress);
    }
    let dim = emb.dim;
    let qb = options.query_block.max(1);
    let cb = options.corpus_block.max(1);
    progress.begin("searching", Some(query_rows.len() as u64), Unit::Items);
    let blocks: Vec<Vec<Vec<Hit>>> = query_rows
        .par_chunks(qb)
        .map(|rows| {
            let mut queries = Vec::with_capacity(rows.len() * emb.dim);
            gather_into(emb, rows.iter().copied(), 0, &mut queries);
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

/// A corpus row as an HNSW point: its index within the searched range and its unit vector.
#[derive(Clone)]
struct Row<'a> {
    index: u32,
    v: &'a [f32],
}

impl instant_distance::Point for Row<'_> {
    /// Cosine distance of unit vectors.
    fn distance(&self, other: &Self) -> f32 {
        1.0 - crate::embed::dot(self.v, other.v)
    }
}

/// An HNSW graph over `emb[corpus]`.
struct HnswGraph<'a> {
    hnsw: instant_distance::Hnsw<Row<'a>>,
    /// `corpus.start`: a point's `index` counts from it.
    first: usize,
}

impl<'a> HnswGraph<'a> {
    fn build(
        emb: &'a Embeddings,
        corpus: Range<usize>,
        ef_construction: usize,
        ef_search: usize,
        seed: u64,
    ) -> Self {
        let points: Vec<Row<'a>> = corpus
            .clone()
            .map(|r| Row {
                index: (r - corpus.start) as u32,
                v: emb.row(r),
            })
            .collect();
        let builder = instant_distance::Builder::default()
            .ef_construction(ef_construction.max(1))
            .ef_search(ef_search.max(1))
            .seed(seed);
        // The crate inserts points from rayon threads, in an order that depends on timing: one
        // thread makes the graph, and so the mined dataset, reproducible.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build();
        let (hnsw, _) = match one {
            Ok(pool) => pool.install(|| builder.build_hnsw(points)),
            Err(_) => builder.build_hnsw(points),
        };
        HnswGraph {
            hnsw,
            first: corpus.start,
        }
    }

    /// Each query's best `k` rows among the graph's candidates, re-scored exactly, best first.
    fn top_k(
        &self,
        emb: &Embeddings,
        query_rows: &[u32],
        k: usize,
        progress: &dyn Progress,
    ) -> Vec<Vec<Hit>> {
        progress.begin(
            "searching (HNSW)",
            Some(query_rows.len() as u64),
            Unit::Items,
        );
        let first = self.first;
        let out = query_rows
            .par_iter()
            .map_init(
                || (instant_distance::Search::default(), Vec::new(), Vec::new()),
                |(search, block, scores), &q| {
                    let query = Row {
                        index: u32::MAX,
                        v: emb.row(q as usize),
                    };
                    let found: Vec<&Row> =
                        self.hnsw.search(&query, search).map(|i| i.point).collect();
                    // Re-scored by the exact search's own product (to float rounding: the block
                    // shape differs), not by the graph's distances.
                    gather_into(emb, found.iter().map(|r| r.index), first, block);
                    scores.clear();
                    scores.resize(found.len(), 0f32);
                    score_block(query.v, block, emb.dim, scores);
                    let mut hits: Vec<Hit> = found
                        .iter()
                        .zip(scores.iter())
                        .map(|(r, &score)| Hit {
                            index: r.index,
                            score,
                        })
                        .collect();
                    hits.sort_by(better);
                    hits.truncate(k);
                    progress.advance(1);
                    hits
                },
            )
            .collect();
        progress.finish();
        out
    }
}
