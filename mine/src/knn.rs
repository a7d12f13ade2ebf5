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

use crate::error::MineError;
use crate::store::{rows_within, Vectors};

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
    /// HNSW graphs over the corpus (usearch; built once per search): one graph, or one per
    /// `shard_size` consecutive rows (0: one), built in parallel. Each graph is built on one
    /// thread, so the same inputs give the same graphs whatever the threads; each query explores
    /// `max(ef_search, k)` candidates in every graph.
    Hnsw {
        ef_construction: usize,
        ef_search: usize,
        shard_size: usize,
    },
}

/// Block sizes of the exact search (memory per thread is `query_block × corpus_block` floats),
/// the index, and the memory budget: vectors past half of it spill to disk (see
/// [`crate::store`]), and a search holds as many queries at once as fit in the other half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    pub query_block: usize,
    pub corpus_block: usize,
    pub index: Index,
    /// Bytes.
    pub memory: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            query_block: 256,
            corpus_block: 4096,
            index: Index::Exact,
            memory: 4 << 30,
        }
    }
}

impl SearchOptions {
    /// Queries a search holds at once (a whole number of query blocks), each with its vector
    /// and up to `2k` hits, beside one corpus block and each thread's scores.
    pub fn queries_at_once(&self, dim: usize, k: usize) -> usize {
        let qb = self.query_block.max(1);
        let cb = self.corpus_block.max(1);
        let per_query = dim * 4 + 2 * k * std::mem::size_of::<Hit>();
        let fixed = cb * dim * 4 + rayon::current_num_threads() * qb * cb * 4;
        rows_within(self.memory, per_query, fixed, qb)
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

/// For each of `query_rows`, the `k` best rows of `vectors[corpus]` by dot product, best first
/// ([`better`]); `Hit::index` counts from `corpus.start`. On all rayon threads.
pub fn top_k(
    vectors: &dyn Vectors,
    query_rows: &[u32],
    corpus: Range<usize>,
    k: usize,
    options: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Hit>>, MineError> {
    let mut out = Vec::with_capacity(query_rows.len());
    top_k_each(
        vectors,
        query_rows,
        corpus,
        k,
        options,
        progress,
        &mut |_, hits| {
            out.extend(hits);
            Ok(())
        },
    )?;
    Ok(out)
}

/// As [`top_k`], handing the hits to `each` a group of queries at a time (with the position in
/// `query_rows` of the group's first), so that a caller can reduce them before the next group:
/// memory then follows `options.memory`, not the number of queries.
pub fn top_k_each(
    vectors: &dyn Vectors,
    query_rows: &[u32],
    corpus: Range<usize>,
    k: usize,
    options: SearchOptions,
    progress: &dyn Progress,
    each: &mut dyn FnMut(usize, Vec<Vec<Hit>>) -> Result<(), MineError>,
) -> Result<(), MineError> {
    let k = k.min(corpus.len());
    let at_once = options.queries_at_once(vectors.dim(), k);
    if k == 0 {
        for (g, group) in query_rows.chunks(at_once).enumerate() {
            each(g * at_once, vec![Vec::new(); group.len()])?;
        }
        return Ok(());
    }
    let graph = match options.index {
        Index::Exact => None,
        Index::Hnsw {
            ef_construction,
            ef_search,
            shard_size,
        } => Some(HnswShards::build(
            vectors,
            corpus.clone(),
            shard_size,
            (ef_construction, ef_search.max(k)),
            options.corpus_block,
            progress,
        )?),
    };
    let title = if graph.is_some() {
        "searching (HNSW)"
    } else {
        "searching"
    };
    progress.begin(title, Some(query_rows.len() as u64), Unit::Items);
    let mut queries = Vec::new();
    for (g, group) in query_rows.chunks(at_once).enumerate() {
        let hits = match &graph {
            Some(graph) => graph.top_k(vectors, group, &corpus, k, progress)?,
            None => {
                vectors.gather(group, 0, &mut queries)?;
                exact_group(vectors, &queries, corpus.clone(), k, options, progress)?
            }
        };
        each(g * at_once, hits)?;
    }
    progress.finish();
    Ok(())
}

/// The exact top `k` of a group of queries (`queries`: their vectors): the corpus read once, a
/// block at a time, each block scored against every query block in parallel. Query and corpus
/// blocks sit at the same offsets whatever the group size, so every score comes from the same
/// product (and ties resolve the same way) however much memory the search was given.
fn exact_group(
    vectors: &dyn Vectors,
    queries: &[f32],
    corpus: Range<usize>,
    k: usize,
    options: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Hit>>, MineError> {
    let dim = vectors.dim();
    let (qb, cb) = (options.query_block.max(1), options.corpus_block.max(1));
    let n_queries = queries.len() / dim;
    let mut tops: Vec<TopK> = (0..n_queries).map(|_| TopK::new(k)).collect();
    let mut buf = Vec::new();
    let blocks = corpus.len().div_ceil(cb);
    let mut reported = 0;
    for (b, start) in corpus.clone().step_by(cb).enumerate() {
        let end = (start + cb).min(corpus.end);
        let n = end - start;
        let block = vectors.block(start..end, &mut buf)?;
        let first = (start - corpus.start) as u32;
        tops.par_chunks_mut(qb)
            .zip(queries.par_chunks(qb * dim))
            .for_each_init(Vec::new, |scores, (tops, q)| {
                scores.resize(tops.len() * n, 0f32);
                score_block(q, block, dim, &mut scores[..tops.len() * n]);
                for (r, top) in tops.iter_mut().enumerate() {
                    top.offer_row(&scores[r * n..(r + 1) * n], first);
                }
            });
        // Progress in queries: this group's share of the corpus searched so far.
        let done = n_queries * (b + 1) / blocks;
        progress.advance((done - reported) as u64);
        reported = done;
    }
    Ok(tops.into_iter().map(TopK::into_sorted).collect())
}

/// HNSW graphs over consecutive ranges of `vectors[corpus]` (usearch indexes, inner product on
/// the unit vectors), each keyed from its range's first row.
struct HnswShards {
    /// (first row of the shard, counted from `corpus.start`; its graph)
    graphs: Vec<(usize, usearch::Index)>,
}

impl HnswShards {
    /// The shards (`shard_size` rows each; 0: one for the whole corpus), built in parallel,
    /// each on one thread.
    fn build(
        vectors: &dyn Vectors,
        corpus: Range<usize>,
        shard_size: usize,
        (ef_construction, ef_search): (usize, usize),
        read_block: usize,
        progress: &dyn Progress,
    ) -> Result<Self, MineError> {
        let size = if shard_size == 0 {
            corpus.len()
        } else {
            shard_size
        };
        let ranges: Vec<Range<usize>> = corpus
            .clone()
            .step_by(size.max(1))
            .map(|start| start..(start + size).min(corpus.end))
            .collect();
        progress.begin(
            &format!("building {} HNSW graph(s) (one thread each)", ranges.len()),
            Some(corpus.len() as u64),
            Unit::Items,
        );
        let graphs = ranges
            .par_iter()
            .map(|r| {
                let graph = build_graph(
                    vectors,
                    r.clone(),
                    ef_construction,
                    ef_search,
                    read_block,
                    progress,
                )?;
                Ok((r.start - corpus.start, graph))
            })
            .collect::<Result<Vec<_>, MineError>>()?;
        progress.finish();
        Ok(HnswShards { graphs })
    }

    /// Each query's best `k` rows among every graph's candidates, re-scored exactly, best first.
    fn top_k(
        &self,
        vectors: &dyn Vectors,
        query_rows: &[u32],
        corpus: &Range<usize>,
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>, MineError> {
        query_rows
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(query, block, scores), &q| {
                    let query = vectors.row(q as usize, query)?;
                    let mut rows: Vec<u32> = Vec::new();
                    for (first, graph) in &self.graphs {
                        let found = graph.search(query, k).map_err(hnsw_error)?;
                        rows.extend(found.keys.iter().map(|&key| (first + key as usize) as u32));
                    }
                    // Re-scored by the exact search's own product (to float rounding: the block
                    // shape differs), not by the graph's distances.
                    vectors.gather(&rows, corpus.start, block)?;
                    scores.clear();
                    scores.resize(rows.len(), 0f32);
                    score_block(query, block, vectors.dim(), scores);
                    let mut hits: Vec<Hit> = rows
                        .iter()
                        .zip(scores.iter())
                        .map(|(&index, &score)| Hit { index, score })
                        .collect();
                    hits.sort_by(better);
                    hits.truncate(k);
                    progress.advance(1);
                    Ok(hits)
                },
            )
            .collect()
    }
}

/// One graph over `vectors[rows]`, keys from 0. The rows go in in order from one thread, into an
/// index with one thread context, whose level generator has a fixed seed: the same inputs
/// always give the same graph.
fn build_graph(
    vectors: &dyn Vectors,
    rows: Range<usize>,
    ef_construction: usize,
    ef_search: usize,
    read_block: usize,
    progress: &dyn Progress,
) -> Result<usearch::Index, MineError> {
    let dim = vectors.dim();
    let options = usearch::IndexOptions {
        dimensions: dim,
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
        .reserve_capacity_and_threads(rows.len(), 1)
        .map_err(hnsw_error)?;
    let mut buf = Vec::new();
    let read_block = read_block.max(1);
    for start in rows.clone().step_by(read_block) {
        let end = (start + read_block).min(rows.end);
        let block = vectors.block(start..end, &mut buf)?;
        for (r, v) in block.chunks_exact(dim).enumerate() {
            index
                .add((start - rows.start + r) as u64, v)
                .map_err(hnsw_error)?;
        }
        progress.advance((end - start) as u64);
    }
    // Searches only read the graph: one context per rayon thread.
    index
        .reserve_capacity_and_threads(rows.len(), rayon::current_num_threads())
        .map_err(hnsw_error)?;
    Ok(index)
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
