//! The ingest promises of issue 12, on hand-made inputs in each source's documented layout: one
//! lock per dataset folder, honest failures (whole-document sources, empty inputs, runs that yield
//! nothing), bounded lines, folder walks without loops or duplicates, HTML5 entities, and error
//! messages that state the true reason.
use crate::common;
use common::*;
use ingest::IngestOptions;
use std::path::{Path, PathBuf};

const SQUAD_OK: &[u8] = br#"{"version": "v1.1", "data": [{"title": "T", "paragraphs": [
 {"context": "The Normans were a people.", "qas": [{"question": "Who were the Normans?", "id": "q1"},
 {"question": "What were they?", "id": "q2"}]}]}]}"#;

fn ingest_into(
    out: &Path,
    source: &str,
    inputs: &[PathBuf],
    opts: &IngestOptions,
) -> ingest::Result<ingest::IngestReport> {
    ingest::run(source, inputs, out, opts, &schemas::NoProgress)
}

fn err_of(source: &str, inputs: &[PathBuf], opts: &IngestOptions) -> String {
    let (_dir, res) = try_ingest(source, inputs, opts);
    match res {
        Ok(r) => panic!(
            "expected an error, got {:?}",
            r.manifests.iter().map(|m| m.rows).collect::<Vec<_>>()
        ),
        Err(e) => e.to_string(),
    }
}

fn opts() -> IngestOptions {
    IngestOptions {
        threads: 2,
        ..IngestOptions::default()
    }
}

#[test]
fn a_second_run_into_the_same_dataset_fails_at_once_and_stale_temps_go() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(tmp.path(), "train-v1.1.json", SQUAD_OK);
    let out = tmp.path().join("pairs");
    // What a killed run of another pid left beside the dataset.
    std::fs::create_dir_all(out.join(".squad.tmp-4000000")).unwrap();
    std::fs::write(
        out.join(".squad.tmp-4000000").join("part-00000.parquet"),
        b"half",
    )
    .unwrap();
    {
        // Another run holds the dataset.
        let _held = schemas::OutputLock::acquire(out.join("squad")).unwrap();
        let err = ingest_into(&out, "squad", std::slice::from_ref(&input), &opts())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("in use by pid {}", std::process::id())),
            "{err}"
        );
        assert!(!out.join("squad").exists());
    }
    let report = ingest_into(&out, "squad", std::slice::from_ref(&input), &opts()).unwrap();
    assert_eq!(report.manifests[0].rows, 2);
    assert!(
        !out.join(".squad.tmp-4000000").exists(),
        "a dead run's temp folder is removed"
    );
    // Another source's dataset in the same --out is not blocked by this one's lock.
    let _held = schemas::OutputLock::acquire(out.join("squad")).unwrap();
    let gooaq = write_input(
        tmp.path(),
        "gooaq.jsonl",
        b"{\"id\": 1, \"question\": \"q?\", \"answer\": \"a\", \"answer_type\": \"feat_snip\"}\n",
    );
    ingest_into(&out, "gooaq", &[gooaq], &opts()).unwrap();
}

#[test]
fn broken_whole_documents_fail_naming_the_position_and_keep_earlier_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pairs");
    let good = write_input(tmp.path(), "train-v1.1.json", SQUAD_OK);
    ingest_into(&out, "squad", std::slice::from_ref(&good), &opts()).unwrap();
    let before = std::fs::read(out.join("squad").join(schemas::MANIFEST_FILE)).unwrap();

    // Truncated.
    let cut = write_input(tmp.path(), "cut.json", &SQUAD_OK[..SQUAD_OK.len() - 40]);
    let err = ingest_into(&out, "squad", std::slice::from_ref(&cut), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.json:line 3: invalid JSON (a SQuAD JSON file), column")
            && err.contains("truncated"),
        "{err}"
    );
    // Byte-damaged in the middle.
    let mut damaged = SQUAD_OK.to_vec();
    let at = damaged.windows(4).position(|w| w == b"qas\"").unwrap();
    damaged[at + 3] = b'}';
    let bad = write_input(tmp.path(), "damaged.json", &damaged);
    let err = ingest_into(&out, "squad", &[good.clone(), bad], &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("damaged.json:line 2") && err.contains("invalid JSON"),
        "{err}"
    );
    // Empty.
    let empty = write_input(tmp.path(), "empty.json", b"\n");
    let err = ingest_into(&out, "squad", &[empty], &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.json") && err.contains("empty"), "{err}");
    // Valid JSON, another layout: says so, not "invalid JSON".
    let other = write_input(
        tmp.path(),
        "other.json",
        br#"{"version": "v1.1", "articles": []}"#,
    );
    let err = ingest_into(&out, "squad", &[other], &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("valid JSON, but not in the expected layout")
            && err.contains("missing field `data`"),
        "{err}"
    );

    assert_eq!(
        std::fs::read(out.join("squad").join(schemas::MANIFEST_FILE)).unwrap(),
        before,
        "earlier dataset untouched"
    );

    // Streamed documents (TriviaQA, ELI5 arrays) fail the same way.
    let trivia = write_input(tmp.path(), "web-train.json", b"{\"Data\": [{\"Question\": \"q?\", \"QuestionId\": \"a\", \"Answer\": {\"Value\": \"x\"}},\n {\"Question\": \"r?\", ");
    let err = err_of("triviaqa", &[trivia], &opts());
    assert!(
        err.contains("web-train.json:line 2")
            && err.contains("at byte")
            && err.contains("truncated"),
        "{err}"
    );
    let eli5 = write_input(tmp.path(), "eli5-category-train.json", b"[\n{\"q_id\": \"1\", \"title\": \"Why?\", \"answers\": {\"text\": [\"Because.\"]}},\n{\"q_id\": ");
    let err = err_of("eli5", &[eli5], &opts());
    assert!(
        err.contains("eli5-category-train.json:line 3") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn runs_that_yield_nothing_fail_and_empty_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pairs");
    let good = write_input(
        tmp.path(),
        "gooaq.jsonl",
        b"{\"id\": 1, \"question\": \"q?\", \"answer\": \"a\", \"answer_type\": \"feat_snip\"}\n",
    );
    ingest_into(&out, "gooaq", &[good], &opts()).unwrap();
    let before = std::fs::read(out.join("gooaq").join(schemas::MANIFEST_FILE)).unwrap();
    // Every record fails (another layout): non-zero exit, earlier dataset kept.
    let bad = write_input(
        tmp.path(),
        "other.jsonl",
        b"{\"q\": \"x\"}\n{\"q\": \"y\"}\n",
    );
    let err = ingest_into(&out, "gooaq", &[bad], &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no rows")
            && err.contains("2 malformed")
            && err.contains("other.jsonl:line 1"),
        "{err}"
    );
    assert!(
        err.contains("unexpected layout") && !err.contains("invalid JSON"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("gooaq").join(schemas::MANIFEST_FILE)).unwrap(),
        before
    );
    // An empty line file, an empty Posts.xml.
    let empty = write_input(tmp.path(), "empty.jsonl", b"");
    assert!(err_of("gooaq", &[empty], &opts()).contains("no rows"));
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let posts = write_input(&site, "Posts.xml", b"");
    let err = err_of("stackexchange", &[posts], &opts());
    assert!(err.contains("Posts.xml") && err.contains("empty"), "{err}");
}

#[test]
fn eli5_kilt_layout_takes_the_best_scored_output() {
    let tmp = tempfile::tempdir().unwrap();
    // KILT's ELI5 layout: answers with meta.score, then a provenance entry.
    let kilt = write_input(
        tmp.path(),
        "eli5-dev-kilt.jsonl",
        br#"{"id": "1oy5tc", "input": "Why is the  sky blue?", "output": [{"answer": "Low score.", "meta": {"score": 2}}, {"answer": "Rayleigh scattering &amp; short waves.", "meta": {"score": 9}}, {"answer": "Tie, later.", "meta": {"score": 9}}, {"provenance": [{"wikipedia_id": "1", "title": "Sky"}]}], "meta": {}}
{"id": "2", "input": "No answers?", "output": [{"provenance": []}]}
"#,
    );
    let run = ingest("eli5", &[kilt]);
    let rows = run.rows("eli5");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].anchor, "Why is the sky blue?");
    assert_eq!(rows[0].positive, "Rayleigh scattering & short waves.");
    assert_eq!(rows[0].source_id.as_deref(), Some("1oy5tc"));
    assert_eq!(
        skipped(&run.manifest("eli5")),
        vec![("no answer".to_owned(), 1)]
    );
    // Another layout altogether is named as such.
    let odd = write_input(tmp.path(), "odd.jsonl", b"{\"question\": \"x\"}\n");
    let err = err_of("eli5", &[odd], &opts());
    assert!(
        err.contains("unexpected layout") && err.contains("KILT"),
        "{err}"
    );
}

#[test]
fn over_long_lines_are_counted_and_skipped_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let row = |q: &str| {
        format!("{{\"id\": 1, \"question\": \"{q}\", \"answer\": \"a\", \"answer_type\": \"feat_snip\"}}\n")
    };
    let mut text = row("first?");
    text.push_str(&row(&"x".repeat(5000)));
    text.push_str(&row("third?"));
    let input = write_input(tmp.path(), "gooaq.jsonl.gz", text.as_bytes());
    for threads in [1, 2] {
        let o = IngestOptions {
            threads,
            max_line_bytes: 1024,
            ..IngestOptions::default()
        };
        let (_d, res) = try_ingest("gooaq", std::slice::from_ref(&input), &o);
        let report = res.unwrap();
        assert_eq!(report.manifests[0].rows, 2);
        assert_eq!(report.malformed, 1);
        let ex = report.examples.join("\n");
        assert!(
            ex.contains("gooaq.jsonl.gz:line 2: line too long")
                && ex.contains("over --max-line-bytes 1024"),
            "{ex}"
        );
    }
    // A "line" with no newline in sight (what /dev/zero is) fails cleanly, without buffering it.
    let zeros = write_input(tmp.path(), "zeros.jsonl", &vec![0u8; 64 << 10]);
    let o = IngestOptions {
        max_line_bytes: 1024,
        ..opts()
    };
    let err = err_of("gooaq", &[zeros], &o);
    assert!(
        err.contains("zeros.jsonl:line 1") && err.contains("not line-oriented text"),
        "{err}"
    );
    // The same cap holds in the serial readers (PAQ's metadata) and the jsonl sniff: an over-long
    // first line is reported as over-long.
    let jsonl = write_input(
        tmp.path(),
        "pairs.jsonl",
        format!("[\"{}\", \"b\"]\n", "a".repeat(4000)).as_bytes(),
    );
    let err = err_of("jsonl", &[jsonl], &o);
    assert!(
        err.contains("pairs.jsonl:line 1") && err.contains("too long"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn folder_walks_skip_symlink_loops_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("squad");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_input(&dir, "train-v1.1.json", SQUAD_OK);
    std::os::unix::fs::symlink(&dir, dir.join("sub").join("loop")).unwrap();
    std::os::unix::fs::symlink(
        dir.join("train-v1.1.json"),
        dir.join("sub").join("again.json"),
    )
    .unwrap();
    let (_d, res) = try_ingest("squad", std::slice::from_ref(&dir), &opts());
    let report = res.unwrap();
    assert_eq!(report.manifests[0].rows, 2, "the file is read once");
    assert_eq!(report.manifests[0].inputs.len(), 1);
    let w = report.warnings.join("\n");
    assert!(w.contains("loop: a folder already walked"), "{w}");
    // Sorted, sub/again.json comes first; the other path to the same file is the one skipped.
    assert!(
        w.contains("train-v1.1.json: the same file as") && w.contains("sub/again.json; read once"),
        "{w}"
    );
    assert_eq!(report.warnings.len(), 2, "{w}");
}

#[test]
fn html5_entities_are_decoded_where_the_raw_text_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    // Stack Exchange: the body is XML-escaped HTML with entities inside.
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let posts = write_input(
        &site,
        "Posts.xml",
        br#"<?xml version="1.0" encoding="utf-8"?>
<posts>
  <row Id="1" PostTypeId="1" Score="3" Title="Why is &amp;beta; &amp;plusmn; decay so common?" Body="&lt;p&gt;Caf&amp;eacute; question: &amp;frac12; &amp;rarr; &amp;#946; &amp;#x3B2;.&lt;/p&gt;" />
</posts>
"#,
    );
    let run = ingest("stackexchange", &[posts]);
    let tb = run.rows("stackexchange_title_body");
    assert_eq!(tb[0].anchor, "Why is \u{3b2} \u{b1} decay so common?");
    assert_eq!(
        tb[0].positive,
        "Caf\u{e9} question: \u{bd} \u{2192} \u{3b2} \u{3b2}."
    );
    // Amazon QA's raw text carries `&amp;`-style entities too.
    let qa = write_input(tmp.path(), "qa_Tools.json", b"{'question': 'Is it 5&quot; &amp; 10&quot;?', 'answer': 'Yes &ndash; both.', 'asin': 'B1'}\n");
    let rows = ingest("amazon_qa", &[qa]).rows("amazon_qa");
    assert_eq!(
        (rows[0].anchor.as_str(), rows[0].positive.as_str()),
        ("Is it 5\" & 10\"?", "Yes \u{2013} both.")
    );
}

#[test]
fn errors_state_the_true_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // MS MARCO document-ranking qrels.
    let qrels = write_input(
        tmp.path(),
        "msmarco-doctrain-qrels.tsv",
        b"3 0 D312959 1\n5 0 D140227 1\n",
    );
    let err = err_of("msmarco", &[qrels], &opts());
    assert!(
        err.contains("field 3 (pid) `D312959` is not a number") && err.contains("document-ranking"),
        "{err}"
    );

    // A Stack Exchange folder where one site has only PostLinks.xml: the good site is ingested,
    // the bad one named and counted.
    let root = tmp.path().join("se");
    for site in ["good.example", "links-only.example"] {
        std::fs::create_dir_all(root.join(site)).unwrap();
    }
    write_input(
        &root.join("good.example"),
        "Posts.xml",
        br#"<posts><row Id="1" PostTypeId="1" Score="1" Title="A question title long enough" Body="&lt;p&gt;A body that is long enough.&lt;/p&gt;" /></posts>"#,
    );
    write_input(
        &root.join("links-only.example"),
        "PostLinks.xml",
        br#"<postlinks><row Id="1" PostId="1" RelatedPostId="2" LinkTypeId="3" /></postlinks>"#,
    );
    write_input(&root.join("good.example"), "Users.xml", b"<users />");
    let run = ingest("stackexchange", std::slice::from_ref(&root));
    assert_eq!(run.manifest("stackexchange_title_body").rows, 1);
    let w = run.report.warnings.join("\n");
    assert!(
        w.contains("1 of 2 Stack Exchange sites skipped")
            && w.contains("links-only.example")
            && w.contains("without the site's Posts.xml"),
        "{w}"
    );
    // Files in the folder this source does not read are listed.
    assert!(w.contains("not used: good.example/Users.xml"), "{w}");

    // An MS MARCO folder with an unknown file lists it.
    let mm = tmp.path().join("msmarco");
    std::fs::create_dir_all(&mm).unwrap();
    write_input(&mm, "triples.train.small.tsv", b"q\tpos\tneg\n");
    write_input(&mm, "top1000.dev.tsv", b"1\t2\tq\tp\n");
    let run = ingest("msmarco", std::slice::from_ref(&mm));
    assert_eq!(run.manifest("msmarco").rows, 1);
    let w = run.report.warnings.join("\n");
    assert!(
        w.contains("1 file(s) this source does not read, not used: top1000.dev.tsv"),
        "{w}"
    );
}
