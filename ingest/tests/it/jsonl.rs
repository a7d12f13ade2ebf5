//! The normalized jsonl source, and the framework's handling of bad input, on hand-made samples in
//! the documented upstream format (no real sample exists: see shared/fixtures/MISSING.md).
use crate::common;
use common::*;
use ingest::{IngestError, IngestOptions};
use schemas::PairRecord;

const MIXED: &str = concat!(
    r#"["what is rust?", "A systems programming language."]"#,
    "\n",
    r#"{"texts": ["who wrote hamlet?", "Shakespeare wrote Hamlet."]}"#,
    "\n",
    r#"{"set": ["how old is the earth?", "what is the age of earth?", "earth age?"]}"#,
    "\n",
    r#"{"query": "capital of france", "pos": ["Paris is the capital.", "Paris."], "neg": []}"#,
    "\n",
    r#"["only one"]"#,
    "\n",
    r#"["a", "b", "c"]"#,
    "\n",
    r#"["", "empty anchor"]"#,
    "\n",
    "not json\n",
);

#[test]
fn every_line_layout_of_a_pair_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(tmp.path(), "Hand_made_pairs.jsonl.gz", MIXED.as_bytes());
    let run = ingest_with("jsonl", &[input], 1);
    assert_eq!(
        run.rows("hand_made_pairs"),
        vec![
            PairRecord::pair("what is rust?", "A systems programming language."),
            PairRecord::pair("who wrote hamlet?", "Shakespeare wrote Hamlet."),
            PairRecord::pair("how old is the earth?", "what is the age of earth?"),
            PairRecord::pair("capital of france", "Paris is the capital."),
            PairRecord::pair("capital of france", "Paris."),
        ]
    );
    let m = run.manifest("hand_made_pairs");
    assert_eq!(m.columns.columns(), 2);
    assert_eq!(
        skipped(&m),
        vec![
            ("column count differs from the dataset's".to_owned(), 2),
            ("empty text".to_owned(), 1),
            ("invalid JSON".to_owned(), 1),
        ]
    );
}

#[test]
fn triplets_and_dataset_name_option() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(
        tmp.path(),
        "t.jsonl",
        concat!(
            r#"{"query": "q1", "pos": ["p1", "p2"], "neg": ["n1"]}"#,
            "\n",
            r#"["q2", "p3", "n2"]"#,
            "\n",
            r#"["q3", "p4"]"#,
            "\n",
        )
        .as_bytes(),
    );
    let opts = IngestOptions {
        dataset: Some("msmarco_v3".into()),
        ..IngestOptions::default()
    };
    let (dir, res) = try_ingest("jsonl", &[input], &opts);
    res.unwrap();
    let rows = read_rows(&dir.path().join("msmarco_v3"));
    assert_eq!(
        rows,
        vec![
            PairRecord::triplet("q1", "p1", "n1"),
            PairRecord::triplet("q1", "p2", "n1"),
            PairRecord::triplet("q2", "p3", "n2"),
        ]
    );
}

fn big_input(lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "[\"question {i}\", \"answer {i} {}\"]\n",
                "x".repeat(i % 50)
            )
        })
        .collect()
}

#[test]
fn same_output_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    // Over 1 MiB so the parallel driver really splits it into several chunks.
    let input = write_input(tmp.path(), "big.jsonl.gz", big_input(40_000).as_bytes());
    let one = ingest_with("jsonl", std::slice::from_ref(&input), 1);
    let two = ingest_with("jsonl", std::slice::from_ref(&input), 2);
    let (a, b) = (one.manifest("big"), two.manifest("big"));
    assert_eq!(a.rows, 40_000);
    assert_eq!(a.files, b.files, "byte-identical parts (same sha256)");
}

#[test]
fn truncated_gzip_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let full = write_input(tmp.path(), "full.jsonl.gz", big_input(20_000).as_bytes());
    let bytes = std::fs::read(&full).unwrap();
    let cut = write_input(tmp.path(), "cut.jsonl", &bytes[..bytes.len() / 2]);
    let out = tmp.path().join("out");
    for threads in [1, 2] {
        let opts = IngestOptions {
            threads,
            dataset: Some("cut".into()),
            ..IngestOptions::default()
        };
        let err = ingest::run(
            "jsonl",
            std::slice::from_ref(&cut),
            &out,
            &opts,
            &schemas::NoProgress,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cut.jsonl") && msg.contains("truncated"),
            "{msg}"
        );
        assert!(
            !out.join("cut").exists(),
            "no dataset folder after a failed run"
        );
        // Only the dataset's lock file (`.cut.lock`, which outlives runs by design) remains.
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(".cut.lock")],
            "no temp folder left behind"
        );
    }
}

#[test]
fn invalid_utf8_is_a_counted_skip_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes =
        b"[\"ok\", \"fine\"]\n[\"bad \xff\xfe\", \"x\"]\n[\"ok2\", \"fine2\"]\n".to_vec();
    bytes.extend_from_slice(b"[\"ok3\", \"fine3\"]");
    let input = write_input(tmp.path(), "u.jsonl", &bytes);
    let run = ingest_with("jsonl", &[input], 2);
    assert_eq!(
        run.rows("u").len(),
        3,
        "the last line has no newline and still counts"
    );
    assert_eq!(
        skipped(&run.manifest("u")),
        vec![("invalid UTF-8".to_owned(), 1)]
    );
    assert!(
        run.report.examples[0].contains("u.jsonl:line 2"),
        "{:?}",
        run.report.examples
    );
}

#[test]
fn max_errors_bounds_malformed_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "[\"a\", \"b\"]\n{oops\n{oops\n{oops\n[\"c\", \"d\"]\n";
    let input = write_input(tmp.path(), "m.jsonl", text.as_bytes());
    let strict = IngestOptions {
        max_errors: 2,
        ..IngestOptions::default()
    };
    let (_dir, res) = try_ingest("jsonl", std::slice::from_ref(&input), &strict);
    match res {
        Err(IngestError::TooManyErrors {
            location,
            limit: 2,
            count: 3,
            ..
        }) => {
            assert_eq!(location.record, 4);
            assert!(location.path.ends_with("m.jsonl"));
        }
        other => panic!("expected TooManyErrors, got {other:?}"),
    }
    let lenient = IngestOptions {
        max_errors: 3,
        ..IngestOptions::default()
    };
    let (dir, res) = try_ingest("jsonl", &[input], &lenient);
    assert_eq!(res.unwrap().malformed, 3);
    assert_eq!(read_rows(&dir.path().join("m")).len(), 2);
}

#[test]
fn empty_and_missing_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = write_input(tmp.path(), "empty.jsonl", b"");
    let (_d, res) = try_ingest("jsonl", &[empty], &IngestOptions::default());
    let msg = res.unwrap_err().to_string();
    assert!(msg.contains("empty.jsonl: the file is empty"), "{msg}");

    let missing = tmp.path().join("nope.jsonl.gz");
    let (_d, res) = try_ingest("jsonl", &[missing], &IngestOptions::default());
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains("nope.jsonl.gz") && msg.contains("No such file"),
        "{msg}"
    );

    let (_d, res) = try_ingest(
        "no_such_source",
        &[tmp.path().to_path_buf()],
        &IngestOptions::default(),
    );
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("unknown source `no_such_source`"));
}

#[test]
fn rerun_replaces_the_dataset_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = write_input(tmp.path(), "d.jsonl", big_input(10).as_bytes());
    let opts = IngestOptions::default();
    ingest::run("jsonl", &[first], &out, &opts, &schemas::NoProgress).unwrap();
    assert_eq!(read_rows(&out.join("d")).len(), 10);
    let second = write_input(
        &tmp.path().join("out"),
        "../d2.jsonl",
        big_input(3).as_bytes(),
    );
    let opts = IngestOptions {
        dataset: Some("d".into()),
        ..IngestOptions::default()
    };
    ingest::run("jsonl", &[second], &out, &opts, &schemas::NoProgress).unwrap();
    assert_eq!(read_rows(&out.join("d")).len(), 3);
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            std::ffi::OsString::from(".d.lock"),
            std::ffi::OsString::from("d")
        ],
        "no temp or old folders remain, only the lock file"
    );
}
