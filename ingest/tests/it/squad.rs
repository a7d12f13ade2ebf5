//! SQuAD on the real SQuAD 2.0 samples (one re-indented article, one original one-line cut), plus
//! hand-made broken files.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn real_samples_rows_and_counts() {
    let Some(dir) = fixture_dir("squad2") else {
        return;
    };
    let pretty = dir.join("dev-v2.0.Normans.pretty.json");
    let one_line = dir.join("dev-v2.0.hf-dummy.json");
    let run = ingest("squad", &[pretty.clone(), one_line.clone()]);
    let rows = run.rows("squad");
    // 208 questions in the article, 112 unanswerable; then the 2 of the one-line cut.
    assert_eq!(rows.len(), 98);
    let m = run.manifest("squad");
    assert_eq!(
        (m.rows, skipped(&m)),
        (98, vec![(s("unanswerable (SQuAD 2.0)"), 112)])
    );
    assert_eq!(rows[0].anchor, "In what country is Normandy located?");
    assert!(rows[0].positive.starts_with(
        "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who"
    ));
    assert_eq!(
        rows[0].source_id.as_deref(),
        Some("56ddde6b9a695914005b9628")
    );
    assert_eq!(
        rows[95].anchor,
        "What tradition were the Saint-Evroul monks known for?"
    );
    assert!(rows[95]
        .positive
        .starts_with("At Saint Evroul, a tradition of singing had developed"));
    // Trailing spaces in questions are trimmed.
    let q = rows
        .iter()
        .find(|r| r.source_id.as_deref() == Some("56de16ca4396321400ee25c6"))
        .unwrap();
    assert_eq!(q.anchor, "Who killed Harold II?");
    // The one-line original and the re-indented copy give the same rows for the same questions.
    assert_eq!(rows[96], rows[0]);
    assert_eq!(rows[97], rows[1]);
    assert_eq!(m.inputs.len(), 2);
}

#[test]
fn broken_files_are_counted_and_located() {
    let tmp = tempfile::tempdir().unwrap();
    // Hand-made, in the documented layout: a question without `question`, an empty one, an
    // unanswerable one and a good one.
    let good = write_input(
        tmp.path(),
        "train-v2.0.json.gz",
        br#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Some context.",
 "qas": [{"id": "a", "answers": []}, {"question": "  ", "id": "b"},
 {"question": "Why?", "id": "c", "is_impossible": true, "answers": []},
 {"question": "What?", "id": "d", "answers": [{"text": "x", "answer_start": 0}]}]}]}]}"#,
    );
    let cut = write_input(
        tmp.path(),
        "cut.json",
        b"{\"version\": \"v1.1\", \"data\": [{\"title\": \"T\",\n \"paragraphs\": [{\"context\": \"C\"",
    );
    let empty = write_input(tmp.path(), "empty.json", b"");
    let bad_utf8 = write_input(
        tmp.path(),
        "utf8.json",
        b"{\"data\": [{\"paragraphs\": [{\"context\": \"\xff\", \"qas\": []}]}]}",
    );
    let run = ingest_with("squad", std::slice::from_ref(&good), 1);
    let rows = run.rows("squad");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].anchor.as_str(), rows[0].positive.as_str()),
        ("What?", "Some context.")
    );
    let m = run.manifest("squad");
    assert_eq!(
        skipped(&m),
        vec![
            (s("empty question"), 1),
            (s("missing field"), 1),
            (s("unanswerable (SQuAD 2.0)"), 1),
        ]
    );
    let ex = run.report.examples.join("\n");
    assert!(
        ex.contains("train-v2.0.json.gz:question 1: missing field"),
        "{ex}"
    );

    // A file that does not parse is the whole document lost: the run fails naming where it
    // broke, whatever files came with it.
    for (file, want) in [
        (
            &cut,
            "cut.json:line 2: invalid JSON (a SQuAD JSON file), column",
        ),
        (&empty, "empty.json: the file is empty"),
        (
            &bad_utf8,
            "utf8.json:line 1: invalid JSON (a SQuAD JSON file), column",
        ),
    ] {
        let (out, res) = try_ingest(
            "squad",
            &[good.clone(), file.clone()],
            &IngestOptions::default(),
        );
        let err = res.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert!(!out.path().join("squad").exists());
    }

    // --max-errors bounds the bad questions.
    let opts = IngestOptions {
        max_errors: 0,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("squad", std::slice::from_ref(&good), &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("train-v2.0.json.gz:question 1") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("squad").exists());

    // A truncated gzip and a missing file are errors naming the file.
    let big = format!(
        "{{\"data\": [{{\"paragraphs\": [{}]}}]}}",
        (0..3000)
            .map(|i| format!(
                "{{\"context\": \"context number {i}\", \"qas\": [{{\"question\": \"q{i}?\", \"id\": \"{i}\"}}]}}"
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let gz = write_input(tmp.path(), "big.json.gz", big.as_bytes());
    assert_eq!(
        ingest("squad", std::slice::from_ref(&gz))
            .manifest("squad")
            .rows,
        3000
    );
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("squad", &[gz], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("big.json.gz") && err.contains("truncated"),
        "{err}"
    );
    let (_out, res) = try_ingest(
        "squad",
        &[tmp.path().join("nope.json")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("nope.json"));
}
