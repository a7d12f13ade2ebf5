//! GooAQ on the real 3-record sample (huggingface/datasets dummy data).
use crate::common;
use common::*;
use testdata::fixture_dir;

#[test]
fn real_sample_rows_and_counts() {
    let Some(dir) = fixture_dir("gooaq") else {
        return;
    };
    let run = ingest("gooaq", &[dir.join("gooaq.jsonl")]);
    let rows = run.rows("gooaq");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].anchor, "who are in the russell group universities?");
    assert!(
        rows[0].positive.starts_with(
            "University of Birmingham. University of Bristol. University of Cambridge."
        ),
        "collection answers are joined: {}",
        rows[0].positive
    );
    assert_eq!(rows[0].source_id.as_deref(), Some("3880119"));
    assert_eq!(
        rows[1].anchor,
        "how to recover deleted images from unrooted android?"
    );
    assert!(rows.iter().all(|r| r.negative.is_none()));
    let m = run.manifest("gooaq");
    assert_eq!((m.rows, m.skipped_total(), m.columns.columns()), (3, 0, 2));
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(
        m.inputs[0].sha256,
        schemas::sha256_file(&dir.join("gooaq.jsonl")).unwrap()
    );
}

#[test]
fn null_answers_and_bad_lines_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    // Hand-made lines in the documented GooAQ format.
    let input = write_input(
        tmp.path(),
        "g.jsonl.gz",
        concat!(
            r#"{"id": 1, "question": "what is a cat?", "short_answer": null, "answer": "A small feline.", "answer_type": "feat_snip"}"#, "\n",
            r#"{"id": 2, "question": "how tall?", "short_answer": "2 m", "answer": null, "answer_type": "unit_conv"}"#, "\n",
            r#"{"id": 3, "question": "broken"#, "\n",
            "\n",
            r#"{"id": 4, "question": "why?", "answer": "Because.", "answer_type": "feat_snip"}"#, "\n",
        )
        .as_bytes(),
    );
    let run = ingest_with("gooaq", &[input], 1);
    let rows = run.rows("gooaq");
    assert_eq!(
        rows.iter()
            .map(|r| r.source_id.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["1", "4"]
    );
    let m = run.manifest("gooaq");
    assert_eq!(
        skipped(&m),
        vec![("invalid JSON".to_owned(), 1), ("no answer".to_owned(), 1)]
    );
    assert_eq!(run.report.malformed, 1);
    assert!(
        run.report.examples[0].contains("g.jsonl.gz:line 3"),
        "{:?}",
        run.report.examples
    );
}
