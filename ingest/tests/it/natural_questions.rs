//! Natural Questions: the real NQ-open dev sample (no passages) and a hand-made simplified-NQ sample
//! (ingest/tests/samples/natural_questions, see its README).
use crate::common;
use common::*;
use ingest::IngestOptions;
use std::path::PathBuf;
use testdata::fixture_dir;

fn s(x: &str) -> String {
    x.to_owned()
}

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples/natural_questions/simplified-nq-sample.jsonl")
}

#[test]
fn hand_made_simplified_sample() {
    let run = ingest("natural_questions", &[sample()]);
    let rows: Vec<(String, String, String)> = run
        .rows("natural_questions")
        .into_iter()
        .map(|r| (r.source_id.unwrap(), r.anchor, r.positive))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                s("1000000000000000001"),
                s("when was the last time anyone was on the moon"),
                s("A Moon landing is the arrival of a spacecraft on the surface of the Moon . The \
                   last crewed landing was Apollo 17 in December 1972 .")
            ),
            (
                s("1000000000000000003"),
                s("who created the python programming language"),
                s("It was created by Guido van Rossum .")
            ),
        ]
    );
    let m = run.manifest("natural_questions");
    assert_eq!(skipped(&m), vec![(s("no long answer"), 1)]);
    // No NQ-open input: no natural_questions_open dataset.
    assert!(!run.out().join("natural_questions_open").exists());
    assert_eq!(run.report.manifests.len(), 1);
}

#[test]
fn real_nq_open_sample() {
    let Some(dir) = fixture_dir("natural_questions") else {
        return;
    };
    let run = ingest(
        "natural_questions",
        &[dir.join("NQ-open.dev.jsonl"), sample()],
    );
    // NQ-open has no passages: counted, not paired, in natural_questions.
    let m = run.manifest("natural_questions");
    assert_eq!(
        (m.rows, skipped(&m)),
        (
            2,
            vec![(s("no long answer"), 1), (s("no passage (NQ-open)"), 200)]
        )
    );
    // ...and kept as (question, first answer) in natural_questions_open.
    let open = run.rows("natural_questions_open");
    assert_eq!(open.len(), 200);
    assert_eq!(
        (open[0].anchor.as_str(), open[0].positive.as_str()),
        (
            "when was the last time anyone was on the moon",
            "14 December 1972 UTC"
        )
    );
    assert_eq!(
        (open[1].anchor.as_str(), open[1].positive.as_str()),
        (
            "who wrote he ain't heavy he's my brother lyrics",
            "Bobby Scott"
        )
    );
    let mo = run.manifest("natural_questions_open");
    assert_eq!((mo.rows, mo.skipped_total()), (200, 0));
    assert_eq!(mo.inputs.len(), 2);
}

#[test]
fn bad_lines_threads_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(sample()).unwrap();
    text.push_str("{\"question_text\": \"cut\n");
    text.push_str("{\"question_text\": \"q\", \"document_text\": \"a b\", \"annotations\": [{\"long_answer\": {\"start_token\": 1, \"end_token\": 9}}]}\n");
    text.push_str("{\"example_id\": 5}\n");
    text.push_str("{\"question\": \"open q\", \"answer\": []}\n");
    for i in 0..3000 {
        text.push_str(&format!(
            "{{\"question_text\": \"q{i}\", \"document_text\": \"<P> t{i} </P>\", \"example_id\": {i}, \"annotations\": [{{\"long_answer\": {{\"start_token\": 0, \"end_token\": 3}}}}]}}\n"
        ));
    }
    let mut bytes = text.into_bytes();
    bytes.extend(b"{\"question_text\": \"\xff\"}\n");
    let input = write_input(tmp.path(), "nq.jsonl.gz", &bytes);
    let one = ingest_with("natural_questions", std::slice::from_ref(&input), 1);
    let m = one.manifest("natural_questions");
    assert_eq!(
        (m.rows, skipped(&m)),
        (
            3002,
            vec![
                (s("bad span"), 1),
                (s("invalid JSON"), 1),
                (s("invalid UTF-8"), 1),
                (s("missing field"), 1),
                (s("no long answer"), 1),
                (s("no passage (NQ-open)"), 1),
            ]
        )
    );
    let ex = one.report.examples.join("\n");
    assert!(ex.contains("nq.jsonl.gz:line 4: invalid JSON"), "{ex}");
    assert!(
        ex.contains("nq.jsonl.gz:line 5: bad span: long answer tokens 1..9"),
        "{ex}"
    );
    assert!(ex.contains("nq.jsonl.gz:line 6: missing field"), "{ex}");
    // The first line is simplified NQ, so no natural_questions_open dataset is declared.
    assert_eq!(one.report.manifests.len(), 1);
    let two = ingest_with("natural_questions", std::slice::from_ref(&input), 2);
    assert_eq!(two.rows("natural_questions"), one.rows("natural_questions"));

    let opts = IngestOptions {
        max_errors: 2,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("natural_questions", std::slice::from_ref(&input), &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("line 6") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("natural_questions").exists());

    let empty = write_input(tmp.path(), "empty.jsonl", b"");
    // An empty input is an error, not an empty dataset.
    let (_out, res) = try_ingest("natural_questions", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );
    let gz = std::fs::read(&input).unwrap();
    let cut = write_input(tmp.path(), "cut.jsonl.gz", &gz[..gz.len() / 2]);
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let (_o, res) = try_ingest("natural_questions", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.jsonl.gz") && err.contains("truncated"),
        "{err}"
    );
    let (_o, res) = try_ingest(
        "natural_questions",
        &[tmp.path().join("absent.jsonl")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("absent.jsonl"));
}
