//! Filters that keep or drop whole rows: the consistency filter (is the positive found by the
//! model?) and semantic dedup (is this text a near copy of an earlier kept one?).

use std::collections::BTreeMap;

use rayon::prelude::*;
use schemas::{PairRecord, Progress, Unit};
use serde::Serialize;

use crate::embed::{dot, Embeddings, TextTable};
use crate::error::{MineError, Result};
use crate::knn::{score_block, top_k, SearchOptions};
use crate::problem::Problem;
use crate::Curated;

/// Per input row: how many candidates that are not positives of its anchor score strictly
/// higher than its positive (0 = the positive is the anchor's best match). Counted up to
/// `top_k`, so `rank < top_k` means "the positive is in the anchor's top `top_k`".
pub fn positive_ranks(
    problem: &Problem,
    emb: &Embeddings,
    top_k_: usize,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<usize>> {
    // Enough hits that `top_k_` non-positives are among them whenever the corpus has them.
    let k = top_k_ + problem.max_positives();
    let hits = top_k(
        emb,
        &problem.queries,
        0..problem.corpus_len,
        k,
        search,
        progress,
    )?;
    Ok((0..problem.row_query.len())
        .into_par_iter()
        .map(|row| {
            let q = problem.row_query[row] as usize;
            let pos = problem.row_positive[row];
            let hits = &hits[q];
            // The positive's score as the search computed it, so it compares exactly with the
            // other hits; the plain dot product when it fell outside them.
            let score = hits
                .iter()
                .find(|h| h.index == pos)
                .map(|h| h.score)
                .unwrap_or_else(|| {
                    dot(emb.row(problem.queries[q] as usize), emb.row(pos as usize))
                });
            hits.iter()
                .filter(|h| h.score > score && !problem.positives[q].contains(&h.index))
                .count()
        })
        .collect())
}

/// Keeps the rows whose positive ranks in its anchor's top `top_k` ([`positive_ranks`]).
pub fn consistency<'p>(pairs: &'p [PairRecord], ranks: &[usize], top_k_: usize) -> Curated<'p> {
    let mut keep = Vec::new();
    let mut dropped = BTreeMap::new();
    for (row, &rank) in ranks.iter().enumerate().take(pairs.len()) {
        if rank < top_k_ {
            keep.push(row as u32);
        } else {
            *dropped
                .entry(format!("positive not in the anchor's top {top_k_}"))
                .or_insert(0) += 1;
        }
    }
    Curated::kept(pairs, keep, dropped)
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

/// The `on` texts of `pairs`, distinct (first-seen order), and each row's id among them.
pub fn dedup_texts(pairs: &[PairRecord], on: DedupOn) -> (TextTable<'_>, Vec<u32>) {
    let mut table = TextTable::new();
    let ids = pairs.iter().map(|p| table.intern(on.text(p))).collect();
    (table, ids)
}

/// Greedy semantic dedup over distinct texts in order: a text is kept unless its cosine to an
/// earlier kept text is ≥ `threshold`. Exact; memory beyond the embeddings is one block of
/// scores per thread (kept texts are read in place, never copied into a matrix).
pub fn keep_distinct(
    emb: &Embeddings,
    threshold: f32,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Vec<bool>> {
    if !(threshold > -1.0 && threshold <= 1.0) {
        return Err(MineError::Options(format!(
            "--threshold must be in (-1, 1], not {threshold}"
        )));
    }
    let n = emb.rows();
    let dim = emb.dim;
    let qb = search.query_block.max(1);
    let cb = search.corpus_block.max(1);
    let mut keep = vec![false; n];
    let mut kept: Vec<u32> = Vec::new();
    progress.begin("dedup", Some(n as u64), Unit::Items);
    for start in (0..n).step_by(qb) {
        let end = (start + qb).min(n);
        let block = emb.slice(start..end);
        let m = end - start;
        // Best cosine of each block row to any text kept before the block, over kept chunks in
        // parallel (max is exact in any order, so the result does not depend on threads).
        let best = kept
            .par_chunks(cb)
            .map(|chunk| {
                let mut gathered = Vec::with_capacity(chunk.len() * dim);
                for &k in chunk {
                    gathered.extend_from_slice(emb.row(k as usize));
                }
                let mut s = vec![0f32; m * chunk.len()];
                score_block(block, &gathered, dim, &mut s);
                (0..m)
                    .map(|r| {
                        s[r * chunk.len()..(r + 1) * chunk.len()]
                            .iter()
                            .copied()
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                    .collect::<Vec<f32>>()
            })
            .reduce(
                || vec![f32::NEG_INFINITY; m],
                |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
            );
        // Within the block, in order: against the rows of the block kept so far.
        let mut within = vec![0f32; m * m];
        score_block(block, block, dim, &mut within);
        let mut kept_here: Vec<usize> = Vec::new();
        for r in 0..m {
            let dup =
                best[r] >= threshold || kept_here.iter().any(|&k| within[r * m + k] >= threshold);
            if !dup {
                kept_here.push(r);
                keep[start + r] = true;
            }
        }
        kept.extend(kept_here.iter().map(|&r| (start + r) as u32));
        progress.advance(m as u64);
    }
    progress.finish();
    Ok(keep)
}

/// Rows kept by dedup: the first row of each kept text; later rows with the same text are exact
/// duplicates, rows of a text too close to a kept one near duplicates.
pub fn dedup<'p>(
    pairs: &'p [PairRecord],
    ids: &[u32],
    keep_text: &[bool],
    on: DedupOn,
) -> Curated<'p> {
    let col = match on {
        DedupOn::Anchor => "anchor",
        DedupOn::Positive => "positive",
    };
    let mut seen = vec![false; keep_text.len()];
    let mut keep = Vec::new();
    let mut dropped = BTreeMap::new();
    for (row, &id) in ids.iter().enumerate().take(pairs.len()) {
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
    Curated::kept(pairs, keep, dropped)
}
