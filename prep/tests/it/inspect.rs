//! `prep mix` then `prep inspect` through the binary; the shards are opened with Polars and
//! checked against index.json.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use polars::prelude::*;
use schemas::{Arity, DatasetWriter, PairRecord, PairWriterOptions, ShardIndex};
use testdata::test_model_dir;

fn dataset(pairs: &Path, id: &str, arity: Arity, rows: usize) {
    let opts = PairWriterOptions {
        row_group_rows: 50,
        rows_per_file: 150,
        zstd_level: 1,
    };
    let mut w = DatasetWriter::create(pairs.join(id), id, "test", arity, opts).unwrap();
    for i in 0..rows {
        let (a, p, n) = (
            format!("{id} question {i}?"),
            format!("{id} answer {i}."),
            format!("{id} other {i}"),
        );
        let r = if arity == Arity::Triplet {
            PairRecord::triplet(a, p, n)
        } else {
            PairRecord::pair(a, p)
        };
        w.push(&r).unwrap();
    }
    w.finish().unwrap();
}

fn prep(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_prep"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prep {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shards_read_with_polars_match_the_index() {
    let Some(model) = test_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    dataset(&pairs, "squad", Arity::Pair, 400);
    dataset(&pairs, "eli5", Arity::Pair, 300);
    dataset(&pairs, "quora", Arity::Triplet, 300);
    let config = tmp.path().join("data_config.json");
    std::fs::write(&config, r#"[{"name":"squad","weight":3},{"name":"eli5","weight":2},{"name":"quora_duplicates_triplets.jsonl.gz","weight":2}]"#).unwrap();
    let out = tmp.path().join("shards");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    prep(&[
        "mix",
        "--config",
        &s(&config),
        "--pairs",
        &s(&pairs),
        "--tokenizer",
        &s(&model),
        "--out",
        &s(&out),
        "--steps",
        "45",
        "--batch-size",
        "16",
        "--batches-per-shard",
        "10",
        "--max-length-a",
        "12",
        "--max-length-b",
        "24",
        "--seed",
        "3",
    ]);
    let index = ShardIndex::read(&out).unwrap();
    assert_eq!(index.shards.len(), 5);
    assert!(index.complete);

    let mut batches_per_dataset: BTreeMap<String, u64> = BTreeMap::new();
    for s in &index.shards {
        let df = LazyFrame::scan_parquet(
            PlRefPath::try_from_path(&out.join(&s.file)).unwrap(),
            ScanArgsParquet::default(),
        )
        .unwrap()
        .with_column(col("positive_ids").list().len().alias("positive_len"))
        .collect()
        .unwrap();
        assert_eq!(df.height() as u64, s.rows, "{}", s.file);
        let batch: Vec<u64> = df
            .column("batch")
            .unwrap()
            .u64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let want: Vec<u64> = (s.first_batch..s.first_batch + s.batches)
            .flat_map(|b| [b; 16])
            .collect();
        assert_eq!(batch, want, "{}: whole batches in order", s.file);
        let dataset: Vec<String> = df
            .column("dataset")
            .unwrap()
            .str()
            .unwrap()
            .no_null_iter()
            .map(str::to_owned)
            .collect();
        let negatives = df.column("negative_ids").unwrap().is_not_null();
        for (b, rows) in dataset.chunks(16).enumerate() {
            assert!(rows.iter().all(|d| *d == rows[0]));
            *batches_per_dataset.entry(rows[0].clone()).or_default() += 1;
            for r in 0..16 {
                assert_eq!(negatives.get(b * 16 + r), Some(rows[0] == "quora"));
            }
        }
        let lens = df
            .column("positive_len")
            .unwrap()
            .cast(&DataType::UInt64)
            .unwrap();
        assert!(lens
            .u64()
            .unwrap()
            .into_no_null_iter()
            .all(|n| (3..=24).contains(&n)));
    }
    for (id, n) in &batches_per_dataset {
        assert_eq!(index.datasets[id].batches, *n, "{id}");
    }
    assert_eq!(batches_per_dataset.values().sum::<u64>(), 45);

    // `prep inspect` agrees, and finds nothing wrong with the index.
    let summary: serde_json::Value =
        serde_json::from_str(&prep(&["inspect", "--json", &s(&out)])).unwrap();
    assert_eq!(summary["rows"], 45 * 16);
    assert_eq!(summary["index_problems"], serde_json::json!([]));
    for (id, n) in &batches_per_dataset {
        assert_eq!(summary["datasets"][id]["batches"], *n);
    }
    assert_eq!(summary["tokens"]["anchor"]["max_length"], 12);
    assert_eq!(summary["samples"].as_array().unwrap().len(), 3);
    assert!(prep(&["inspect", &s(&out)]).contains("every shard's rows and batch range match"));

    // And on the pairs folder: rows per dataset as in the manifests.
    let pairs_summary: serde_json::Value =
        serde_json::from_str(&prep(&["inspect", "--json", &s(&pairs)])).unwrap();
    assert_eq!(pairs_summary["datasets"]["quora"]["rows"], 300);
    assert_eq!(pairs_summary["datasets"]["quora"]["columns"], 3);
    assert_eq!(pairs_summary["rows"], 1000);
    assert_eq!(pairs_summary["duplicates"]["pair"]["duplicates"], 0);
}

#[test]
fn mix_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.json");
    std::fs::write(&config, r#"[{"name":"PAQ_pairs.jsonl.gz","weight":150},{"name":"S2ORC_title_abstract.jsonl.gz","weight":123}]"#).unwrap();
    let tok = tmp.path().join("tokenizer.json");
    std::fs::write(&tok, "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prep"))
        .args(["mix", "--steps", "1", "--config"])
        .arg(&config)
        .arg("--pairs")
        .arg(tmp.path())
        .arg("--tokenizer")
        .arg(&tok)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PAQ_pairs.jsonl.gz (weight 150)"), "{err}");
    assert!(
        err.contains("S2ORC_title_abstract.jsonl.gz (weight 123)"),
        "{err}"
    );
}

/// A dataset of `rows` n-tuples with 3 negatives; negative k of row i has `10 * k + i % 7` chars.
fn ntuple_dataset(pairs: &Path, id: &str, rows: usize) -> Vec<PairRecord> {
    let opts = PairWriterOptions::default();
    let mut w =
        DatasetWriter::create(pairs.join(id), id, "test", Arity::with_negatives(3), opts).unwrap();
    let text = |k: usize, i: usize| format!("{i:03}{}", "x".repeat(10 * k + i % 7 - 3));
    let records: Vec<PairRecord> = (0..rows)
        .map(|i| PairRecord {
            anchor: format!("{id} question {i}?"),
            positive: format!("{id} answer {i}."),
            negative: Some(text(1, i)),
            extra_negatives: vec![text(2, i), text(3, i)],
            source_id: None,
        })
        .collect();
    for r in &records {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    records
}

/// `prep inspect` on datasets and shards with negative columns beyond the first (`prep mine
/// --num-negatives N`): every `negative_k` column is counted and measured, beside datasets of
/// pairs and triplets in the same folder.
#[test]
fn inspect_reports_every_negative_column() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    dataset(&pairs, "plain", Arity::Pair, 40);
    dataset(&pairs, "trip", Arity::Triplet, 20);
    let records = ntuple_dataset(&pairs, "ntup", 30);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let summary: serde_json::Value =
        serde_json::from_str(&prep(&["inspect", "--json", &s(&pairs)])).unwrap();
    assert_eq!(summary["rows"], 90);
    let columns = |id: &str| summary["datasets"][id]["columns"].as_u64().unwrap();
    assert_eq!(
        (columns("plain"), columns("trip"), columns("ntup")),
        (2, 3, 5)
    );
    let chars = &summary["chars"];
    for (k, name) in ["negative_2", "negative_3"].iter().enumerate() {
        let lens: Vec<usize> = records
            .iter()
            .map(|r| r.extra_negatives[k].chars().count())
            .collect();
        let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        assert_eq!(chars[name]["count"], 30, "{name}: {chars}");
        assert_eq!(chars[name]["min"], *lens.iter().min().unwrap(), "{name}");
        assert_eq!(chars[name]["max"], *lens.iter().max().unwrap(), "{name}");
        assert!(
            (chars[name]["mean"].as_f64().unwrap() - mean).abs() < 0.06,
            "{name}"
        );
    }
    // The first negative column counts the triplets' negatives too.
    assert_eq!(chars["negative"]["count"], 50);
    assert!(chars.get("negative_4").is_none());
    let text = prep(&["inspect", &s(&pairs.join("ntup")), "--samples", "1"]);
    assert!(text.contains("rows 30  5 columns"), "{text}");
    assert!(text.contains("negative_3 min 30 "), "{text}");
    assert!(
        text.contains(&records[0].extra_negatives[1]),
        "the sample shows every column: {text}"
    );

    let Some(model) = test_model_dir() else {
        return;
    };
    let config = tmp.path().join("data_config.json");
    std::fs::write(&config, r#"[{"name":"ntup","weight":1}]"#).unwrap();
    let out = tmp.path().join("shards");
    prep(&[
        "mix",
        "--config",
        &s(&config),
        "--pairs",
        &s(&pairs),
        "--tokenizer",
        &s(&model),
        "--out",
        &s(&out),
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--datasets-per-batch",
        "1",
        "--batches-per-draw",
        "1",
    ]);
    let shards: serde_json::Value =
        serde_json::from_str(&prep(&["inspect", "--json", &s(&out)])).unwrap();
    let tokens = &shards["tokens"];
    for name in ["negative", "negative_2", "negative_3"] {
        assert_eq!(tokens[name]["count"], 24, "{name}: {tokens}");
    }
    // Longer texts, more tokens: negative k holds 10k + 0..6 characters of one long word piece run.
    let p50 = |n: &str| tokens[n]["p50"].as_u64().unwrap();
    assert!(p50("negative") < p50("negative_2") && p50("negative_2") < p50("negative_3"));
    assert!(shards["samples"][0].get("negative_3").is_some(), "{shards}");
}
