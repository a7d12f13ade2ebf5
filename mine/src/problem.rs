//! A pairs dataset seen as retrieval: distinct anchors (queries), each with its distinct
//! positives, over a candidate corpus; every text stored once in one [`TextStore`].

use schemas::Arity;

use crate::error::{MineError, Result};
use crate::source::{PairSource, TextSource};
use crate::texts::TextStore;

/// Queries and candidates of a dataset, in sentence-transformers' `mine_hard_negatives` order:
/// candidates are the extra corpus (if any) then the positives, de-duplicated in first-seen
/// order; queries are the distinct anchors in first-seen order.
#[derive(Debug)]
pub struct Problem {
    /// Candidate texts first (ids `0..corpus_len`), then anchors that are not candidates.
    pub texts: TextStore,
    pub corpus_len: usize,
    /// Each distinct anchor's text id.
    pub queries: Vec<u32>,
    /// Per query: the distinct corpus ids of its positives, first-seen order.
    pub positives: Vec<Vec<u32>>,
    /// Per input row: the index of its anchor in `queries`.
    pub row_query: Vec<u32>,
    /// Per input row: its positive's corpus id.
    pub row_positive: Vec<u32>,
    /// Per query: its rows (repeated (anchor, positive) rows counted each time).
    pub rows_per_query: Vec<u32>,
    /// The input rows' columns.
    pub arity: Arity,
}

impl Problem {
    /// Reads `pairs` twice (positives, then anchors) into `texts`. `corpus`: extra candidate
    /// texts; the positives are always candidates as well (as in sentence-transformers, where
    /// the corpus is "in addition to" the positive column).
    pub fn build(
        pairs: &dyn PairSource,
        corpus: Option<&dyn TextSource>,
        mut texts: TextStore,
    ) -> Result<Problem> {
        if let Some(c) = corpus {
            c.for_each_text(&mut |t| texts.intern(t).map(drop))?;
        }
        let mut row_positive = Vec::new();
        let mut arity = None;
        pairs.for_each_pair(&mut |p| {
            arity.get_or_insert(p.arity());
            row_positive.push(texts.intern(&p.positive)?);
            Ok(())
        })?;
        let arity = arity.ok_or_else(|| MineError::Options("no rows to curate".into()))?;
        let corpus_len = texts.len();
        let mut problem = Problem {
            texts,
            corpus_len,
            queries: Vec::new(),
            positives: Vec::new(),
            row_query: Vec::with_capacity(row_positive.len()),
            row_positive,
            rows_per_query: Vec::new(),
            arity,
        };
        let mut query_of_text = std::collections::HashMap::new();
        let mut row = 0;
        pairs.for_each_pair(&mut |p| {
            let pos = *problem.row_positive.get(row).ok_or_else(changed)?;
            row += 1;
            let id = problem.texts.intern(&p.anchor)?;
            let q = *query_of_text
                .entry(id)
                .or_insert_with(|| problem.add_query(id));
            problem.rows_per_query[q as usize] += 1;
            let list = &mut problem.positives[q as usize];
            if !list.contains(&pos) {
                list.push(pos);
            }
            problem.row_query.push(q);
            Ok(())
        })?;
        if row != problem.row_positive.len() {
            return Err(changed());
        }
        Ok(problem)
    }

    fn add_query(&mut self, id: u32) -> u32 {
        self.queries.push(id);
        self.positives.push(Vec::new());
        self.rows_per_query.push(0);
        (self.queries.len() - 1) as u32
    }

    /// The most rows any one anchor has: sentence-transformers' `max_positives` (it counts rows
    /// per anchor, a repeated pair twice), which sizes the search window.
    pub fn max_positives(&self) -> usize {
        self.rows_per_query.iter().max().map_or(0, |&n| n as usize)
    }
}

/// Rows that differ between two passes over the same input.
pub(crate) fn changed() -> MineError {
    MineError::Options("the input rows changed between two passes over them".into())
}
