//! Stack Exchange on the real cstheory.meta dump excerpt (BOM, CRLF, escaped HTML), plus hand-made
//! dumps for the filters, answer ordering, several sites and broken XML.
use crate::common;
use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

const TB: &str = "stackexchange_title_body";
const TA: &str = "stackexchange_title_answer";
const DUP: &str = "stackexchange_duplicates";

fn counts(run: &Run, dataset: &str) -> (u64, Vec<(String, u64)>) {
    let m = run.manifest(dataset);
    (m.rows, skipped(&m))
}

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn real_dump_rows_and_counts() {
    let Some(dir) = fixture_dir("stackexchange") else {
        return;
    };
    // The folder is one site: Posts.xml + PostLinks.xml (PROVENANCE.md: 48 questions, 134 answers).
    let run = ingest("stackexchange", std::slice::from_ref(&dir));
    let site = "stackexchange";

    let tb = run.rows(TB);
    assert_eq!(tb[2].anchor, "LaTeX math support ?");
    assert_eq!(
        tb[2].positive,
        "I'm hoping we can get the same math support that other SE sites (math.SE in particular) \
         are making use of. Does anyone know how to enable this ? \n\nHere's a test to see if the \
         current system works by default: $t^2$"
    );
    assert_eq!(tb[2].source_id.as_deref(), Some("stackexchange:3"));
    assert_eq!(tb[0].anchor, "What should our site/domain name be?");
    assert!(tb[0]
        .positive
        .starts_with("Possible Duplicate:\n  Write an Elevator Pitch / Tagline  \n"));
    let q188 = tb
        .iter()
        .find(|r| r.source_id.as_deref() == Some("stackexchange:188"));
    assert!(
        q188.unwrap().positive.contains("the Q&A format doesn't"),
        "HTML entities inside the escaped body are decoded"
    );
    // Upstream's `<.*?>` does not cross lines, so a tag broken over two lines stays (question 25).
    let with_lt: Vec<&str> = tb
        .iter()
        .filter(|r| r.positive.contains('<'))
        .map(|r| r.source_id.as_deref().unwrap())
        .collect();
    assert_eq!(with_lt, vec!["stackexchange:25"]);
    assert!(tb
        .iter()
        .any(|r| r.positive.contains("(see <a\nhref=\"https://csth")));
    assert_eq!(
        counts(&run, TB),
        (46, vec![(s("title shorter than 20 chars"), 2)]),
        "questions 41 ('arXiv tags vs not?') and 144 ('How are we doing?') have short titles"
    );

    // Title-answer rows come out when the later of question and best answer is read.
    let ta = run.rows(TA);
    let q3 = ta
        .iter()
        .find(|r| r.source_id.as_deref() == Some(&format!("{site}:3/49")))
        .unwrap();
    assert_eq!(q3.anchor, "LaTeX math support ?");
    assert_eq!(
        q3.positive,
        "Alright, community support for this looks pretty high.\n\nI've enabled Tex."
    );
    assert_eq!(ta[0].source_id.as_deref(), Some("stackexchange:2/5"));
    // question/best-answer ids, as a Python re-implementation of upstream's loop picks them.
    let mut pairs: Vec<&str> = ta
        .iter()
        .map(|r| {
            r.source_id
                .as_deref()
                .unwrap()
                .strip_prefix("stackexchange:")
                .unwrap()
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            "1/100", "106/107", "108/109", "114/128", "115/129", "118/132", "119/153", "120/124",
            "121/125", "160/161", "164/165", "166/167", "169/172", "17/156", "173/174", "178/180",
            "182/183", "188/189", "19/20", "2/5", "21/22", "23/24", "25/44", "3/49", "33/64",
            "34/35", "37/45", "4/13", "50/51", "56/60", "58/137", "6/134", "62/63", "67/68",
            "73/81", "76/89", "79/80", "84/85", "92/93", "98/101", "99/102"
        ]
    );
    assert_eq!(
        ta.last().unwrap().source_id.as_deref(),
        Some("stackexchange:188/189")
    );
    assert_eq!(
        counts(&run, TA),
        (
            41,
            vec![(s("no answer"), 5), (s("title shorter than 20 chars"), 2)]
        )
    );

    let dup = run.rows(DUP);
    assert_eq!(dup.len(), 1);
    assert_eq!(
        (dup[0].anchor.as_str(), dup[0].positive.as_str()),
        (
            "A first slate of moderators",
            "Who should the moderators be?"
        )
    );
    assert_eq!(dup[0].source_id.as_deref(), Some("stackexchange:192/67"));
    assert_eq!(counts(&run, DUP), (1, vec![]));
    assert_eq!(run.report.malformed, 0);
    let m = run.manifest(TB);
    assert_eq!(m.inputs.len(), 2);
    assert_eq!(
        m.inputs[1].sha256,
        schemas::sha256_file(&dir.join("Posts.xml")).unwrap()
    );
}

fn row(attrs: &str) -> String {
    format!("  <row {attrs} />\r\n")
}

fn question(id: u64, score: i64, title: &str, body: &str) -> String {
    row(&format!(
        r#"Id="{id}" PostTypeId="1" Score="{score}" Title="{title}" Body="{body}" Tags="&lt;t&gt;""#
    ))
}

fn answer(id: u64, parent: u64, score: i64, body: &str) -> String {
    row(&format!(
        r#"Id="{id}" PostTypeId="2" ParentId="{parent}" Score="{score}" Body="{body}""#
    ))
}

fn posts(rows: &[String]) -> Vec<u8> {
    let mut out = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<posts>\r\n".to_owned();
    for r in rows {
        out.push_str(r);
    }
    out.push_str("</posts>");
    out.into_bytes()
}

const BODY: &str = "&lt;p&gt;A body that is long enough.&lt;/p&gt;";

#[test]
fn filters_best_answer_and_answer_order() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("a.example.com");
    std::fs::create_dir(&site).unwrap();
    let long = "x".repeat(4097);
    write_input(
        &site,
        "Posts.xml.gz",
        &posts(&[
            // Its best answer (id 5, score 7) comes BEFORE it; ties go to the earlier answer.
            answer(4, 10, 3, "&lt;b&gt;three&lt;/b&gt;"),
            answer(5, 10, 7, "seven &amp;amp; first"),
            answer(6, 10, 7, "seven, second"),
            question(10, 0, "A title of twenty chars", BODY),
            question(11, 5, "Short title", BODY),
            question(12, 5, "Another good long title", "tiny"),
            question(13, 5, "Another good long title", &long),
            question(14, -1, "Downvoted but long title", BODY),
            question(15, 2, "Unanswered but long title", BODY),
            question(16, 2, "Answered later, long title", BODY),
            answer(17, 16, 1, "late answer"),
            answer(18, 11, 9, "answer to a filtered question"),
            answer(19, 16, 0, "worse answer"),
            answer(20, 16, 2, "  &lt;p&gt;&lt;/p&gt; "),
            question(21, 1, "Only an empty best answer", BODY),
            answer(22, 21, 1, "&lt;br/&gt;"),
            // Other post types (tag wikis) are not questions.
            row(r#"Id="23" PostTypeId="4" Score="0" Body="wiki""#),
        ]),
    );
    write_input(
        &site,
        "PostLinks.xml",
        concat!(
            "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<postlinks>\r\n",
            "  <row Id=\"1\" PostId=\"11\" RelatedPostId=\"10\" LinkTypeId=\"3\" />\r\n",
            "  <row Id=\"2\" PostId=\"12\" RelatedPostId=\"10\" LinkTypeId=\"1\" />\r\n",
            "  <row Id=\"3\" PostId=\"99\" RelatedPostId=\"10\" LinkTypeId=\"3\" />\r\n",
            "  <row Id=\"4\" PostId=\"17\" RelatedPostId=\"10\" LinkTypeId=\"3\" />\r\n",
            "</postlinks>"
        )
        .as_bytes(),
    );
    let run = ingest("stackexchange", &[tmp.path().to_path_buf()]);
    let ids = |d: &str| -> Vec<String> {
        run.rows(d)
            .into_iter()
            .map(|r| r.source_id.unwrap())
            .collect()
    };
    assert_eq!(
        ids(TB),
        vec![
            "a.example.com:10",
            "a.example.com:15",
            "a.example.com:16",
            "a.example.com:21"
        ]
    );
    assert_eq!(
        counts(&run, TB),
        (
            4,
            vec![
                (s("body longer than 4096 chars"), 1),
                (s("body shorter than 20 chars"), 1),
                (s("negative score"), 1),
                (s("title shorter than 20 chars"), 1),
            ]
        )
    );
    let ta = run.rows(TA);
    let got: Vec<(&str, &str, &str)> = ta
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
        vec![(
            "a.example.com:10/5",
            "A title of twenty chars",
            "seven & first"
        )]
    );
    assert_eq!(
        counts(&run, TA),
        (
            1,
            vec![
                (s("body longer than 4096 chars"), 1),
                (s("body shorter than 20 chars"), 1),
                (s("empty answer"), 2),
                (s("negative score"), 1),
                (s("no answer"), 1),
                (s("title shorter than 20 chars"), 1),
            ]
        ),
        "question 16's best answer (score 2) strips to nothing, as does 21's"
    );
    // Duplicate titles need no filter (11 has a short title); 99 is absent and 17 is an answer.
    let dup = run.rows(DUP);
    assert_eq!(
        (dup[0].anchor.as_str(), dup[0].positive.as_str()),
        ("Short title", "A title of twenty chars")
    );
    assert_eq!(
        counts(&run, DUP),
        (1, vec![(s("linked post is not a readable question"), 2)])
    );
}

#[test]
fn several_sites_and_bad_xml() {
    let tmp = tempfile::tempdir().unwrap();
    for site in ["one", "two"] {
        std::fs::create_dir(tmp.path().join(site)).unwrap();
        write_input(
            &tmp.path().join(site),
            "Posts.xml",
            &posts(&[
                question(1, 1, &format!("Question of site {site} here"), BODY),
                answer(2, 1, 1, &format!("answer from {site}")),
            ]),
        );
    }
    // Same ids in two sites stay apart.
    let run = ingest("stackexchange", &[tmp.path().to_path_buf()]);
    let ta = run.rows(TA);
    assert_eq!(
        ta.iter()
            .map(|r| (r.source_id.clone().unwrap(), r.positive.clone()))
            .collect::<Vec<_>>(),
        vec![
            (s("one:1/2"), s("answer from one")),
            (s("two:1/2"), s("answer from two"))
        ]
    );
    assert_eq!(run.manifest(DUP).rows, 0);

    // Rows lacking attributes, or with invalid UTF-8 text, are counted once each and skipped.
    let mut bad = posts(&[
        row(r#"Id="1" PostTypeId="1" Title="No score or body here""#),
        question(2, 1, "A fine question title here", BODY),
        answer(3, 2, 1, "kept answer"),
        row(r#"Id="4" PostTypeId="2" Score="1" Body="orphan""#),
        question(5, 1, "Title with bad byte: @", BODY),
    ]);
    let at = bad.iter().position(|&b| b == b'@').unwrap();
    bad[at] = 0xff;
    let dir = tmp.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    let path = write_input(&dir, "Posts.xml", &bad);
    let run = ingest("stackexchange", std::slice::from_ref(&path));
    assert_eq!(run.manifest(TB).rows, 1);
    assert_eq!(run.manifest(TA).rows, 1);
    assert_eq!(run.report.malformed, 3);
    let ex = run.report.examples.join("\n");
    assert!(ex.contains("Posts.xml:row 1: invalid Posts row"), "{ex}");
    assert!(ex.contains("Posts.xml:row 4: invalid Posts row"), "{ex}");
    assert!(
        ex.contains("Posts.xml:row 5: invalid text: invalid UTF-8"),
        "{ex}"
    );
    let opts = IngestOptions {
        max_errors: 2,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("stackexchange", &[path], &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("row 5") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join(TB).exists());

    // Broken XML stops the run with the file and row.
    let mut cut = posts(&[question(1, 1, "A fine question title here", BODY)]);
    cut.truncate(cut.len() - 30);
    let path = write_input(&dir, "Posts.xml", &cut);
    let (_out, res) = try_ingest("stackexchange", &[path], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("bad/Posts.xml:row 1"), "{err}");
    let path = write_input(&dir, "Posts.xml", b"<posts><row Id=\"1\" </posts>");
    let (_out, res) = try_ingest("stackexchange", &[path], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("bad/Posts.xml:row 1:"), "{err}");
    let path = write_input(&dir, "Posts.xml", b"<posts><row Id=\"1\"/></post>");
    let (_out, res) = try_ingest("stackexchange", &[path], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("Posts.xml:row 2: XML error at byte"), "{err}");

    // Empty file: an error (it holds no XML document), not an empty dataset.
    let path = write_input(&dir, "Posts.xml", b"");
    let (_out, res) = try_ingest("stackexchange", &[path], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("bad/Posts.xml: no XML document"), "{err}");

    // A truncated gzip is a read error naming the file.
    let big: Vec<String> = (0..3000)
        .map(|i| question(i, 1, "A fine question title here", BODY))
        .collect();
    let gz = write_input(&dir, "Posts.xml.gz", &posts(&big));
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("stackexchange", &[gz], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("Posts.xml.gz") && err.contains("truncated"),
        "{err}"
    );

    // PostLinks without Posts, a foreign file, a missing path.
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir(&lonely).unwrap();
    let links = write_input(&lonely, "PostLinks.xml", b"<postlinks></postlinks>");
    let (_out, res) = try_ingest("stackexchange", &[links], &IngestOptions::default());
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("without the site's Posts.xml"));
    let other = write_input(&lonely, "Users.xml", b"<users></users>");
    let (_out, res) = try_ingest("stackexchange", &[other], &IngestOptions::default());
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("Users.xml: not a Stack Exchange"));
    let (_out, res) = try_ingest(
        "stackexchange",
        &[tmp.path().join("missing/Posts.xml")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("missing/Posts.xml"));
}

/// Throughput on a generated dump (`cargo test -p ingest --test stackexchange -- --ignored
/// --nocapture`); prints MB/s of XML and the process's peak RSS.
#[test]
#[ignore]
fn throughput_on_generated_dump() {
    use std::io::Write;
    let mb: usize = std::env::var("SE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("Posts.xml");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&posts(&[])[..posts(&[]).len() - "</posts>".len()])
        .unwrap();
    let para = "&lt;p&gt;Some &lt;code&gt;text&lt;/code&gt; with &amp;amp; entities and a \
                &lt;a href=&quot;https://example.com&quot;&gt;link&lt;/a&gt;.&lt;/p&gt;&#xA;";
    let (mut written, mut id) = (0usize, 0u64);
    while written < mb << 20 {
        id += 1;
        let q = id;
        let row = question(
            q,
            1,
            "How do I do the thing in a long title?",
            &para.repeat(6),
        );
        written += row.len();
        f.write_all(row.as_bytes()).unwrap();
        for k in 0..2 {
            id += 1;
            let row = answer(id, q, k, &para.repeat(8));
            written += row.len();
            f.write_all(row.as_bytes()).unwrap();
        }
    }
    f.write_all(b"</posts>").unwrap();
    drop(f);
    let bytes = std::fs::metadata(&path).unwrap().len() as f64;
    let start = std::time::Instant::now();
    let run = ingest_with("stackexchange", &[path], 1);
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "stackexchange: {:.0} MB XML in {secs:.2}s = {:.1} MB/s; {} title-body + {} title-answer rows; {hwm}",
        bytes / 1e6,
        bytes / 1e6 / secs,
        run.manifest(TB).rows,
        run.manifest(TA).rows
    );
}

/// What `prep download` leaves: site folders unpacked from `.7z` (with every other dump file
/// beside Posts.xml) and Stack Overflow's two separate archives.
#[test]
fn unpacked_download_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("cooking.stackexchange.com");
    std::fs::create_dir(&site).unwrap();
    write_input(
        &site,
        "Posts.xml",
        &posts(&[
            question(1, 1, "How long to boil an egg properly?", BODY),
            question(3, 1, "How long to boil eggs for salad?", BODY),
            answer(2, 1, 1, "Nine minutes."),
        ]),
    );
    for other in ["Users.xml", "Votes.xml", "Comments.xml", "Tags.xml"] {
        write_input(&site, other, b"<users />");
    }
    let so_posts = tmp.path().join("stackoverflow.com-Posts");
    let so_links = tmp.path().join("stackoverflow.com-PostLinks");
    std::fs::create_dir(&so_posts).unwrap();
    std::fs::create_dir(&so_links).unwrap();
    write_input(
        &so_posts,
        "Posts.xml",
        &posts(&[
            question(10, 1, "What is a borrow checker in Rust?", BODY),
            question(11, 1, "Explain the Rust borrow checker?", BODY),
        ]),
    );
    write_input(
        &so_links,
        "PostLinks.xml",
        b"<postlinks>\r\n  <row Id=\"1\" PostId=\"11\" RelatedPostId=\"10\" LinkTypeId=\"3\" />\r\n</postlinks>",
    );
    let run = ingest("stackexchange", &[tmp.path().to_path_buf()]);
    assert_eq!(run.manifest(TB).rows, 4);
    let dup = run.rows(DUP);
    assert_eq!(
        dup.len(),
        1,
        "Stack Overflow's split archives pair up as one site"
    );
    assert_eq!(dup[0].anchor, "Explain the Rust borrow checker?");
    assert_eq!(dup[0].positive, "What is a borrow checker in Rust?");
    assert!(dup[0]
        .source_id
        .as_deref()
        .unwrap()
        .starts_with("stackoverflow.com:"));
}
