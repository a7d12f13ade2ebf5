//! Filters that keep or drop whole rows: the consistency filter (is the positive found by the
//! model?) and semantic dedup (is this text a near copy of an earlier kept one?).

use std::collections::BTreeMap;

use rayon::prelude::*;
use schemas::{Arity, PairRecord, Progress, Unit};
use serde::Serialize;

use crate::error::{MineError, Result};
use crate::knn::{score_block, top_k_each, Hit, SearchOptions};
use crate::negatives::positive_scores;
use crate::problem::Problem;
use crate::source::PairSource;
use crate::store::{rows_within, Vectors};
use crate::texts::TextStore;
use crate::Curated;

/// Per input row: how many candidates that are not positives of its anchor score strictly
/// higher than its positive (0 = the positive is the anchor's best match). Counted up to
/// `top_k`, so `rank < top_k` means "the positive is in the anchor's top `top_k`".
pub fn positive_ranks(
    problem: &Problem,
    vectors: &dyn Vectors,
    top_k_: usize,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<usize>> {
    let (starts, rows) = rows_by_query(problem);
    let mut ranks = vec![0usize; problem.row_query.len()];
    // Enough hits that `top_k_` non-positives are among them whenever the corpus has them.
    let k = top_k_ + problem.max_positives();
    top_k_each(
        vectors,
        &problem.queries,
        0..problem.corpus_len,
        k,
        search,
        progress,
        &mut |first, hits| {
            let group: Vec<Vec<(u32, usize)>> = hits
                .par_iter()
                .enumerate()
                .map_init(Vec::new, |buf, (i, hits)| {
                    let q = first + i;
                    let rows = &rows[starts[q] as usize..starts[q + 1] as usize];
                    ranks_of(problem, vectors, q, hits, rows, buf)
                })
                .collect::<Result<_>>()?;
            for (row, rank) in group.into_iter().flatten() {
                ranks[row as usize] = rank;
            }
            Ok(())
        },
    )?;
    Ok(ranks)
}

/// The rank of each of `rows`' positives among query `q`'s `hits`.
fn ranks_of(
    problem: &Problem,
    vectors: &dyn Vectors,
    q: usize,
    hits: &[Hit],
    rows: &[u32],
    buf: &mut Vec<f32>,
) -> Result<Vec<(u32, usize)>> {
    let mut out = Vec::with_capacity(rows.len());
    for &row in rows {
        let pos = problem.row_positive[row as usize];
        // The positive's score as the search computed it, so it compares exactly with the
        // other hits; the plain dot product when it fell outside them.
        let score = match hits.iter().find(|h| h.index == pos) {
            Some(h) => h.score,
            None => positive_scores(vectors, problem.queries[q], &[pos], buf)?[0],
        };
        let rank = hits
            .iter()
            .filter(|h| h.score > score && !problem.positives[q].contains(&h.index))
            .count();
        out.push((row, rank));
    }
    Ok(out)
}

/// Input rows grouped by query: query `q`'s rows are `rows[starts[q]..starts[q + 1]]`.
fn rows_by_query(problem: &Problem) -> (Vec<u32>, Vec<u32>) {
    let mut starts = vec![0u32; problem.queries.len() + 1];
    for &q in &problem.row_query {
        starts[q as usize + 1] += 1;
    }
    for q in 0..problem.queries.len() {
        starts[q + 1] += starts[q];
    }
    let mut next = starts.clone();
    let mut rows = vec![0u32; problem.row_query.len()];
    for (row, &q) in problem.row_query.iter().enumerate() {
        rows[next[q as usize] as usize] = row as u32;
        next[q as usize] += 1;
    }
    (starts, rows)
}

/// Keeps the rows whose positive ranks in its anchor's top `top_k` ([`positive_ranks`]; one
/// rank per input row, of `arity` columns).
pub fn consistency(ranks: &[usize], top_k_: usize, arity: Arity) -> Curated {
    let mut keep = Vec::new();
    let mut dropped = BTreeMap::new();
    for (row, &rank) in ranks.iter().enumerate() {
        if rank < top_k_ {
            keep.push(row as u32);
        } else {
            *dropped
                .entry(format!("positive not in the anchor's top {top_k_}"))
                .or_insert(0) += 1;
        }
    }
    Curated::kept(ranks.len(), keep, arity, dropped)
}

/// Which text of a row semantic dedup compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupOn {
    Anchor,
    Positive,
}

impl DedupOn {
    pub fn text(self, p: &PairRecord) -> &str {
        match self {
            DedupOn::Anchor => &p.anchor,
            DedupOn::Positive => &p.positive,
        }
    }
}

/// The `on` texts of a dataset, distinct (first-seen order), and each row's id among them.
#[derive(Debug)]
pub struct DedupTexts {
    pub texts: TextStore,
    /// Per input row: its `on` text's id.
    pub ids: Vec<u32>,
    /// The input rows' columns.
    pub arity: Arity,
}

/// Reads the `on` texts of `pairs` into `texts`.
pub fn dedup_texts(
    pairs: &dyn PairSource,
    on: DedupOn,
    mut texts: TextStore,
) -> Result<DedupTexts> {
    let mut ids = Vec::new();
    let mut arity = None;
    pairs.for_each_pair(&mut |p| {
        arity.get_or_insert(p.arity());
        ids.push(texts.intern(on.text(p))?);
        Ok(())
    })?;
    let arity = arity.ok_or_else(|| MineError::Options("no rows to curate".into()))?;
    Ok(DedupTexts { texts, ids, arity })
}

/// Greedy semantic dedup over distinct texts in order: a text is kept unless its cosine to an
/// earlier kept text is ≥ `threshold`. Exact, in bounded memory: texts go a group at a time (as
/// many as `search.memory` allows); the kept texts' vectors are compared in chunks of
/// `corpus_block` kept texts. Chunks already full when a group starts are read once for the
/// whole group; the rest (the last chunk, and what the group keeps) are held in memory. Every
/// block of a group meets the same chunks, in the same product, as it would with no budget.
pub fn keep_distinct(
    vectors: &dyn Vectors,
    threshold: f32,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<bool>> {
    if !(threshold > -1.0 && threshold <= 1.0) {
        return Err(MineError::Options(format!(
            "--threshold must be in (-1, 1], not {threshold}"
        )));
    }
    let (n, dim) = (vectors.rows(), vectors.dim());
    let (qb, cb) = (search.query_block.max(1), search.corpus_block.max(1));
    // Per text of a group: its vector, its best score, and room to hold it if kept.
    let fixed = cb * dim * 4 * 2 + rayon::current_num_threads() * qb * cb * 4;
    let at_once = rows_within(search.memory, 2 * dim * 4 + 4, fixed, qb);
    let mut kept = KeptTexts {
        rows: Vec::new(),
        tail: Vec::new(),
        tail_from: 0,
        chunk: cb,
    };
    let mut keep = vec![false; n];
    let mut buf = Vec::new();
    progress.begin("dedup", Some(n as u64), Unit::Items);
    for start in (0..n).step_by(at_once) {
        let end = (start + at_once).min(n);
        let group = vectors.block(start..end, &mut buf)?;
        let mut best = kept.best_in_full_chunks(vectors, group, qb)?;
        for (b, block) in group.chunks(qb * dim).enumerate() {
            let first = start + b * qb;
            let best = &mut best[b * qb..b * qb + block.len() / dim];
            kept.raise_by_tail(block, best);
            for (r, row) in keep_in_block(block, dim, best, threshold) {
                keep[first + r] = true;
                kept.push((first + r) as u32, row);
            }
            progress.advance(best.len() as u64);
        }
    }
    progress.finish();
    Ok(keep)
}

/// The texts kept so far, as chunks of `chunk` texts: full chunks (before `tail_from`) are read
/// back from the vectors when needed; the texts after them are held in `tail`.
struct KeptTexts {
    rows: Vec<u32>,
    tail: Vec<f32>,
    /// Position in `rows` of the tail's first text (a multiple of `chunk`).
    tail_from: usize,
    chunk: usize,
}

impl KeptTexts {
    /// Each `group` row's best score against the chunks full at this point (each read back once,
    /// unless still in the tail), every query block of the group in parallel; the tail then
    /// drops what they hold.
    fn best_in_full_chunks(
        &mut self,
        vectors: &dyn Vectors,
        group: &[f32],
        qb: usize,
    ) -> Result<Vec<f32>> {
        let dim = vectors.dim();
        let mut best = vec![f32::NEG_INFINITY; group.len() / dim];
        let full = self.rows.len() / self.chunk * self.chunk;
        let mut read = Vec::new();
        for c in (0..full).step_by(self.chunk) {
            let chunk: &[f32] = if c < self.tail_from {
                vectors.gather(&self.rows[c..c + self.chunk], 0, &mut read)?;
                &read
            } else {
                &self.tail[(c - self.tail_from) * dim..][..self.chunk * dim]
            };
            best.par_chunks_mut(qb)
                .zip(group.par_chunks(qb * dim))
                .for_each(|(best, block)| raise(block, chunk, dim, best));
        }
        self.tail.drain(..(full - self.tail_from) * dim);
        self.tail_from = full;
        Ok(best)
    }

    /// Raises `best` (of `block`'s rows) by the tail's chunks, in parallel.
    fn raise_by_tail(&self, block: &[f32], best: &mut [f32]) {
        let dim = block.len() / best.len();
        let found = self
            .tail
            .par_chunks(self.chunk * dim)
            .map(|chunk| {
                let mut b = vec![f32::NEG_INFINITY; best.len()];
                raise(block, chunk, dim, &mut b);
                b
            })
            .reduce(
                || vec![f32::NEG_INFINITY; best.len()],
                |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
            );
        for (b, f) in best.iter_mut().zip(found) {
            *b = b.max(f);
        }
    }

    fn push(&mut self, row: u32, vector: &[f32]) {
        self.rows.push(row);
        self.tail.extend_from_slice(vector);
    }
}

/// `best[r] = max(best[r], max_j block[r] · chunk[j])` (max is exact in any order, so the result
/// does not depend on threads).
fn raise(block: &[f32], chunk: &[f32], dim: usize, best: &mut [f32]) {
    let (m, n) = (block.len() / dim, chunk.len() / dim);
    let mut s = vec![0f32; m * n];
    score_block(block, chunk, dim, &mut s);
    for (r, b) in best.iter_mut().enumerate() {
        *b = s[r * n..(r + 1) * n].iter().copied().fold(*b, f32::max);
    }
}

/// The rows of `block` kept, in order, with their vectors: a row is kept unless its `best` score
/// to earlier kept texts, or its score to a row kept before it in the block, is ≥ `threshold`.
fn keep_in_block<'b>(
    block: &'b [f32],
    dim: usize,
    best: &[f32],
    threshold: f32,
) -> Vec<(usize, &'b [f32])> {
    let m = best.len();
    let mut within = vec![0f32; m * m];
    score_block(block, block, dim, &mut within);
    let mut kept_here: Vec<usize> = Vec::new();
    for r in 0..m {
        let dup = best[r] >= threshold || kept_here.iter().any(|&k| within[r * m + k] >= threshold);
        if !dup {
            kept_here.push(r);
        }
    }
    kept_here
        .into_iter()
        .map(|r| (r, &block[r * dim..(r + 1) * dim]))
        .collect()
}

/// Rows kept by dedup: the first row of each kept text; later rows with the same text are exact
/// duplicates, rows of a text too close to a kept one near duplicates.
pub fn dedup(texts: &DedupTexts, keep_text: &[bool], on: DedupOn) -> Curated {
    let col = match on {
        DedupOn::Anchor => "anchor",
        DedupOn::Positive => "positive",
    };
    let mut seen = vec![false; keep_text.len()];
    let mut keep = Vec::new();
    let mut dropped = BTreeMap::new();
    for (row, &id) in texts.ids.iter().enumerate() {
        let id = id as usize;
        let reason = if !keep_text[id] {
            Some(format!("near-duplicate {col}"))
        } else if seen[id] {
            Some(format!("exact duplicate {col}"))
        } else {
            None
        };
        match reason {
            Some(r) => *dropped.entry(r).or_insert(0) += 1,
            None => {
                seen[id] = true;
                keep.push(row as u32);
            }
        }
    }
    Curated::kept(texts.ids.len(), keep, texts.arity, dropped)
}
