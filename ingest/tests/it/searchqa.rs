//! SearchQA on the real records (two raw jeopardy files, four data_json files), plus hand-made
//! broken ones.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn real_samples_rows_and_counts() {
    let Some(dir) = fixture_dir("searchqa") else {
        return;
    };
    let run = ingest("searchqa", std::slice::from_ref(&dir));
    let rows = run.rows("searchqa");
    // Folder order: data_json/test, data_json/train, raw_jeopardy.
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.source_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, vec!["528", "1506", "19", "38", "30000", "30001"]);
    let m = run.manifest("searchqa");
    assert_eq!((m.rows, m.skipped_total(), m.inputs.len()), (6, 0, 6));

    // Two snippets only; the "\n" line wraps in them are collapsed.
    assert_eq!(
        rows[2].anchor,
        "No. 10: FB/LB for Columbia U. in the 1920s; MVP for the Yankees in '27 & '36; \"Gibraltar in Cleats\""
    );
    assert_eq!(
        rows[2].positive,
        "+ \"question\": \"'No. 10: FB/LB for Columbia U. in the 1920s; MVP for the Yankees in '27 & \
         '36; \\\"Gibraltar in Cleats\\\"'\",. + \"value\": \"$800\",. + \"answer\": \"(Lou) \
         Gehrig... ESPN's TOP 10 ALL-TIME ATHLETES 800 No. 10: FB/LB for Columbia U. in the 1920s; \
         MVP for the Yankees in '27 & '36; \"Gibraltar in Cleats\". (Lou) Gehrig."
    );
    // The raw file has 50 results: only the first five snippets are merged.
    assert_eq!(
        rows[4].anchor,
        "Of Samos, Davos or Junior, the island on which Pythagoras was born"
    );
    assert!(rows[4].positive.starts_with(
        "Jun 29, 2016 ... Of Samos, Davos or Junior, the island on which Pythagoras was born # Quiz # \
         Question. video."
    ));
    assert_eq!(rows[4].positive.len(), 1063);
    assert!(rows.iter().all(|r| !r.positive.contains('\n')));
}

#[test]
fn broken_and_empty_records() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Hand-made, in the documented record layout.
    write_input(
        d,
        "1.json",
        br#"{"question": "Q one", "id": 1, "search_results": [{"snippet": null}, {"snippet": " a\n b "}, {"url": "u"}]}"#,
    );
    write_input(
        d,
        "2.json",
        br#"{"question": "Q two", "id": 2, "search_results": []}"#,
    );
    write_input(
        d,
        "3.json",
        br#"{"question": "", "id": 3, "search_results": [{"snippet": "x"}]}"#,
    );
    write_input(
        d,
        "4.json.gz",
        br#"{"question": "Q four", "search_results": {"snippets": ["s1", "s2", "s3", "s4", "s5", "s6"]}}"#,
    );
    write_input(
        d,
        "5.json",
        b"{\"question\": \"cut\",\n \"search_results\": [",
    );
    write_input(d, "6.json", b"");
    write_input(d, "7.json", b"{\"question\": \"\xff\"}");
    let run = ingest_with("searchqa", &[d.to_path_buf()], 1);
    let rows: Vec<(String, String, String)> = run
        .rows("searchqa")
        .into_iter()
        .map(|r| (r.source_id.unwrap(), r.anchor, r.positive))
        .collect();
    assert_eq!(
        rows,
        vec![
            (s("1"), s("Q one"), s("a b")),
            (s("4"), s("Q four"), s("s1 s2 s3 s4 s5")),
        ]
    );
    let m = run.manifest("searchqa");
    assert_eq!(
        skipped(&m),
        vec![
            (s("empty question"), 1),
            (s("invalid JSON"), 3),
            (s("no snippets"), 1)
        ]
    );
    let ex = run.report.examples.join("\n");
    assert!(ex.contains("5.json:line 2: invalid JSON: EOF"), "{ex}");
    assert!(ex.contains("6.json:line 1"), "{ex}");
    assert!(ex.contains("7.json:line 1"), "{ex}");

    let opts = IngestOptions {
        max_errors: 0,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("searchqa", &[d.to_path_buf()], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("5.json:line 2") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("searchqa").exists());

    // Truncated gzip, missing path.
    let big = format!(
        "{{\"question\": \"q\", \"search_results\": [{}]}}",
        (0..5000)
            .map(|i| format!("{{\"snippet\": \"snippet {i} {}\"}}", "x".repeat(i % 50)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let gz = write_input(d, "big.json.gz", big.as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("searchqa", &[gz], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("big.json.gz") && err.contains("truncated"),
        "{err}"
    );
    let (_out, res) = try_ingest("searchqa", &[d.join("none")], &IngestOptions::default());
    assert!(res.unwrap_err().to_string().contains("none"));
}
