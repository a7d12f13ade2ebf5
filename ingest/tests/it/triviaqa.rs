//! TriviaQA on the official format sample and the Hugging Face cut of the real qa/web-train.json,
//! plus hand-made broken documents.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

#[test]
fn real_samples_rows_and_counts() {
    let Some(dir) = fixture_dir("triviaqa") else {
        return;
    };
    // A folder input takes every *.json under it, sorted: hf-dummy-rc/qa/web-train.json first.
    let run = ingest("triviaqa", std::slice::from_ref(&dir));
    let rows = run.rows("triviaqa");
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.source_id.as_deref().unwrap(),
                r.anchor.as_str(),
                r.positive.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "tc_1:search0",
                "Which American-born Sinclair won the Nobel Prize for Literature in 1930?",
                "The Nobel Prize in Literature 1930 Sinclair ... The Nobel Prize in Literature 1930 \
                 was awarded to ... nobelprize.org/nobel_prizes/literature/laureates/1930/>",
            ),
            (
                // Rank 1 is the first description naming the answer ("York").
                "tc_3:search1",
                "Where in England was Dame Judi Dench born?",
                "Judi Dench, Actress: Skyfall. Judi Dench was born in York, ... Judi Dench was born \
                 in York, England, to Eleanora Olive ... 2011 My Week with Marilyn Dame Sybil Thorndike.",
            ),
            (
                // No search results: the answer's Value.
                "tc_15:answer",
                "In which country did he widespread use of ISDN begin in 1988?",
                "Japan",
            ),
            (
                "tc_33:search0",
                "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
                "The official website for Andrew Lloyd Webber, ... from the Andrew Lloyd Webber/Jim \
                 Steinman musical Whistle ... American premiere on 9th December 1993 at the ...",
            ),
        ]
    );
    let m = run.manifest("triviaqa");
    assert_eq!((m.rows, m.skipped_total(), m.columns.columns()), (4, 0, 2));
    assert_eq!(m.inputs.len(), 2);
    assert_eq!(run.report.malformed, 0);
}

fn question(id: &str, q: &str) -> String {
    format!(
        r#"{{"Answer": {{"Aliases": ["Paris"], "NormalizedAliases": ["paris"], "Value": "Paris"}},
  "EntityPages": [], "Question": "{q}", "QuestionId": "{id}",
  "SearchResults": [{{"Description": "Paris is the capital.", "Rank": 0}}]}}"#
    )
}

#[test]
fn broken_documents_are_counted_and_located() {
    let tmp = tempfile::tempdir().unwrap();
    // Hand-made: element 2 lacks "Question", element 3 has a question but no search results and no
    // answer, element 4 holds invalid UTF-8, and the document is cut off inside element 6.
    let mut doc = b"{\"Domain\": \"Web\", \"Data\": [\n".to_vec();
    doc.extend(question("q1", "What is the capital of France?").as_bytes());
    doc.extend(b",\n{\"QuestionId\": \"q2\", \"SearchResults\": []},\n");
    doc.extend(b"{\"QuestionId\": \"q3\", \"Question\": \"Lone?\"},\n");
    doc.extend(b"{\"QuestionId\": \"q4\", \"Question\": \"Bad \xff byte\"},\n");
    doc.extend(question("q5", "Capital city of France?").as_bytes());
    let mut whole = doc.clone();
    whole.extend(b"]}\n");
    doc.extend(b",\n{\"QuestionId\": \"q6\", \"Question\": \"cut");
    // Cut off: the run fails naming the line and byte of the break, and writes nothing.
    let input = write_input(tmp.path(), "web-train.json.gz", &doc);
    let (out, res) = try_ingest("triviaqa", &[input], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("web-train.json.gz:line 11: invalid JSON document at byte")
            && err.contains("truncated"),
        "{err}"
    );
    assert!(!out.path().join("triviaqa").exists());
    let input = write_input(tmp.path(), "web-train.json.gz", &whole);
    let run = ingest_with("triviaqa", std::slice::from_ref(&input), 1);
    let ids: Vec<String> = run
        .rows("triviaqa")
        .into_iter()
        .map(|r| r.source_id.unwrap())
        .collect();
    assert_eq!(ids, vec!["q1:search0", "q5:search0"]);
    let m = run.manifest("triviaqa");
    assert_eq!(
        skipped(&m),
        vec![
            ("invalid JSON".to_owned(), 1),
            ("no search-result description and no answer".to_owned(), 1),
            ("unexpected layout".to_owned(), 1),
        ]
    );
    assert_eq!(run.report.malformed, 2);
    let ex = &run.report.examples;
    assert!(ex[0].contains("web-train.json.gz:question 2"), "{ex:?}");
    assert!(
        ex[0].contains("missing field `Question`") && ex[0].contains("file line 5"),
        "{ex:?}"
    );
    assert!(ex[1].contains("web-train.json.gz:question 4"), "{ex:?}");

    // --max-errors 0 stops at the first malformed question.
    let opts = IngestOptions {
        max_errors: 0,
        threads: 1,
        ..IngestOptions::default()
    };
    let input = tmp.path().join("web-train.json.gz");
    let (out, res) = try_ingest("triviaqa", &[input], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("question 2") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(
        !out.path().join("triviaqa").exists(),
        "nothing half-written"
    );
}

#[test]
fn empty_truncated_and_missing_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty file is an error, not silence.
    let empty = write_input(tmp.path(), "empty.json", b"");
    let (out, res) = try_ingest("triviaqa", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("empty.json:line 1") && err.contains("the file is empty"),
        "{err}"
    );
    assert!(!out.path().join("triviaqa").exists());

    // A gzip cut short is a read error naming the file.
    let doc = format!(
        "{{\"Data\": [{}]}}",
        (0..2000)
            .map(|i| question(&format!("q{i}"), "Which city is the capital of France?"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let gz = write_input(tmp.path(), "full.json.gz", doc.as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    let cut = write_input(tmp.path(), "cut.json.gz", &[]);
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("triviaqa", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.json.gz") && err.contains("truncated"),
        "{err}"
    );

    // The whole document streams: 2000 questions, all kept.
    let run = ingest_with("triviaqa", &[gz], 1);
    assert_eq!(run.manifest("triviaqa").rows, 2000);

    let (_out, res) = try_ingest(
        "triviaqa",
        &[tmp.path().join("nope.json")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("nope.json"));
}
