//! Nearest neighbours by dot product (cosine on unit vectors). Exact by default: blocked matrix
//! products, a block of queries against a block of the corpus at a time, so memory is
//! `threads × query_block × corpus_block` scores, never a queries × corpus matrix. For corpora
//! of millions, an approximate HNSW index ([`Index::Hnsw`], the `usearch` crate) whose
//! candidates are re-scored by the same matrix product, so scores match the exact search's (to
//! float rounding) wherever the index finds the same rows.

use std::cmp::Ordering;
use std::ops::Range;

use encoder::linalg::{gemm, MatRef, Parallelism};
use rayon::prelude::*;
use schemas::{Progress, Unit};

use crate::embed::Embeddings;
use crate::error::MineError;

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
    /// An HNSW graph over the corpus (usearch; built once per search, on one thread so that
    /// the same inputs give the same graph); each query explores `max(ef_search, k)` candidates.
    Hnsw {
        ef_construction: usize,
        ef_search: usize,
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
) -> Result<Vec<Vec<Hit>>, MineError> {
    let k = k.min(corpus.len());
    if k == 0 {
        return Ok(vec![Vec::new(); query_rows.len()]);
    }
    if let Index::Hnsw {
        ef_construction,
        ef_search,
    } = options.index
    {
        let graph = HnswGraph::build(
            emb,
            corpus.clone(),
            ef_construction,
            ef_search.max(k),
            progress,
        )?;
        return graph.top_k(emb, query_rows, corpus, k, progress);
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
    Ok(blocks.into_iter().flatten().collect())
}

/// An HNSW graph over `emb[corpus]`: a usearch index (inner product on the unit vectors), keys
/// counting from `corpus.start`.
struct HnswGraph {
    index: usearch::Index,
}

impl HnswGraph {
    /// Inserts the rows in order from one thread: usearch then uses one context, whose level
    /// generator has a fixed seed, so the same inputs always give the same graph.
    fn build(
        emb: &Embeddings,
        corpus: Range<usize>,
        ef_construction: usize,
        ef_search: usize,
        progress: &dyn Progress,
    ) -> Result<Self, MineError> {
        let options = usearch::IndexOptions {
            dimensions: emb.dim,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F32,
            connectivity: 0,
            expansion_add: ef_construction.max(1),
            expansion_search: ef_search.max(1),
            multi: false,
        };
        let mut index = usearch::Index::new(&options).map_err(hnsw_error)?;
        // Most of a build is distances; usearch's own (built without NumKong's kernels) are
        // compiled for the baseline CPU. Ours run at the widest SIMD level found.
        let dim = emb.dim;
        index.change_metric::<f32>(Box::new(move |a, b| {
            // SAFETY: usearch hands the metric two vectors of the index's `dim` floats.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(a, dim),
                    std::slice::from_raw_parts(b, dim),
                )
            };
            1.0 - metric_dot(a, b)
        }));
        index
            .reserve_capacity_and_threads(corpus.len(), 1)
            .map_err(hnsw_error)?;
        progress.begin(
            "building the HNSW graph (one thread)",
            Some(corpus.len() as u64),
            Unit::Items,
        );
        for (key, r) in corpus.clone().enumerate() {
            index.add(key as u64, emb.row(r)).map_err(hnsw_error)?;
            if key % 1024 == 1023 {
                progress.advance(1024);
            }
        }
        progress.advance(corpus.len() as u64 % 1024);
        progress.finish();
        // Searches only read the graph: one context per rayon thread.
        index
            .reserve_capacity_and_threads(corpus.len(), rayon::current_num_threads())
            .map_err(hnsw_error)?;
        Ok(HnswGraph { index })
    }

    /// Each query's best `k` rows among the graph's candidates, re-scored exactly, best first.
    fn top_k(
        &self,
        emb: &Embeddings,
        query_rows: &[u32],
        corpus: Range<usize>,
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>, MineError> {
        progress.begin(
            "searching (HNSW)",
            Some(query_rows.len() as u64),
            Unit::Items,
        );
        let out = query_rows
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(block, scores), &q| {
                    let query = emb.row(q as usize);
                    let found = self.index.search(query, k).map_err(hnsw_error)?;
                    let rows: Vec<u32> = found.keys.iter().map(|&key| key as u32).collect();
                    // Re-scored by the exact search's own product (to float rounding: the block
                    // shape differs), not by the graph's distances.
                    gather_into(emb, rows.iter().copied(), corpus.start, block);
                    scores.clear();
                    scores.resize(rows.len(), 0f32);
                    score_block(query, block, emb.dim, scores);
                    let mut hits: Vec<Hit> = rows
                        .iter()
                        .zip(scores.iter())
                        .map(|(&index, &score)| Hit { index, score })
                        .collect();
                    hits.sort_by(better);
                    progress.advance(1);
                    Ok(hits)
                },
            )
            .collect();
        progress.finish();
        out
    }
}

/// The graph's dot product, with AVX2 and FMA where the CPU has them (a build spends most of
/// its time here, and LLVM vectorised the portable loops only two lanes wide).
fn metric_dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if encoder::simd::level() != encoder::simd::Level::Baseline {
        // SAFETY: the level says this CPU has AVX2 and FMA.
        return unsafe { dot_avx2(a, b) };
    }
    crate::embed::dot(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (loads): every load reads 8 floats below `n`.
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * j));
            let y = _mm256_loadu_ps(pb.add(i + 8 * j));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
    _mm_cvtss_f32(one) + tail
}

/// usearch reports C++ exceptions (allocation failures, mostly) as text.
fn hnsw_error(e: impl std::fmt::Display) -> MineError {
    MineError::Index(e.to_string())
}
