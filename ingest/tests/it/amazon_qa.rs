//! Amazon QA on the real single-answer sample (first 200 lines of jmcauley's qa_Appliances.json,
//! plain and gzipped), plus hand-made lines in the documented multi-answer layout and bad input.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

#[test]
fn real_single_answer_sample() {
    let Some(dir) = fixture_dir("amazon_qa") else {
        return;
    };
    let run = ingest("amazon_qa", &[dir.join("qa_Appliances.json")]);
    let rows = run.rows("amazon_qa");
    assert_eq!(rows.len(), 200);
    assert_eq!(
        (
            rows[0].anchor.as_str(),
            rows[0].positive.as_str(),
            rows[0].source_id.as_deref()
        ),
        (
            "I have a 9 year old Badger 1 that needs replacing, will this Badger 1 install just \
             like the original one?",
            "I replaced my old one with this without a hitch.",
            Some("B00004U9JP")
        )
    );
    // Line 75: `\'` escapes in a single-quoted string, a double-quoted answer.
    assert_eq!(
        rows[74].anchor,
        "Can the knob be oriented with \"off* at 9 o'clock rather than 12 o'clock position?"
    );
    assert!(rows[74]
        .positive
        .starts_with("i couldn't use these knobs at all and actually broke one"));
    assert!(rows[94].positive.starts_with(
        "I believe there's a disclaimer on these units that they should not be used on gas dryers."
    ));
    assert!(rows[94]
        .positive
        .contains("states in the description \"Not be used with gas clothes dryers\"."));
    assert_eq!(
        rows[199].anchor,
        "Is the knife sharpener electric or manual?"
    );
    assert_eq!(rows[199].positive, "Hi, Elizabet It is Electric Sharpner");
    assert_eq!(rows[199].source_id.as_deref(), Some("B0002UMYDE"));
    let m = run.manifest("amazon_qa");
    assert_eq!(
        (m.rows, m.skipped_total(), m.columns.columns()),
        (200, 0, 2)
    );

    // The gzipped copy: same rows; and the same on one thread.
    let gz = ingest_with("amazon_qa", &[dir.join("qa_Appliances.json.gz")], 1);
    assert_eq!(gz.rows("amazon_qa"), rows);
    assert_eq!(
        gz.manifest("amazon_qa").inputs[0].sha256,
        schemas::sha256_file(&dir.join("qa_Appliances.json.gz")).unwrap()
    );
}

// Hand-made, in the multi-answer layout of jmcauley's QA_<Category>.json.gz files.
const MULTI: &str = concat!(
    "{'asin': 'B0001', 'questions': [",
    "{'questionType': 'yes/no', 'askerID': 'A1', 'questionTime': 'May 1, 2014', ",
    "'questionText': 'Does it fit a 10\" pan?', 'answers': [",
    "{'answerText': 'Yes, it does.', 'answererID': 'A2', 'helpful': [1, 2], 'answerType': 'Y'}, ",
    "{'answerText': \"It's snug but fine.\", 'answererID': 'A3', 'helpful': [0, 0], 'answerScore': None}]}, ",
    "{'questionType': 'open-ended', 'questionText': 'Caf\\xe9 \\u2013 where is it made?', ",
    "'answers': [{'answerText': '  '}]}, ",
    "{'questionType': 'open-ended', 'questionText': 'Any warranty?', 'answers': []}]}\n",
);

#[test]
fn multi_answer_layout_gives_one_pair_per_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(tmp.path(), "QA_Test.json.gz", MULTI.as_bytes());
    let run = ingest("amazon_qa", &[input]);
    let rows = run.rows("amazon_qa");
    assert_eq!(
        rows.iter()
            .map(|r| (r.anchor.as_str(), r.positive.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("Does it fit a 10\" pan?", "Yes, it does."),
            ("Does it fit a 10\" pan?", "It's snug but fine."),
        ]
    );
    assert!(rows.iter().all(|r| r.source_id.as_deref() == Some("B0001")));
    assert_eq!(
        skipped(&run.manifest("amazon_qa")),
        vec![("empty answer".to_owned(), 1), ("no answer".to_owned(), 1)]
    );
}

#[test]
fn escapes_follow_python() {
    let tmp = tempfile::tempdir().unwrap();
    let line = "{'question': 'Caf\\xe9 \\u2013 ok?\\nSecond line', 'answer': \"Tab\\there \\\\ done\", 'asin': 'X'}\n";
    let input = write_input(tmp.path(), "qa_Esc.json", line.as_bytes());
    let rows = ingest("amazon_qa", &[input]).rows("amazon_qa");
    assert_eq!(rows[0].anchor, "Café – ok?\nSecond line");
    assert_eq!(rows[0].positive, "Tab\there \\ done");
}

const GOOD: &str = "{'question': 'Q?', 'answer': 'A.', 'asin': 'B1'}\n";

#[test]
fn bad_lines_are_counted_with_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = GOOD.as_bytes().to_vec();
    text.extend_from_slice(b"{'question': 'cut off', 'answer': 'no end\n"); // 2: malformed
    text.extend_from_slice(b"{'asin': 'B2', 'answer': 'no question'}\n"); // 3: missing field
    text.extend_from_slice(b"{'question': 'bad \xff byte', 'answer': 'x'}\n"); // 4: UTF-8
    text.extend_from_slice(b"{'question': 'Q?', 'answer': None, 'asin': 'B3'}\n"); // 5: skip
    text.extend_from_slice(b"['not', 'a', 'dict']\n"); // 6: malformed
    text.extend_from_slice(b"\n");
    text.extend_from_slice(GOOD.as_bytes());
    let input = write_input(tmp.path(), "qa_Bad.json", &text);
    let run = ingest_with("amazon_qa", std::slice::from_ref(&input), 1);
    assert_eq!(run.rows("amazon_qa").len(), 2);
    assert_eq!(
        skipped(&run.manifest("amazon_qa")),
        vec![
            ("empty answer".to_owned(), 1),
            ("invalid Python literal".to_owned(), 2),
            ("invalid UTF-8".to_owned(), 1),
            ("missing field".to_owned(), 1),
        ]
    );
    assert_eq!(run.report.malformed, 4);
    assert!(
        run.report.examples[0]
            .contains("qa_Bad.json:line 2: invalid Python literal: unterminated string"),
        "{:?}",
        run.report.examples
    );
    assert!(run.report.examples[1].contains("qa_Bad.json:line 3: missing field"));

    let opts = IngestOptions {
        max_errors: 2,
        threads: 2,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("amazon_qa", &[input], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("qa_Bad.json:line 4") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("amazon_qa").exists());
}

#[test]
fn same_output_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&format!(
            "{{'questionType': 'open-ended', 'asin': 'B{i:05}', 'question': 'Question {i} about \\'it\\'?', 'answer': \"Answer {i}\"}}\n"
        ));
        if i % 10 == 0 {
            text.push_str(MULTI);
        }
    }
    let input = write_input(tmp.path(), "qa_Big.json.gz", text.as_bytes());
    let one = ingest_with("amazon_qa", std::slice::from_ref(&input), 1);
    let two = ingest_with("amazon_qa", &[input], 2);
    let rows = one.rows("amazon_qa");
    assert_eq!(rows.len(), 36_000);
    assert_eq!(rows[5].anchor, "Question 3 about 'it'?");
    assert_eq!(rows, two.rows("amazon_qa"));
}

#[test]
fn truncated_gzip_empty_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = write_input(tmp.path(), "full.json.gz", GOOD.repeat(50_000).as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    let cut = tmp.path().join("cut.json.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (_out, res) = try_ingest("amazon_qa", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.json.gz") && err.contains("truncated"),
        "{err}"
    );

    let empty = write_input(tmp.path(), "empty.json", b"");
    // An empty input is an error, not an empty dataset.
    let (_out, res) = try_ingest("amazon_qa", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );

    let (_out, res) = try_ingest(
        "amazon_qa",
        &[tmp.path().join("absent.json.gz")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("absent.json.gz"));
}
