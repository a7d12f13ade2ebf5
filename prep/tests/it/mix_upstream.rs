//! `prep mix` given an upstream normalized jsonl file in its config: the file goes through
//! ingest's `jsonl` source (its line rules, counted skips and `--max-errors`) into
//! `<out>/.sources/<id>/`, once per version of the file, and is mixed like any dataset.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use schemas::{Arity, DatasetWriter, Manifest, PairRecord, PairWriterOptions, ShardIndex};
use testdata::test_model_dir;

/// Hand-made, in the documented upstream layout: `lines` sets of three paraphrases, then the
/// `bad` lines.
fn write_sets(path: &Path, lines: usize, bad: &[&str]) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..lines {
        writeln!(gz, r#"{{"set":["premise {i}","entailed {i}","also {i}"]}}"#).unwrap();
    }
    for line in bad {
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
}

fn squad(pairs: &Path) {
    let opts = PairWriterOptions {
        row_group_rows: 40,
        rows_per_file: 120,
        zstd_level: 1,
    };
    let mut w =
        DatasetWriter::create(pairs.join("squad"), "squad", "test", Arity::Pair, opts).unwrap();
    for i in 0..300 {
        w.push(&PairRecord::pair(
            format!("squad question {i}?"),
            format!("squad answer {i}."),
        ))
        .unwrap();
    }
    w.finish().unwrap();
}

fn mix(config: &Path, pairs: &Path, model: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prep"))
        .arg("mix")
        .arg("--config")
        .arg(config)
        .arg("--pairs")
        .arg(pairs)
        .arg("--tokenizer")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args([
            "--steps",
            "12",
            "--batch-size",
            "8",
            "--batches-per-shard",
            "5",
        ])
        .args([
            "--max-length-a",
            "16",
            "--max-length-b",
            "32",
            "--seed",
            "7",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn upstream_jsonl_files_are_ingested_once_then_mixed_like_datasets() {
    let Some(model) = test_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    squad(&pairs);
    let file = pairs.join("AllNLI.jsonl.gz");
    write_sets(&file, 100, &["not json", r#"{"other": 1}"#]);
    let config = tmp.path().join("c.json");
    std::fs::write(
        &config,
        r#"[{"name":"AllNLI.jsonl.gz","weight":5},{"name":"squad_pairs.jsonl.gz","weight":5}]"#,
    )
    .unwrap();
    let out = tmp.path().join("o");
    let run = mix(&config, &pairs, &model, &out, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("AllNLI.jsonl.gz"),
        "{}",
        text(&run.stdout)
    );
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("AllNLI.jsonl.gz:line 101") && stderr.contains("invalid JSON"),
        "malformed lines are reported with file and line: {stderr}"
    );

    let index = ShardIndex::read(&out).unwrap();
    let ids: Vec<_> = index.datasets.keys().cloned().collect();
    assert_eq!(
        ids,
        ["AllNLI", "squad"],
        "upstream's squad_pairs name resolves to our squad"
    );
    assert_eq!(index.datasets["AllNLI"].rows, 100);
    let converted = out.join(".sources/AllNLI");
    assert!(converted.join("manifest.json").is_file());
    let m = Manifest::read(&converted).unwrap();
    assert_eq!(
        (m.source.as_str(), m.rows, m.columns),
        ("jsonl", 100, Arity::Pair)
    );
    assert_eq!(m.skipped["invalid JSON"], 1);
    assert_eq!(m.skipped["unexpected layout"], 1);
    assert_eq!(m.inputs[0].sha256, schemas::sha256_file(&file).unwrap());
    // The set rule of ingest's jsonl source: disjoint consecutive pairs (3 members -> 1 pair).
    let parts = schemas::part_files(&converted).unwrap();
    let first = schemas::PairReader::open(&parts[0])
        .unwrap()
        .read_row_group(0)
        .unwrap();
    assert_eq!(first[0], PairRecord::pair("premise 0", "entailed 0"));

    // A rerun finds the ingest up to date: nothing converted again, the mix a no-op.
    let manifest_bytes = std::fs::read(converted.join("manifest.json")).unwrap();
    let index_bytes = std::fs::read(out.join("index.json")).unwrap();
    let again = mix(&config, &pairs, &model, &out, &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stdout).contains("ingesting"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        std::fs::read(converted.join("manifest.json")).unwrap(),
        manifest_bytes
    );
    assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index_bytes);
}

#[test]
fn max_errors_bounds_the_malformed_lines_of_an_upstream_file() {
    let Some(model) = test_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    squad(&pairs);
    write_sets(
        &pairs.join("AllNLI.jsonl.gz"),
        50,
        &["{oops", "{oops", "{oops"],
    );
    let config = tmp.path().join("c.json");
    std::fs::write(
        &config,
        r#"[{"name":"AllNLI.jsonl.gz","weight":5},{"name":"squad","weight":5}]"#,
    )
    .unwrap();
    let out = tmp.path().join("o");
    let strict = mix(&config, &pairs, &model, &out, &["--max-errors", "2"]);
    assert!(!strict.status.success());
    let err = text(&strict.stderr);
    assert!(
        err.contains("AllNLI.jsonl.gz") && err.contains("line 53"),
        "the third malformed line is named: {err}"
    );
    assert!(!out.join("index.json").exists(), "nothing mixed");
    assert!(!out.join(".sources/AllNLI").exists(), "nothing converted");

    let lenient = mix(&config, &pairs, &model, &out, &["--max-errors", "3"]);
    assert!(lenient.status.success(), "{}", text(&lenient.stderr));
    let m = Manifest::read(&out.join(".sources/AllNLI")).unwrap();
    assert_eq!((m.rows, m.skipped["invalid JSON"]), (50, 3));
}
