//! WikiAnswers: no real sample exists (afader/oqa ships none), so these run on the HAND-MADE
//! sample in tests/samples/wikianswers/ (see its README) and on hand-made inputs written here.
use crate::common;
use std::path::PathBuf;

use common::*;
use ingest::IngestOptions;

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples/wikianswers")
}

fn pairs(run: &Run) -> Vec<(String, String, String)> {
    run.rows("wikianswers")
        .into_iter()
        .map(|r| (r.anchor, r.positive, r.source_id.unwrap()))
        .collect()
}

fn t(a: &str, b: &str, id: &str) -> (String, String, String) {
    (a.to_owned(), b.to_owned(), id.to_owned())
}

#[test]
fn hand_made_sample_pairs_and_counts() {
    // The folder: the README is not taken as data.
    let run = ingest("wikianswers", &[sample_dir()]);
    assert_eq!(
        pairs(&run),
        vec![
            t(
                "how do you make a paper airplane?",
                "how do i make a paper plane?",
                "clusters-00.txt:1"
            ),
            t(
                "who was the first president of the united states?",
                "who was the first us president?",
                "clusters-00.txt:2"
            ),
            t(
                "first president of america?",
                "who was the first president of the usa?",
                "clusters-00.txt:2"
            ),
            // Whitespace variants of one question count once.
            t(
                "why is the sky blue?",
                "what makes the sky blue?",
                "clusters-00.txt:4"
            ),
            t(
                "how many legs does a spider have?",
                "how many legs do spiders have?",
                "clusters-00.txt:6"
            ),
        ]
    );
    let m = run.manifest("wikianswers");
    assert_eq!(m.rows, 5);
    assert_eq!(
        skipped(&m),
        vec![
            ("fewer than 2 distinct questions".to_owned(), 2),
            ("odd question left unpaired".to_owned(), 1),
        ]
    );
    assert_eq!(m.inputs.len(), 1);
}

#[test]
fn gzip_parts_big_clusters_and_threads() {
    let tmp = tempfile::tempdir().unwrap();
    // A cluster of 101 questions gives 50 pairs (not 5050), each question once.
    let mut big: Vec<String> = (0..101)
        .map(|i| format!("q:question number {i}?"))
        .collect();
    big.push("a:an answer".into());
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "q:how is {i} made?\tq:how do they make {i}?\ta:somehow\n"
        ));
        if i % 1000 == 0 {
            text.push_str(&big.join("\t"));
            text.push('\n');
        }
    }
    let a = write_input(tmp.path(), "part-00.gz", text.as_bytes());
    let b = write_input(tmp.path(), "part-01.gz", b"q:x?\tq:y?\n");
    let one = ingest_with("wikianswers", &[a.clone(), b.clone()], 1);
    let two = ingest_with("wikianswers", &[a, b], 2);
    let rows = one.rows("wikianswers");
    assert_eq!(rows.len(), 20_000 + 20 * 50 + 1);
    assert_eq!(rows, two.rows("wikianswers"));
    assert_eq!(
        (rows[1].anchor.as_str(), rows[1].positive.as_str()),
        ("question number 0?", "question number 1?")
    );
    assert_eq!(rows[50].positive, "question number 99?");
    assert_eq!(rows.last().unwrap().source_id.as_deref(), Some("part-01:1"));
    assert_eq!(
        skipped(&one.manifest("wikianswers")),
        vec![("odd question left unpaired".to_owned(), 20)]
    );
}

#[test]
fn bad_lines_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = b"q:a?\tq:b?\n".to_vec();
    text.extend_from_slice(b"just some text without prefixes\n"); // 2
    text.extend_from_slice(b"q:caf\xe9?\tq:b?\n"); // 3: Latin-1, not UTF-8
    text.extend_from_slice(b"\n");
    text.extend_from_slice(b"q:c?\tq:d?\n");
    let input = write_input(tmp.path(), "part.txt", &text);
    let run = ingest_with("wikianswers", std::slice::from_ref(&input), 1);
    assert_eq!(run.rows("wikianswers").len(), 2);
    assert_eq!(
        skipped(&run.manifest("wikianswers")),
        vec![
            ("invalid UTF-8".to_owned(), 1),
            ("malformed cluster".to_owned(), 1)
        ]
    );
    assert!(run.report.examples[0].contains("part.txt:line 2: malformed cluster"));
    assert!(run.report.examples[1].contains("part.txt:line 3: invalid UTF-8"));

    let opts = IngestOptions {
        max_errors: 1,
        ..IngestOptions::default()
    };
    let (_out, res) = try_ingest("wikianswers", &[input], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("part.txt:line 3") && err.contains("--max-errors"),
        "{err}"
    );

    let gz = write_input(
        tmp.path(),
        "full.gz",
        "q:one?\tq:two?\n".repeat(100_000).as_bytes(),
    );
    let bytes = std::fs::read(&gz).unwrap();
    let cut = tmp.path().join("cut.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("wikianswers", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("cut.gz") && err.contains("truncated"), "{err}");

    let empty = write_input(tmp.path(), "empty.gz", b"");
    // An empty input is an error, not an empty dataset.
    let (_out, res) = try_ingest("wikianswers", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );
    let (_out, res) = try_ingest(
        "wikianswers",
        &[tmp.path().join("none.gz")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("none.gz"));
}
