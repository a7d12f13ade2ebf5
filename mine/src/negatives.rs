//! Hard-negative selection with the semantics of sentence-transformers' `mine_hard_negatives`
//! (`sentence_transformers/util/hard_negatives.py`, as of sentence-transformers 6.3.0), same
//! option names:
//!
//! 1. each distinct anchor retrieves its `range_max + max_positives + 1` best candidates (exact);
//! 2. candidates that are a positive of that anchor, or the anchor's own text, are removed, then
//!    those within
//!    `absolute_margin` of the anchor's lowest positive score (`score + margin > positive`), then
//!    those above `positive - |positive| · relative_margin`, above `max_score` or below
//!    `min_score`;
//! 3. of what is left, best first, the first `range_max` are kept and the first `range_min` of
//!    those skipped (so `range_min` counts surviving candidates, after the filters);
//! 4. `top` keeps the first `num_negatives`; `random` draws `num_negatives` of them (seeded, one
//!    stream per anchor) and orders the draw best first.
//!
//! Unlike sentence-transformers, ties keep the lower corpus index (torch.topk leaves their
//! order unspecified), rows keep the input order instead of being regrouped by anchor, and a
//! repeated (anchor, positive) row is written as often as it was read.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemas::{Arity, Progress};
use serde::Serialize;

use crate::embed::dot;
use crate::error::{MineError, Result};
use crate::knn::{top_k_each, Hit, SearchOptions};
use crate::problem::Problem;
use crate::store::Vectors;
use crate::{Curated, PlannedRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    Top,
    Random,
}

/// How mined negatives become rows (sentence-transformers' `output_format` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum OutputFormat {
    /// One (anchor, positive, negative) row per negative.
    #[serde(rename = "triplet")]
    Triplet,
    /// One row per input row with `num_negatives` negative columns (`negative`, `negative_2`,
    /// ...); a row whose anchor got fewer is dropped, as upstream does, since every row of a
    /// dataset has the same columns.
    #[default]
    #[serde(rename = "n-tuple")]
    NTuple,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "triplet" => Ok(OutputFormat::Triplet),
            "n-tuple" => Ok(OutputFormat::NTuple),
            _ => Err(format!(
                "--output-format is `triplet` or `n-tuple`, not `{s}`"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NegativeOptions {
    pub range_min: usize,
    /// `None`: `range_min + num_negatives (×10 with a margin or max_score) + max_positives`.
    pub range_max: Option<usize>,
    pub absolute_margin: Option<f32>,
    pub relative_margin: Option<f32>,
    pub max_score: Option<f32>,
    pub min_score: Option<f32>,
    pub num_negatives: usize,
    pub sampling: Sampling,
    pub seed: u64,
    pub output_format: OutputFormat,
}

impl Default for NegativeOptions {
    fn default() -> Self {
        NegativeOptions {
            range_min: 0,
            range_max: None,
            absolute_margin: None,
            relative_margin: None,
            max_score: None,
            min_score: None,
            num_negatives: 1,
            sampling: Sampling::Top,
            seed: 42,
            output_format: OutputFormat::NTuple,
        }
    }
}

impl NegativeOptions {
    /// `range_max` as given, or sentence-transformers' default for it.
    pub fn effective_range_max(&self, max_positives: usize) -> usize {
        self.range_max.unwrap_or_else(|| {
            let filtered = self.absolute_margin.is_some()
                || self.relative_margin.is_some()
                || self.max_score.is_some();
            let per = if filtered { 10 } else { 1 };
            self.range_min + self.num_negatives * per + max_positives
        })
    }

    fn check(&self, range_max: usize) -> Result<()> {
        let bad = |m: String| Err(MineError::Options(m));
        if self.num_negatives < 1 {
            return bad("--num-negatives must be at least 1".into());
        }
        if self.output_format == OutputFormat::NTuple && self.num_negatives > Arity::MAX_NEGATIVES {
            return bad(format!(
                "--num-negatives {} with --output-format n-tuple: a dataset has at most {} \
                 negative columns (use --output-format triplet)",
                self.num_negatives,
                Arity::MAX_NEGATIVES
            ));
        }
        if self.range_min >= range_max {
            return bad(format!(
                "--range-min ({}) must be smaller than --range-max ({range_max})",
                self.range_min
            ));
        }
        if self.num_negatives > range_max - self.range_min {
            return bad(format!(
                "cannot mine {} negatives per anchor: only {} candidates remain after skipping the \
                 first --range-min {} of --range-max {range_max}",
                self.num_negatives,
                range_max - self.range_min,
                self.range_min
            ));
        }
        Ok(())
    }
}

/// Candidates removed per reason (each counted once, under the first reason that removes it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub positive: u64,
    pub anchor: u64,
    pub absolute_margin: u64,
    pub relative_margin: u64,
    pub max_score: u64,
    pub min_score: u64,
    pub range_min: u64,
}

impl Skipped {
    fn add(&mut self, o: &Skipped) {
        self.positive += o.positive;
        self.anchor += o.anchor;
        self.absolute_margin += o.absolute_margin;
        self.relative_margin += o.relative_margin;
        self.max_score += o.max_score;
        self.min_score += o.min_score;
        self.range_min += o.range_min;
    }
}

/// Steps 2–4 for one anchor: `hits` best first, `anchor` the anchor's own corpus id (if its
/// text is a candidate), `min_positive` its lowest positive score.
#[allow(clippy::too_many_arguments)]
pub fn select(
    hits: &[Hit],
    anchor: Option<u32>,
    positives: &[u32],
    min_positive: f32,
    range_max: usize,
    opts: &NegativeOptions,
    rng: &mut ChaCha8Rng,
    skipped: &mut Skipped,
) -> Vec<Hit> {
    let mut valid = Vec::with_capacity(range_max.min(hits.len()));
    for h in hits {
        let s = h.score;
        if positives.contains(&h.index) {
            skipped.positive += 1;
        } else if anchor == Some(h.index) {
            skipped.anchor += 1;
        } else if opts.absolute_margin.is_some_and(|m| s + m > min_positive) {
            skipped.absolute_margin += 1;
        } else if opts
            .relative_margin
            .is_some_and(|m| s > min_positive - min_positive.abs() * m)
        {
            skipped.relative_margin += 1;
        } else if opts.max_score.is_some_and(|m| s > m) {
            skipped.max_score += 1;
        } else if opts.min_score.is_some_and(|m| s < m) {
            skipped.min_score += 1;
        } else if valid.len() < range_max {
            valid.push(*h);
        }
    }
    let skip = opts.range_min.min(valid.len());
    skipped.range_min += skip as u64;
    let window = &valid[skip..];
    match opts.sampling {
        Sampling::Top => window.iter().take(opts.num_negatives).copied().collect(),
        Sampling::Random => {
            let n = opts.num_negatives.min(window.len());
            let mut picked: Vec<usize> = rand::seq::index::sample(rng, window.len(), n).into_vec();
            // Best first, as sentence-transformers re-sorts the draw.
            picked.sort_unstable();
            picked.into_iter().map(|i| window[i]).collect()
        }
    }
}

/// The chosen negatives of every query (corpus ids, best first) and what was skipped. Each
/// group of queries the search returns is reduced to its chosen negatives before the next.
pub fn choose(
    problem: &Problem,
    vectors: &dyn Vectors,
    opts: &NegativeOptions,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<(Vec<Vec<Hit>>, Skipped, usize)> {
    let max_positives = problem.max_positives();
    let range_max = opts.effective_range_max(max_positives);
    opts.check(range_max)?;
    let mut chosen = Vec::with_capacity(problem.queries.len());
    let mut total = Skipped::default();
    top_k_each(
        vectors,
        &problem.queries,
        0..problem.corpus_len,
        // One more than the positives: room for the anchor's own text among the candidates.
        range_max + max_positives + 1,
        search,
        progress,
        &mut |first, hits| {
            let group: Vec<(Vec<Hit>, Skipped)> = hits
                .par_iter()
                .enumerate()
                .map_init(Vec::new, |buf, (i, hits)| {
                    choose_one(problem, vectors, first + i, hits, range_max, opts, buf)
                })
                .collect::<Result<_>>()?;
            for (c, s) in group {
                total.add(&s);
                chosen.push(c);
            }
            Ok(())
        },
    )?;
    Ok((chosen, total, range_max))
}

/// Steps 2–4 for query `q`, its positives scored by [`dot`].
fn choose_one(
    problem: &Problem,
    vectors: &dyn Vectors,
    q: usize,
    hits: &[Hit],
    range_max: usize,
    opts: &NegativeOptions,
    buf: &mut Vec<f32>,
) -> Result<(Vec<Hit>, Skipped)> {
    let qid = problem.queries[q];
    let anchor = ((qid as usize) < problem.corpus_len).then_some(qid);
    let positives = &problem.positives[q];
    let min_positive = positive_scores(vectors, qid, positives, buf)?
        .into_iter()
        .fold(f32::INFINITY, f32::min);
    // One stream per anchor: the draw does not depend on threads or on other anchors.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(q as u64);
    let mut skipped = Skipped::default();
    let chosen = select(
        hits,
        anchor,
        positives,
        min_positive,
        range_max,
        opts,
        &mut rng,
        &mut skipped,
    );
    Ok((chosen, skipped))
}

/// The dot products of text `query` with each of `rows` ([`dot`]: the same on every CPU).
pub(crate) fn positive_scores(
    vectors: &dyn Vectors,
    query: u32,
    rows: &[u32],
    buf: &mut Vec<f32>,
) -> Result<Vec<f32>> {
    // The query first, then its rows, in one buffer.
    let mut ids = Vec::with_capacity(rows.len() + 1);
    ids.push(query);
    ids.extend_from_slice(rows);
    vectors.gather(&ids, 0, buf)?;
    let dim = vectors.dim();
    let (qv, rest) = buf.split_at(dim);
    Ok(rest.chunks_exact(dim).map(|v| dot(qv, v)).collect())
}

/// The output rows of mined negatives, in input order, as `opts.output_format` says:
/// - triplets: each input row once per negative its anchor got; rows whose anchor got none are
///   dropped and counted;
/// - n-tuples: each input row once with its anchor's `num_negatives` negatives as columns, best
///   first; rows whose anchor got fewer are dropped and counted.
///
/// Each anchor's negatives are stored once (as text ids into the problem's table, which the
/// result keeps), however many rows share them.
pub fn plan(problem: Problem, chosen: &[Vec<Hit>], opts: &NegativeOptions) -> Curated {
    let mut starts = Vec::with_capacity(chosen.len());
    let mut negative_ids = Vec::new();
    for c in chosen {
        starts.push(negative_ids.len() as u32);
        negative_ids.extend(c.iter().map(|h| h.index));
    }
    let n = opts.num_negatives;
    let mut rows = Vec::new();
    let mut dropped = BTreeMap::new();
    for (row, &q) in problem.row_query.iter().enumerate() {
        let q = q as usize;
        let (start, got) = (starts[q], chosen[q].len() as u32);
        let reason = match opts.output_format {
            _ if got == 0 => Some("no negative candidate left"),
            OutputFormat::NTuple if (got as usize) < n => {
                Some("fewer than num_negatives negatives left")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            *dropped.entry(reason.to_owned()).or_insert(0) += 1;
            continue;
        }
        let input = row as u32;
        match opts.output_format {
            OutputFormat::Triplet => rows.extend((start..start + got).map(|i| PlannedRow {
                input,
                negatives: (i, i + 1),
            })),
            OutputFormat::NTuple => rows.push(PlannedRow {
                input,
                negatives: (start, start + got),
            }),
        }
    }
    let arity = match opts.output_format {
        OutputFormat::Triplet => Arity::Triplet,
        OutputFormat::NTuple => Arity::with_negatives(n),
    };
    let input_rows = problem.row_query.len();
    Curated::with_negatives(
        input_rows,
        rows,
        problem.texts,
        negative_ids,
        arity,
        dropped,
    )
}

/// Skip counts as manifest entries.
pub fn skipped_counts(s: &Skipped, counts: &mut BTreeMap<String, u64>) {
    let mut put = |k: &str, v: u64| {
        counts.insert(format!("candidates skipped: {k}"), v);
    };
    put("positive of the anchor", s.positive);
    put("the anchor itself", s.anchor);
    put("absolute_margin", s.absolute_margin);
    put("relative_margin", s.relative_margin);
    put("max_score", s.max_score);
    put("min_score", s.min_score);
    put("range_min", s.range_min);
}
