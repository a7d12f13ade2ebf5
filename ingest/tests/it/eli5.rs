//! ELI5 on the real ELI5-Category sample (a one-line JSON array of 80 records, plain and gzipped),
//! plus hand-made records in the HF jsonl layout.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn real_sample_rows_and_counts() {
    let Some(dir) = fixture_dir("eli5") else {
        return;
    };
    let run = ingest("eli5", &[dir.join("eli5-category-test.json")]);
    let rows = run.rows("eli5");
    assert_eq!(rows.len(), 80);
    let m = run.manifest("eli5");
    assert_eq!((m.rows, m.skipped_total()), (80, 0));
    assert_eq!(rows[0].source_id.as_deref(), Some("5lcm18/dbuo48e"));
    assert_eq!(
        rows[0].anchor,
        "Why do old games running on new hardware still have technical issues?"
    );
    assert!(rows[0].positive.starts_with(
        "The XBox is emulating NES hardware and running the emulation at a set speed. If it ran it \
         at as fast as possible, then it would be several times faster"
    ));
    assert_eq!(rows[79].source_id.as_deref(), Some("5q0wzm/dcvfd3h"));
    assert_eq!(
        rows[79].anchor,
        "How, if at all, are traffic lights coordinated within a proximal geographic area?"
    );
    // The gzipped copy gives the same rows.
    let gz = ingest("eli5", &[dir.join("eli5-category-test.json.gz")]);
    assert_eq!(gz.rows("eli5"), rows);
}

fn record(id: &str, title: &str, texts: &[&str], scores: &[i64]) -> String {
    serde_json::json!({
        "q_id": id, "title": title, "selftext": "", "document": "",
        "answers": {
            "a_id": texts.iter().enumerate().map(|(i, _)| format!("{id}a{i}")).collect::<Vec<_>>(),
            "text": texts, "score": scores
        }
    })
    .to_string()
}

#[test]
fn jsonl_layout_best_answer_and_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    // Hand-made lines in the HF eli5 jsonl layout.
    let mut lines = vec![
        record(
            "q1",
            "Why &amp; how?",
            &["low", "high &gt; low", "high too"],
            &[1, 5, 5],
        ),
        record("q2", "No answers", &[], &[]),
        record("q3", "  ", &["x"], &[1]),
        s("{\"q_id\": \"q4\", \"title\": \"cut"),
        record("q5", "Blank answers skipped", &[" ", "real"], &[9, 1]),
        s("{\"q_id\": \"q6\", \"title\": \"no answers field\"}"),
    ];
    for i in 0..3000 {
        lines.push(record(
            &format!("n{i}"),
            &format!("title {i}"),
            &["answer"],
            &[i],
        ));
    }
    let input = write_input(tmp.path(), "eli5.jsonl.gz", lines.join("\n").as_bytes());
    let one = ingest_with("eli5", std::slice::from_ref(&input), 1);
    let rows = one.rows("eli5");
    assert_eq!(
        rows[..2]
            .iter()
            .map(|r| (
                r.source_id.clone().unwrap(),
                r.anchor.clone(),
                r.positive.clone()
            ))
            .collect::<Vec<_>>(),
        vec![
            (s("q1/q1a1"), s("Why & how?"), s("high > low")),
            (s("q5/q5a1"), s("Blank answers skipped"), s("real")),
        ]
    );
    let m = one.manifest("eli5");
    assert_eq!(
        (m.rows, skipped(&m)),
        (
            3002,
            vec![
                (s("empty title"), 1),
                (s("invalid JSON"), 1),
                (s("no answer"), 1),
                (s("unexpected layout"), 1)
            ]
        )
    );
    let ex = one.report.examples.join("\n");
    assert!(ex.contains("eli5.jsonl.gz:line 4: invalid JSON"), "{ex}");
    assert!(
        ex.contains(
            "eli5.jsonl.gz:line 6: unexpected layout: valid JSON, but missing field `answers`"
        ),
        "{ex}"
    );
    // Parallel parsing keeps the order.
    let two = ingest_with("eli5", std::slice::from_ref(&input), 2);
    assert_eq!(two.rows("eli5"), rows);

    let opts = IngestOptions {
        max_errors: 1,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("eli5", &[input], &opts);
    assert!(res.unwrap_err().to_string().contains("line 6"));
    assert!(!out.path().join("eli5").exists());
}

#[test]
fn broken_arrays_and_other_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = record("a", "A title", &["an answer"], &[3]);
    let cut = write_input(
        d,
        "cut.json",
        format!("[{good},\n{{\"q_id\": \"b\", \"title\": 5, \"answers\": {{\"text\": []}}}},\n{good}, {{\"q_id\": \"c\"")
            .as_bytes(),
    );
    let empty = write_input(d, "empty.json", b"  \n");
    let utf8 = write_input(
        d,
        "utf8.jsonl",
        b"{\"title\": \"\xff\", \"answers\": {\"text\": []}}\n",
    );
    // A cut array fails naming where it broke; an empty file is an error.
    let (out, res) = try_ingest("eli5", &[utf8.clone(), cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.json:line 3: invalid JSON document at byte")
            && err.contains("unexpected end of file"),
        "{err}"
    );
    assert!(!out.path().join("eli5").exists());
    let (_o, res) = try_ingest("eli5", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("empty.json: the file is empty"), "{err}");

    // Bad elements of a whole array, and bad lines, are counted with their place.
    let whole = write_input(
        d,
        "whole.json",
        format!(
            "[{good},\n{{\"q_id\": \"b\", \"title\": 5, \"answers\": {{\"text\": []}}}},\n{good}]"
        )
        .as_bytes(),
    );
    let run = ingest_with("eli5", &[whole, utf8], 1);
    let m = run.manifest("eli5");
    assert_eq!(m.rows, 2);
    assert_eq!(
        skipped(&m),
        vec![(s("invalid UTF-8"), 1), (s("unexpected layout"), 1)]
    );
    let ex = run.report.examples.join("\n");
    assert!(
        ex.contains("whole.json:record 2: unexpected layout: valid JSON, but not in the expected layout: invalid type"),
        "{ex}"
    );
    assert!(ex.contains("(file line 2)"), "{ex}");
    assert!(ex.contains("utf8.jsonl:line 1: invalid UTF-8"), "{ex}");

    let csv = write_input(d, "other.json", b"q,a\n");
    let (_o, res) = try_ingest("eli5", &[csv], &IngestOptions::default());
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("other.json: starts with `q`"));
    let big: Vec<String> = (0..3000)
        .map(|i| record(&i.to_string(), "t", &["x"], &[1]))
        .collect();
    let gz = write_input(d, "big.json.gz", format!("[{}]", big.join(",")).as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let (_o, res) = try_ingest("eli5", &[gz], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("big.json.gz") && err.contains("truncated"),
        "{err}"
    );
    let (_o, res) = try_ingest("eli5", &[d.join("gone.json")], &IngestOptions::default());
    assert!(res.unwrap_err().to_string().contains("gone.json"));
}
