//! A pairs dataset seen as retrieval: distinct anchors (queries), each with its distinct
//! positives, over a candidate corpus; every text interned once in one [`TextTable`].

use schemas::PairRecord;

use crate::embed::TextTable;

/// Queries and candidates of a dataset, in sentence-transformers' `mine_hard_negatives` order:
/// candidates are the extra corpus (if any) then the positives, de-duplicated in first-seen
/// order; queries are the distinct anchors in first-seen order.
#[derive(Debug)]
pub struct Problem<'a> {
    /// Candidate texts first (ids `0..corpus_len`), then anchors that are not candidates.
    pub table: TextTable<'a>,
    pub corpus_len: usize,
    /// Each distinct anchor's table id.
    pub queries: Vec<u32>,
    /// Per query: the distinct corpus ids of its positives, first-seen order.
    pub positives: Vec<Vec<u32>>,
    /// Per input row: the index of its anchor in `queries`.
    pub row_query: Vec<u32>,
    /// Per input row: its positive's corpus id.
    pub row_positive: Vec<u32>,
    /// Per query: its rows (repeated (anchor, positive) rows counted each time).
    pub rows_per_query: Vec<u32>,
}

impl<'a> Problem<'a> {
    /// `corpus`: extra candidate texts; the positives are always candidates as well (as in
    /// sentence-transformers, where the corpus is "in addition to" the positive column).
    pub fn new(pairs: &'a [PairRecord], corpus: Option<&'a [String]>) -> Problem<'a> {
        let mut table = TextTable::new();
        for text in corpus.unwrap_or_default() {
            table.intern(text);
        }
        let row_positive: Vec<u32> = pairs.iter().map(|p| table.intern(&p.positive)).collect();
        let corpus_len = table.len();
        let mut query_of_text = std::collections::HashMap::new();
        let mut queries = Vec::new();
        let mut positives: Vec<Vec<u32>> = Vec::new();
        let mut row_query = Vec::with_capacity(pairs.len());
        let mut rows_per_query: Vec<u32> = Vec::new();
        for (p, &pos) in pairs.iter().zip(&row_positive) {
            let id = table.intern(&p.anchor);
            let q = *query_of_text.entry(id).or_insert_with(|| {
                queries.push(id);
                positives.push(Vec::new());
                (queries.len() - 1) as u32
            });
            rows_per_query.resize(queries.len(), 0);
            rows_per_query[q as usize] += 1;
            let list = &mut positives[q as usize];
            if !list.contains(&pos) {
                list.push(pos);
            }
            row_query.push(q);
        }
        Problem {
            table,
            corpus_len,
            queries,
            positives,
            row_query,
            row_positive,
            rows_per_query,
        }
    }

    /// The most rows any one anchor has: sentence-transformers' `max_positives` (it counts rows
    /// per anchor, a repeated pair twice), which sizes the search window.
    pub fn max_positives(&self) -> usize {
        self.rows_per_query.iter().max().map_or(0, |&n| n as usize)
    }
}
