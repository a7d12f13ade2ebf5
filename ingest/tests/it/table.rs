//! `--source table` on generated tables shaped like the Hub's sentence-transformers mirrors:
//! Parquet with several row groups, an integer id, string columns, a list of negatives; the same
//! rows as JSON lines (plain and gzip). The texts are invented (towns, appliances, dishes).
use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use ingest::sources::table::{resolve_columns, ColumnMap, Table};
use ingest::IngestOptions;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use schemas::{Arity, NoProgress, PairRecord};

/// One generated row: an id, a question, its answer, and 0..3 negatives (other rows' answers).
struct Row {
    id: i64,
    question: Option<String>,
    answer: String,
    negatives: Vec<String>,
}

const TOWNS: &[&str] = &[
    "Arnhollow",
    "Belcastra",
    "Corvale",
    "Dunmere",
    "Eastwick",
    "Fennmoor",
];
const THINGS: &[&str] = &[
    "kettle",
    "lantern",
    "loom",
    "bread oven",
    "water mill",
    "bell tower",
];

fn rows(n: usize) -> Vec<Row> {
    let answer = |i: usize| {
        format!(
            "The {} of {} was built in {} and is {} metres tall.",
            THINGS[i % THINGS.len()],
            TOWNS[(i / THINGS.len()) % TOWNS.len()],
            1700 + (i * 7) % 300,
            3 + i % 40
        )
    };
    (0..n)
        .map(|i| Row {
            id: 1000 + i as i64,
            // Every 50th question is missing (a null cell), as in real exports.
            question: (i % 50 != 7).then(|| {
                format!(
                    "when was the {} of {} built? ({i})",
                    THINGS[i % THINGS.len()],
                    TOWNS[(i / THINGS.len()) % TOWNS.len()]
                )
            }),
            answer: answer(i),
            negatives: (0..i % 4).map(|k| answer(i + 1 + k)).collect(),
        })
        .collect()
}

/// Writes `rows` as Parquet with columns id (int64), question, answer (utf8), negatives
/// (list<utf8>), `rows_per_group` rows per row group.
fn write_parquet(path: &Path, rows: &[Row], rows_per_group: usize) {
    let schema_batch = |chunk: &[Row]| {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.id)));
        let q: ArrayRef = Arc::new(StringArray::from_iter(
            chunk.iter().map(|r| r.question.clone()),
        ));
        let a: ArrayRef = Arc::new(StringArray::from_iter_values(
            chunk.iter().map(|r| r.answer.clone()),
        ));
        let mut negs = ListBuilder::new(StringBuilder::new());
        for r in chunk {
            for n in &r.negatives {
                negs.values().append_value(n);
            }
            negs.append(true);
        }
        let n: ArrayRef = Arc::new(negs.finish());
        // Every column nullable, as `datasets` writes them.
        RecordBatch::try_from_iter_with_nullable([
            ("id", ids, true),
            ("question", q, true),
            ("answer", a, true),
            ("negatives", n, true),
        ])
        .unwrap()
    };
    let first = schema_batch(&rows[..1]);
    // Snappy, as pyarrow (and so the Hub's mirrors) compress by default.
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        first.schema(),
        Some(props),
    )
    .unwrap();
    for chunk in rows.chunks(rows_per_group) {
        w.write(&schema_batch(chunk)).unwrap();
        w.flush().unwrap();
    }
    w.close().unwrap();
}

/// The same rows as JSON lines, keys in the Parquet column order.
fn write_jsonl(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let mut text = String::new();
    for r in rows {
        let v = serde_json::json!({
            "id": r.id, "question": r.question, "answer": r.answer, "negatives": r.negatives,
        });
        // serde_json's map is sorted; write the keys in table order by hand.
        text.push_str(&format!(
            "{{\"id\":{},\"question\":{},\"answer\":{},\"negatives\":{}}}\n",
            v["id"], v["question"], v["answer"], v["negatives"]
        ));
    }
    write_input(dir, name, text.as_bytes())
}

fn run_table(
    columns: Option<&str>,
    inputs: &[PathBuf],
    threads: usize,
) -> (tempfile::TempDir, ingest::Result<ingest::IngestReport>) {
    let table = Table {
        columns: columns.map(|c| ColumnMap::parse(c).unwrap()),
    };
    let opts = IngestOptions {
        threads,
        dataset: Some("qa".into()),
        ..IngestOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let res = ingest::run_source(&table, inputs, dir.path(), &opts, &NoProgress);
    (dir, res)
}

#[test]
fn defaults_take_the_first_string_columns_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train-00000-of-00001.parquet");
    let data = rows(1000);
    write_parquet(&path, &data, 128);

    let r = resolve_columns(&path, None).unwrap();
    assert_eq!(
        r.columns,
        ColumnMap::parse("anchor=question,positive=answer").unwrap()
    );
    assert!(
        r.how.contains("first 2 string columns") && r.how.contains("id (other)"),
        "{}",
        r.how
    );

    let (dir, res) = run_table(None, std::slice::from_ref(&path), 3);
    let report = res.unwrap();
    let got = read_rows(&dir.path().join("qa"));
    let want: Vec<PairRecord> = data
        .iter()
        .filter_map(|r| r.question.as_ref().map(|q| PairRecord::pair(q, &r.answer)))
        .collect();
    assert_eq!(got, want);
    let m = &report.manifests[0];
    assert_eq!((m.source.as_str(), m.columns), ("table", Arity::Pair));
    assert_eq!(skipped(m), [("missing text".to_owned(), 20)]);
    assert_eq!(m.inputs[0].sha256, schemas::sha256_file(&path).unwrap());

    // The output does not depend on the thread count.
    let (one, _) = run_table(None, &[path], 1);
    let files = |d: &Path| {
        schemas::part_files(d)
            .unwrap()
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(files(&one.path().join("qa")), files(&dir.path().join("qa")));
}

#[test]
fn a_list_of_negatives_is_taken_in_turn_and_rows_without_one_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let data = rows(400);
    write_parquet(&path, &data, 100);
    let (dir, res) = run_table(
        Some("anchor=question,positive=answer,negative=negatives"),
        &[path],
        2,
    );
    let m = &res.unwrap().manifests[0];
    assert_eq!(m.columns, Arity::Triplet);
    let want: Vec<PairRecord> = data
        .iter()
        .filter(|r| r.question.is_some() && !r.negatives.is_empty())
        .map(|r| PairRecord::triplet(r.question.as_ref().unwrap(), &r.answer, &r.negatives[0]))
        .collect();
    assert_eq!(read_rows(&dir.path().join("qa")), want);
    let no_negative = data
        .iter()
        .filter(|r| r.question.is_some() && r.negatives.is_empty())
        .count();
    assert_eq!(
        skipped(m),
        [
            ("missing text".to_owned(), 8),
            ("no negative".to_owned(), no_negative as u64)
        ]
    );

    // Positives from a list column: one row per positive (`set` of the same rule: disjoint pairs).
    let (dir, res) = run_table(
        Some("anchor=answer,positive=negatives"),
        &[tmp.path().join("t.parquet")],
        2,
    );
    res.unwrap();
    let want: usize = data.iter().map(|r| r.negatives.len()).sum();
    assert_eq!(read_rows(&dir.path().join("qa")).len(), want);
    let (dir, res) = run_table(Some("set=negatives"), &[tmp.path().join("t.parquet")], 2);
    res.unwrap();
    let want: usize = data.iter().map(|r| r.negatives.len() / 2).sum();
    let got = read_rows(&dir.path().join("qa"));
    assert_eq!(got.len(), want);
    assert_eq!(
        got[0],
        PairRecord::pair(&data[2].negatives[0], &data[2].negatives[1])
    );
}

#[test]
fn jsonl_and_jsonl_gz_give_the_same_rows_as_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = rows(300);
    let pq = tmp.path().join("t.parquet");
    write_parquet(&pq, &data, 64);
    let plain = write_jsonl(tmp.path(), "t.jsonl", &data);
    let gz = write_jsonl(tmp.path(), "t2.jsonl.gz", &data);
    let cols = Some("anchor=question,positive=answer,negative=negatives");
    let (a, _) = run_table(cols, &[pq], 2);
    let (b, _) = run_table(cols, std::slice::from_ref(&plain), 2);
    let (c, res) = run_table(cols, &[gz], 2);
    res.unwrap();
    let rows_a = read_rows(&a.path().join("qa"));
    assert!(!rows_a.is_empty());
    assert_eq!(read_rows(&b.path().join("qa")), rows_a);
    assert_eq!(read_rows(&c.path().join("qa")), rows_a);
    // jsonl defaults follow the first line's key order.
    let r = resolve_columns(&plain, None).unwrap();
    assert_eq!(
        r.columns,
        ColumnMap::parse("anchor=question,positive=answer").unwrap()
    );
}

#[test]
fn bad_records_are_counted_against_max_errors_and_bad_columns_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(
        tmp.path(),
        "bad.jsonl",
        concat!(
            r#"{"q":"where is the loom of Corvale?","a":"In the old mill by the river."}"#,
            "\n",
            "not json\n",
            r#"{"q":"when was the lantern lit?","a":12}"#,
            "\n",
            r#"{"q":["a","list"],"a":"an answer"}"#,
            "\n",
            r#"{"q":"who rang the bell?","a":"The keeper of Dunmere."}"#,
            "\n",
        )
        .as_bytes(),
    );
    let (dir, res) = run_table(Some("anchor=q,positive=a"), std::slice::from_ref(&input), 1);
    let report = res.unwrap();
    assert_eq!(report.malformed, 3);
    assert_eq!(read_rows(&dir.path().join("qa")).len(), 2);
    assert!(
        report
            .examples
            .iter()
            .any(|e| e.contains("bad.jsonl:line 3") && e.contains("not text")),
        "{:?}",
        report.examples
    );

    let table = Table {
        columns: Some(ColumnMap::parse("anchor=q,positive=a").unwrap()),
    };
    let opts = IngestOptions {
        max_errors: 2,
        dataset: Some("qa".into()),
        ..IngestOptions::default()
    };
    let out = tempfile::tempdir().unwrap();
    let err = ingest::run_source(
        &table,
        std::slice::from_ref(&input),
        out.path(),
        &opts,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than 2 malformed"), "{err}");
    assert!(
        !out.path().join("qa").exists(),
        "nothing under the final name"
    );

    let pq = tmp.path().join("t.parquet");
    write_parquet(&pq, &rows(10), 5);
    let err = resolve_columns(
        &pq,
        Some(&ColumnMap::parse("anchor=query,positive=answer").unwrap()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no column `query`") && err.contains("question (text)"),
        "{err}"
    );
    let err = resolve_columns(
        &pq,
        Some(&ColumnMap::parse("anchor=id,positive=answer").unwrap()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`id` holds neither text"), "{err}");
}
