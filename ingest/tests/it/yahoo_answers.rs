//! Yahoo Answers on the real 5 + 5 row sample (huggingface/datasets dummy data), plus
//! hand-made bad inputs in the same CSV layout.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

const DATASETS: [&str; 3] = [
    "yahoo_title_answer",
    "yahoo_title_question",
    "yahoo_question_answer",
];

#[test]
fn real_sample_rows_and_counts() {
    let Some(dir) = fixture_dir("yahoo_answers") else {
        return;
    };
    // The folder: only the two .csv files are taken (classes.txt, readme.txt are not data).
    let run = ingest("yahoo_answers", std::slice::from_ref(&dir));
    let ta = run.rows("yahoo_title_answer");
    let tq = run.rows("yahoo_title_question");
    let qa = run.rows("yahoo_question_answer");
    // Sorted folder order: test.csv, then train.csv.
    assert_eq!(ta.len(), 10);
    assert_eq!(ta[0].anchor, "What makes friendship click?");
    assert!(ta[0]
        .positive
        .starts_with("good communication is what does it.  Can you move beyond small talk"));
    assert_eq!(ta[0].source_id.as_deref(), Some("test.csv:1"));
    assert_eq!(ta[2].anchor, "What did the itsy bitsy sipder climb up?");
    assert_eq!(ta[2].positive, "waterspout");
    // train.csv row 2: `<br />\n` is one newline; the row's content is its own pair.
    assert_eq!(ta[6].source_id.as_deref(), Some("train.csv:2"));
    assert_eq!(ta[6].anchor, "What is the best off-road motorcycle trail ?");
    assert_eq!(
        ta[6].positive,
        "i hear that the mojave road is amazing!\nsearch for it online."
    );
    // train.csv row 3: `""bad""` is `"bad"`, `\n` a newline.
    assert!(ta[7]
        .positive
        .contains("which raises \"bad\" LDL cholesterol and can lead"));
    assert!(ta[7]
        .positive
        .contains("heart disease. \nUntil very recently"));
    assert!(ta[8].positive.starts_with(
        "according to the www.fedex.com web site:\nAir Fleet\n  \n670 aircraft, including: \n47 Airbus"
    ));
    assert!(!ta.iter().any(|r| r.positive.contains("<br")));

    // Three test.csv rows have an empty content: no title-question / question-answer pair.
    assert_eq!(tq.len(), 7);
    assert_eq!(
        (tq[0].anchor.as_str(), tq[0].positive.as_str()),
        (
            "What makes friendship click?",
            "How does the spark keep going?"
        )
    );
    assert_eq!(tq[2].source_id.as_deref(), Some("train.csv:1"));
    assert_eq!(tq[2].positive, "or even on some surfaces?");
    assert_eq!(qa.len(), 7);
    assert_eq!(qa[3].anchor, "long-distance trail throughout CA");
    assert_eq!(
        qa[3].positive,
        "i hear that the mojave road is amazing!\nsearch for it online."
    );

    let counts: Vec<_> = DATASETS
        .iter()
        .map(|d| {
            let m = run.manifest(d);
            (m.rows, skipped(&m))
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (10, vec![]),
            (7, vec![("empty content".to_owned(), 3)]),
            (7, vec![("empty content".to_owned(), 3)]),
        ]
    );
    let m = run.manifest("yahoo_title_answer");
    assert_eq!(m.inputs.len(), 2);
    assert!(m.inputs[0].path.ends_with("test.csv"));
    assert_eq!(
        m.inputs[1].sha256,
        schemas::sha256_file(&dir.join("train.csv")).unwrap()
    );
}

#[test]
fn gzip_input_gives_the_same_rows() {
    let Some(dir) = fixture_dir("yahoo_answers") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let raw = std::fs::read(dir.join("train.csv")).unwrap();
    let gz = write_input(tmp.path(), "train.csv.gz", &raw);
    let a = ingest("yahoo_answers", &[dir.join("train.csv")]);
    let b = ingest("yahoo_answers", &[gz]);
    for d in DATASETS {
        assert_eq!(a.rows(d), b.rows(d), "{d}");
    }
}

// Hand-made rows in the documented layout.
const GOOD: &str = "\"1\",\"Title one?\",\"Body one\",\"Answer one\"\n";

#[test]
fn multiline_fields_blank_answers_and_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    text.extend_from_slice(GOOD.as_bytes());
    // A real newline inside a quoted field, and CRLF line ends.
    text.extend_from_slice(b"\"2\",\"Title\r\ntwo?\",\"\",\"Answer \"\"two\"\"\"\r\n");
    // Missing column.
    text.extend_from_slice(b"\"3\",\"Title three?\",\"Body\"\n");
    // Invalid UTF-8.
    text.extend_from_slice(b"\"4\",\"Bad \xff byte\",\"b\",\"a\"\n");
    // Empty answer (whitespace and a literal \n only).
    text.extend_from_slice(b"\"5\",\"Title five?\",\"Body five\",\" \\n \"\n");
    text.extend_from_slice(b"\n");
    text.extend_from_slice(GOOD.as_bytes());
    let input = write_input(tmp.path(), "train.csv", &text);
    let run = ingest_with("yahoo_answers", &[input], 1);
    let ta = run.rows("yahoo_title_answer");
    assert_eq!(
        ta.iter()
            .map(|r| (r.anchor.as_str(), r.positive.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("Title one?", "Answer one"),
            ("Title\ntwo?", "Answer \"two\""),
            ("Title one?", "Answer one"),
        ]
    );
    // Record 2 spans lines 2-3; the blank line does not count as a row.
    assert_eq!(ta[1].source_id.as_deref(), Some("train.csv:2"));
    assert_eq!(ta[2].source_id.as_deref(), Some("train.csv:6"));
    assert_eq!(
        skipped(&run.manifest("yahoo_title_answer")),
        vec![
            ("empty answer".to_owned(), 1),
            ("invalid UTF-8".to_owned(), 1),
            ("missing column".to_owned(), 1),
        ]
    );
    assert_eq!(
        skipped(&run.manifest("yahoo_title_question")),
        vec![
            ("empty content".to_owned(), 1),
            ("invalid UTF-8".to_owned(), 1),
            ("missing column".to_owned(), 1),
        ]
    );
    assert_eq!(run.report.malformed, 2);
    assert!(
        run.report.examples[0].contains("train.csv:line 4: missing column"),
        "{:?}",
        run.report.examples
    );
    assert!(
        run.report.examples[1].contains("train.csv:line 5: invalid UTF-8"),
        "{:?}",
        run.report.examples
    );
}

#[test]
fn unterminated_quote_is_one_malformed_record() {
    let tmp = tempfile::tempdir().unwrap();
    // A quote left open runs to the end of the file (a later quote would close it: CSV cannot
    // tell), and is reported there, with the line it started on.
    let text = format!("{GOOD}\"2\",\"Title\",\"never closed\nmore text\n");
    let input = write_input(tmp.path(), "t.csv", text.as_bytes());
    let run = ingest_with("yahoo_answers", &[input], 1);
    assert_eq!(run.rows("yahoo_title_answer").len(), 1);
    assert_eq!(run.report.malformed, 1);
    assert!(
        run.report.examples[0].contains("t.csv:line 2: malformed CSV: unterminated quoted field"),
        "{:?}",
        run.report.examples
    );
}

#[test]
fn max_errors_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("{GOOD}\"2\",\"x\"\n\"3\",\"y\"\n{GOOD}");
    let input = write_input(tmp.path(), "t.csv", text.as_bytes());
    let opts = IngestOptions {
        max_errors: 1,
        threads: 1,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("yahoo_answers", &[input], &opts);
    let err = res.unwrap_err().to_string();
    assert!(err.contains("t.csv:line 3"), "{err}");
    assert!(err.contains("--max-errors"), "{err}");
    assert!(
        !out.path().join("yahoo_title_answer").exists(),
        "nothing half-written looks complete"
    );
}

#[test]
fn truncated_gzip_empty_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = write_input(tmp.path(), "full.csv.gz", GOOD.repeat(2000).as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    let cut = tmp.path().join("cut.csv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("yahoo_answers", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.csv.gz") && err.contains("truncated"),
        "{err}"
    );

    let empty = write_input(tmp.path(), "empty.csv", b"");
    // An empty input is an error, not three empty datasets.
    let (_out, res) = try_ingest("yahoo_answers", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );

    let (_out, res) = try_ingest(
        "yahoo_answers",
        &[tmp.path().join("nope.csv")],
        &IngestOptions::default(),
    );
    let err = res.unwrap_err().to_string();
    assert!(err.contains("nope.csv"), "{err}");
}
