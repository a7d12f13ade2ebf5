//! Quora on the real GLUE QQP sample (9 train + 9 dev rows, same columns as
//! quora_duplicate_questions.tsv), plus hand-made files in that layout for the hard-negative
//! rule and bad input.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

const HEADER: &str = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n";

#[test]
fn real_qqp_train_and_dev() {
    let Some(dir) = fixture_dir("quora") else {
        return;
    };
    // The folder: QQP.dev.tsv then QQP.train.tsv (sorted).
    let run = ingest("quora", std::slice::from_ref(&dir));
    let rows = run.rows("quora");
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.source_id.as_deref().unwrap(),
                r.anchor.as_str(),
                r.positive.as_str(),
                r.negative.as_deref().unwrap(),
            )
        })
        .collect();
    // No question of these duplicate rows occurs in a non-duplicate row of the sample, so every
    // negative is the hash-chosen fallback from the non-duplicate rows' questions (expected
    // values computed independently from the rule in the module docs).
    assert_eq!(
        got,
        vec![
            (
                "172974",
                "Is there a reason why we should travel alone?",
                "What are some reasons to travel alone?",
                "I don't beleive I am bulimic, but I force throw up atleast once a day after I eat \
                 something and feel guilty. Should I tell somebody, and if so who?"
            ),
            (
                "323679",
                "I am 25 year old guy and never had a girlfriend. Is this weird?",
                "I am 25 years old. I have never had a girlfriend. Is something wrong with me?",
                "Why is my life so complicated?"
            ),
            (
                "144933",
                "What does a good answer on Quora look like? What does it mean to be helpful?",
                "How do you write a good answer on Quora?",
                "What can cause stool to come out as little balls?"
            ),
            (
                "198597",
                "What are the best things to do in Hong Kong?",
                "What is the best thing in Hong Kong?",
                "What are some good baby girl names starting with D?"
            ),
            (
                "402555",
                "How do I control my horny emotions?",
                "How do you control your horniness?",
                "Why are people so obsessed with having a girlfriend/boyfriend?"
            ),
            (
                "150662",
                "What can one do after MBBS?",
                "What do i do after my MBBS ?",
                "Why is my life so complicated?"
            ),
            (
                "106969",
                "What is the best self help book you have read? Why? How did it change your life?",
                "What are the top self help books I should read?",
                "Can I enter University of Melbourne if I couldn't achieve the guaranteed marks \
                 in Trinity College Foundation?"
            ),
        ]
    );
    let m = run.manifest("quora");
    assert_eq!((m.rows, m.columns.columns()), (7, 3));
    assert_eq!(skipped(&m), vec![("not a duplicate pair".to_owned(), 11)]);
    assert_eq!(m.inputs.len(), 2);
    assert_eq!(
        m.inputs[1].sha256,
        schemas::sha256_file(&dir.join("QQP.train.tsv")).unwrap()
    );
}

#[test]
fn hard_negative_is_a_non_duplicate_partner() {
    let tmp = tempfile::tempdir().unwrap();
    // Hand-made rows: question 1 has a non-duplicate partner (3) in a later row; question 5 has
    // none but its duplicate 6 does (7); 9/10 have none at all.
    let text = format!(
        "{HEADER}\
         1\t1\t2\tHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\n\
         2\t5\t6\tIs tea healthy?\tIs drinking tea good for you?\t1\n\
         3\t9\t10\tWhy is the sky blue?\tWhat makes the sky blue?\t1\n\
         4\t1\t3\tHow do I learn Rust?\tHow do I learn Go?\t0\n\
         5\t7\t6\tIs coffee healthy?\tIs drinking tea good for you?\t0\n\
         6\t1\t4\tHow do I learn Rust?\tHow do I learn C?\t0\n"
    );
    let input = write_input(
        tmp.path(),
        "quora_duplicate_questions.tsv.gz",
        text.as_bytes(),
    );
    let run = ingest("quora", &[input]);
    let negs: Vec<_> = run
        .rows("quora")
        .iter()
        .map(|r| r.negative.clone().unwrap())
        .collect();
    assert_eq!(negs[0], "How do I learn Go?", "first non-duplicate partner");
    assert_eq!(negs[1], "Is coffee healthy?", "partner of question2");
    // Fallback: one of the non-duplicate rows' questions, never the pair's own.
    assert!(
        [
            "How do I learn Rust?",
            "How do I learn Go?",
            "Is coffee healthy?",
            "Is drinking tea good for you?",
            "How do I learn C?"
        ]
        .contains(&negs[2].as_str()),
        "{}",
        negs[2]
    );
    assert_eq!(negs.len(), 3);
}

#[test]
fn no_negative_at_all_is_a_counted_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("{HEADER}1\t1\t2\tA?\tB?\t1\n2\t3\t4\tC?\t\t1\n");
    let input = write_input(tmp.path(), "q.tsv", text.as_bytes());
    // Every row skipped: the run fails (no rows), saying what the rows became.
    let (out, res) = try_ingest("quora", &[input], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("(skipped: empty question: 1, no negative available: 1)"),
        "{err}"
    );
    assert!(!out.path().join("quora").exists());
}

fn many_rows(n: u64) -> String {
    let mut text = HEADER.to_owned();
    for i in 0..n {
        let dup = u64::from(i % 3 == 0);
        text.push_str(&format!(
            "{i}\t{}\t{}\tquestion {} ?\tquestion {} ?\t{dup}\n",
            i % 5000,
            i % 7919 + 10_000,
            i % 5000,
            i % 7919 + 10_000
        ));
    }
    text
}

#[test]
fn same_output_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    // Enough rows for several 1 MiB chunks of the parallel driver.
    let input = write_input(tmp.path(), "big.tsv", many_rows(80_000).as_bytes());
    let one = ingest_with("quora", std::slice::from_ref(&input), 1);
    let two = ingest_with("quora", &[input], 2);
    let rows = one.rows("quora");
    assert!(rows.len() > 26_000);
    assert_eq!(rows, two.rows("quora"));
}

#[test]
fn bad_rows_are_counted_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = HEADER.as_bytes().to_vec();
    text.extend_from_slice(b"1\t1\t2\tA?\tB?\t1\n");
    text.extend_from_slice(b"2\t3\t4\tonly four\tfields\n");
    text.extend_from_slice(b"3\tx\t4\tC?\tD?\t0\n");
    text.extend_from_slice(b"4\t5\t6\tE?\tF?\tmaybe\n");
    text.extend_from_slice(b"5\t7\t8\tbad \xff\tG?\t0\n");
    text.extend_from_slice(b"6\t9\t10\tH?\tI?\t0\n");
    let input = write_input(tmp.path(), "q.tsv", &text);
    let run = ingest_with("quora", std::slice::from_ref(&input), 1);
    let rows = run.rows("quora");
    assert_eq!(rows.len(), 1);
    // The only usable non-duplicate row is H?/I?: the fallback takes one of them.
    assert!(["H?", "I?"].contains(&rows[0].negative.as_deref().unwrap()));
    assert_eq!(
        skipped(&run.manifest("quora")),
        vec![
            ("invalid UTF-8".to_owned(), 1),
            ("invalid id".to_owned(), 1),
            ("invalid label".to_owned(), 1),
            ("missing column".to_owned(), 1),
            ("not a duplicate pair".to_owned(), 1),
        ]
    );
    assert!(
        run.report.examples[0].contains("q.tsv:line 3: missing column"),
        "{:?}",
        run.report.examples
    );

    let opts = IngestOptions {
        max_errors: 3,
        threads: 2,
        ..IngestOptions::default()
    };
    let (_out, res) = try_ingest("quora", &[input], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("q.tsv:line 6") && err.contains("--max-errors"),
        "{err}"
    );
}

#[test]
fn header_problems_and_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    // GLUE's unlabelled test.tsv: no is_duplicate column.
    let test = write_input(
        tmp.path(),
        "test.tsv",
        b"id\tquestion1\tquestion2\n0\tA?\tB?\n",
    );
    let (_out, res) = try_ingest("quora", &[test], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("test.tsv:line 1") && err.contains("missing column `qid1`"),
        "{err}"
    );

    let empty = write_input(tmp.path(), "empty.tsv", b"");
    // An empty input is an error, not an empty dataset.
    let (_out, res) = try_ingest("quora", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );

    let gz = write_input(tmp.path(), "full.tsv.gz", many_rows(20_000).as_bytes());
    let bytes = std::fs::read(&gz).unwrap();
    let cut = tmp.path().join("cut.tsv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("quora", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.tsv.gz") && err.contains("truncated"),
        "{err}"
    );

    let (_out, res) = try_ingest(
        "quora",
        &[tmp.path().join("missing.tsv")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("missing.tsv"));
}

#[test]
fn csv_quoted_questions_are_unquoted_only_when_fully_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\
         1\t1\t2\t\"What does \"\"hello\"\" mean?\"\t\"A\" or \"B\"?\t1\n\
         2\t1\t3\tWhat does hello mean?\t\"Tea\" vs \"coffee\"\t0\n"
    );
    let input = write_input(tmp.path(), "q.tsv", text.as_bytes());
    let rows = ingest("quora", &[input]).rows("quora");
    assert_eq!(rows[0].anchor, "What does \"hello\" mean?");
    assert_eq!(rows[0].positive, "\"A\" or \"B\"?");
    assert_eq!(rows[0].negative.as_deref(), Some("\"Tea\" vs \"coffee\""));
}
