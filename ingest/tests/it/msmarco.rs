//! MS MARCO: the real fixture has dev queries and qrels only, so the triplet paths run on the
//! HAND-MADE files in tests/samples/msmarco/ (see its README), joined to the real dev queries.
use crate::common;
use std::path::PathBuf;

use common::*;
use ingest::IngestOptions;
use testdata::fixture_dir;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples/msmarco")
}

const QRELS_SKIP: &str = "qrels judgment (no negative; not a training triple)";

#[test]
fn real_dev_queries_and_qrels_alone_give_no_rows() {
    let Some(dir) = fixture_dir("msmarco") else {
        return;
    };
    // Queries and qrels give no training triplets: the run fails saying what the lines became,
    // with no malformed record, and writes nothing.
    let (out, res) = try_ingest(
        "msmarco",
        std::slice::from_ref(&dir),
        &IngestOptions::default(),
    );
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows: the input gave 0 malformed record(s) and nothing to write (")
            && err.contains("queries.dev.small.tsv")
            && err.contains(&format!("{QRELS_SKIP}: 212")),
        "{err}"
    );
    // The folder: PROVENANCE.md is not an MS MARCO file; it is listed as not used.
    assert!(err.contains("not used: PROVENANCE.md"), "{err}");
    assert!(!out.path().join("msmarco").exists());
}

fn id_triple_rows(run: &Run) -> Vec<(String, String, String, String)> {
    run.rows("msmarco")
        .into_iter()
        .map(|r| {
            (
                r.source_id.unwrap(),
                r.anchor,
                r.positive,
                r.negative.unwrap(),
            )
        })
        .collect()
}

#[test]
fn id_triples_join_real_dev_queries_to_the_collection() {
    let Some(dir) = fixture_dir("msmarco") else {
        return;
    };
    let inputs = [
        samples().join("qidpidtriples.train.full.2.tsv"),
        dir.join("queries.dev.small.tsv"),
        samples().join("collection.tsv"),
    ];
    let run = ingest("msmarco", &inputs);
    let rows = id_triple_rows(&run);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        (
            "1048585-7187158-101".to_owned(),
            "what is paula deen's brother".to_owned(),
            "Paula Deen and her brother Earl W. Bubba Hiers are being sued by a former general \
             manager at Uncle Bubba's Seafood and Oyster House, a restaurant they co-own in \
             Savannah. (hand-made text)"
                .to_owned(),
            "The Eiffel Tower is a wrought-iron lattice tower in Paris. (hand-made text)"
                .to_owned(),
        )
    );
    // The real query's leading space is trimmed.
    assert_eq!(rows[1].1, "Androgen receptor define");
    assert!(rows[1].2.starts_with("The androgen receptor (AR)"));
    assert!(rows[1].3.starts_with("Kale is a leafy green"));
    assert_eq!(rows[2].1, "treating tension headaches without medication");
    assert!(rows[2].3.starts_with("A bicycle chain"));
    assert_eq!(
        skipped(&run.manifest("msmarco")),
        vec![
            ("unknown passage id".to_owned(), 1),
            ("unknown query id".to_owned(), 1)
        ]
    );

    // A gzipped collection (unpacked to scratch space) and gzipped triples give the same rows.
    let tmp = tempfile::tempdir().unwrap();
    let gz = |name: &str| {
        let raw = std::fs::read(samples().join(name)).unwrap();
        write_input(tmp.path(), &format!("{name}.gz"), &raw)
    };
    let zipped = [
        gz("qidpidtriples.train.full.2.tsv"),
        dir.join("queries.dev.small.tsv"),
        gz("collection.tsv"),
    ];
    let run_gz = ingest_with("msmarco", &zipped, 1);
    assert_eq!(id_triple_rows(&run_gz), rows);
}

#[test]
fn text_triples() {
    let run = ingest("msmarco", &[samples().join("triples.train.small.tsv")]);
    let rows = run.rows("msmarco");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].anchor, "how tall is the eiffel tower");
    assert_eq!(
        rows[0].positive,
        "The Eiffel Tower is 330 metres tall, about the height of an 81-storey building. \
         (hand-made text)"
    );
    assert_eq!(
        rows[1].negative.as_deref(),
        Some("Spinach grows best in cool weather. (hand-made text)")
    );
    assert_eq!(run.manifest("msmarco").skipped_total(), 0);
}

#[test]
fn same_output_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut collection = String::new();
    for pid in 0..5000 {
        collection.push_str(&format!("{pid}\tpassage number {pid} with some text\n"));
    }
    let mut queries = String::new();
    for qid in 0..1000 {
        queries.push_str(&format!("{qid}\tquery {qid}?\n"));
    }
    let mut triples = String::new();
    for i in 0..60_000u64 {
        triples.push_str(&format!("{}\t{}\t{}\n", i % 1000, i % 5000, (i * 7) % 5003));
    }
    let inputs = [
        write_input(tmp.path(), "collection.tsv", collection.as_bytes()),
        write_input(tmp.path(), "queries.train.tsv", queries.as_bytes()),
        write_input(
            tmp.path(),
            "qidpidtriples.train.full.2.tsv.gz",
            triples.as_bytes(),
        ),
    ];
    let one = ingest_with("msmarco", &inputs, 1);
    let two = ingest_with("msmarco", &inputs, 2);
    let rows = one.rows("msmarco");
    assert_eq!(rows, two.rows("msmarco"));
    // (i * 7) % 5003 is 5000..5002 (no such passage) for 36 of the 60,000 lines.
    assert_eq!(rows.len(), 60_000 - 36);
    assert_eq!(rows[1].positive, "passage number 1 with some text");
    assert_eq!(
        rows[1].negative.as_deref(),
        Some("passage number 7 with some text")
    );
    assert_eq!(
        skipped(&one.manifest("msmarco")),
        vec![("unknown passage id".to_owned(), 36)]
    );
}

#[test]
fn bad_lines_are_counted_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let collection = write_input(
        tmp.path(),
        "collection.tsv",
        b"0\tgood passage\nnot-a-pid\tx\n2\tbad \xff passage\n3\t\n",
    );
    let queries = write_input(
        tmp.path(),
        "queries.train.tsv",
        b"1\tquery one\nno tab here\n",
    );
    let triples = write_input(
        tmp.path(),
        "qidpidtriples.train.full.2.tsv",
        b"1\t0\t2\n1\t0\n1\t0\tx\n1\t0\t3\n1\t0\t0\n",
    );
    let text = write_input(
        tmp.path(),
        "triples.train.small.tsv",
        b"q\tp\tn\nq\tp\n\tp\tn\n",
    );
    let qrels = write_input(tmp.path(), "qrels.train.tsv", b"1\t0\t0\t1\n1 0 zero 1\n");
    let inputs = [collection, queries, triples, text, qrels];
    let run = ingest_with("msmarco", &inputs, 1);
    // Rows: id triple (1, 0, 0) and text triple (q, p, n).
    assert_eq!(run.rows("msmarco").len(), 2);
    assert_eq!(
        skipped(&run.manifest("msmarco")),
        vec![
            ("empty passage".to_owned(), 1),
            ("empty text".to_owned(), 1),
            ("invalid id".to_owned(), 1),
            ("malformed line".to_owned(), 3),
            ("missing column".to_owned(), 2),
            (QRELS_SKIP.to_owned(), 1),
            ("unreadable passage".to_owned(), 1),
        ]
    );
    let ex = &run.report.examples;
    assert!(
        ex[0].contains("queries.train.tsv:line 2: malformed line"),
        "{ex:?}"
    );
    assert!(
        ex[1].contains("collection.tsv:line 2: malformed line"),
        "{ex:?}"
    );
    assert!(
        ex[2].contains("qidpidtriples.train.full.2.tsv:line 1: unreadable passage")
            && ex[2].contains("passage 2"),
        "{ex:?}"
    );

    let opts = IngestOptions {
        max_errors: 3,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("msmarco", &inputs, &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("qidpidtriples.train.full.2.tsv:line 2") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("msmarco").exists());
}

#[test]
fn missing_inputs_and_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let triples = samples().join("qidpidtriples.train.full.2.tsv");
    let (_out, res) = try_ingest(
        "msmarco",
        std::slice::from_ref(&triples),
        &IngestOptions::default(),
    );
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("qidpidtriples.train.full.2.tsv") && err.contains("collection.tsv"),
        "{err}"
    );
    let (_out, res) = try_ingest(
        "msmarco",
        &[triples, samples().join("collection.tsv")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("queries.train.tsv"));

    let odd = write_input(tmp.path(), "passages.tsv", b"1\tx\n");
    let (_out, res) = try_ingest("msmarco", &[odd], &IngestOptions::default());
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("passages.tsv: not an MS MARCO file name"));

    let full = write_input(
        tmp.path(),
        "triples.train.full.tsv.gz",
        "query\tpositive text\tnegative text\n"
            .repeat(100_000)
            .as_bytes(),
    );
    let bytes = std::fs::read(&full).unwrap();
    let cut = tmp.path().join("triples.cut.tsv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("msmarco", &[cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("triples.cut.tsv.gz") && err.contains("truncated"),
        "{err}"
    );

    let empty = write_input(tmp.path(), "triples.empty.tsv", b"");
    // An empty input is an error, not an empty dataset.
    let (_out, res) = try_ingest("msmarco", &[empty], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );

    let (_out, res) = try_ingest(
        "msmarco",
        &[tmp.path().join("triples.none.tsv")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("triples.none.tsv"));
}
