#![allow(dead_code)]
//! Builders of small real datasets (Parquet parts + manifest) for the mixer's tests.

use std::path::Path;

use schemas::{Arity, DatasetWriter, PairRecord, PairWriterOptions};

/// Writes dataset `id` under `pairs` with `rows` distinct rows whose texts name the dataset.
pub fn make_dataset(pairs: &Path, id: &str, arity: Arity, rows: usize, row_group_rows: usize) {
    let texts = |i: usize| {
        (
            format!("{id} question number {i}?"),
            format!("{id} answer {i}: the reply to question {i}."),
            format!("{id} unrelated text {i}"),
        )
    };
    make_dataset_with(pairs, id, arity, rows, row_group_rows, texts);
}

pub fn make_dataset_with(
    pairs: &Path,
    id: &str,
    arity: Arity,
    rows: usize,
    row_group_rows: usize,
    texts: impl Fn(usize) -> (String, String, String),
) {
    let opts = PairWriterOptions {
        row_group_rows,
        rows_per_file: row_group_rows * 3,
        zstd_level: 1,
    };
    let mut w = DatasetWriter::create(pairs.join(id), id, "test", arity, opts).unwrap();
    for i in 0..rows {
        let (a, p, n) = texts(i);
        // Negative k > 0 is the first one with its number: distinct texts in every column.
        let negatives = (0..arity.negatives())
            .map(|k| {
                if k == 0 {
                    n.clone()
                } else {
                    format!("{n} (negative {})", k + 1)
                }
            })
            .collect();
        let r = PairRecord::with_negatives(a, p, negatives);
        w.push(&r.with_id(i.to_string())).unwrap();
    }
    w.finish().unwrap();
}

/// Our dataset ids, arities and weights (UPSTREAM.md's table; yahoo_question_answer has none).
pub const MULTI_QA: &[(&str, Arity, u64)] = &[
    ("wikianswers", Arity::Pair, 150),
    ("paq", Arity::Pair, 150),
    ("stackexchange_title_body", Arity::Pair, 1719),
    ("stackexchange_title_answer", Arity::Pair, 1512),
    ("msmarco", Arity::Triplet, 1000),
    ("gooaq", Arity::Pair, 451),
    ("amazon_qa", Arity::Pair, 451),
    ("yahoo_title_answer", Arity::Pair, 226),
    ("yahoo_title_question", Arity::Pair, 149),
    ("searchqa", Arity::Pair, 263),
    ("eli5", Arity::Pair, 147),
    ("stackexchange_duplicates", Arity::Pair, 69),
    ("quora", Arity::Triplet, 47),
    ("natural_questions", Arity::Pair, 46),
    ("squad", Arity::Pair, 40),
    ("triviaqa", Arity::Pair, 34),
];

pub fn config_json(entries: &[(&str, u64)]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(n, w)| format!(r#"{{"name":"{n}","weight":{w}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}
