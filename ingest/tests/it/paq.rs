//! PAQ: no real sample exists (facebookresearch/PAQ ships none), so these run on the HAND-MADE
//! files in tests/samples/paq/ (see its README) and on generated inputs in the same formats.
use crate::common;
use std::path::{Path, PathBuf};

use common::*;
use ingest::sources::paq::{run_with, Paq};
use ingest::IngestOptions;
use schemas::{NoProgress, PairRecord};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples/paq")
}

fn run_paq(paq: Paq, inputs: &[PathBuf], threads: usize) -> (tempfile::TempDir, Vec<PairRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = IngestOptions {
        threads,
        ..IngestOptions::default()
    };
    run_with(&paq, inputs, dir.path(), &opts, &NoProgress).unwrap();
    let rows = read_rows(&dir.path().join("paq"));
    (dir, rows)
}

fn triples(rows: &[PairRecord]) -> Vec<(&str, &str, &str)> {
    rows.iter()
        .map(|r| {
            (
                r.source_id.as_deref().unwrap(),
                r.anchor.as_str(),
                r.positive.as_str(),
            )
        })
        .collect()
}

#[test]
fn hand_made_sample_joins_questions_to_passages() {
    // One bucket: rows come in metadata order.
    let one_bucket = Paq {
        buckets: 1,
        memory_mib: 64,
    };
    let (_dir, rows) = run_paq(one_bucket, &[samples()], 1);
    assert_eq!(
        triples(&rows),
        vec![
            (
                "1",
                "who composed the magic flute",
                "The Magic Flute is an opera in two acts by Wolfgang Amadeus Mozart to a German \
                 libretto by Emanuel Schikaneder. (hand-made text)"
            ),
            (
                "2",
                "what is the highest mountain in africa",
                "Mount Kilimanjaro, with its three volcanic cones, is the highest mountain in \
                 Africa; locals call its summit \"Uhuru Peak\". (hand-made text)"
            ),
            (
                "3",
                "into which sea does the danube flow",
                "The Danube flows through ten countries, more than any other river, and empties \
                 into the Black Sea. (hand-made text)"
            ),
            (
                "4",
                "who was the first woman to win a nobel prize",
                "Marie Curie was the first woman to win a Nobel Prize and the only person to win \
                 it in two sciences. (hand-made text)"
            ),
            (
                "6",
                "who created python",
                "Python was created by Guido van Rossum and first released in 1991. (hand-made \
                 text)"
            ),
            (
                "3",
                "how many countries does the danube flow through",
                "The Danube flows through ten countries, more than any other river, and empties \
                 into the Black Sea. (hand-made text)"
            ),
        ]
    );

    // The registered source (128 buckets): the same rows, in bucket order, and the counts.
    let run = ingest("paq", &[samples()]);
    let mut got = run.rows("paq");
    assert_eq!(got.len(), 6);
    let m = run.manifest("paq");
    assert_eq!(
        skipped(&m),
        vec![
            ("no passage id".to_owned(), 1),
            ("no question".to_owned(), 1),
            ("passage not found".to_owned(), 1),
        ]
    );
    assert_eq!(m.inputs.len(), 2);
    got.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    let mut want = rows.clone();
    want.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    assert_eq!(got, want);
}

/// `n` questions over `passages` passages (some ids missing), gzipped.
fn generated(dir: &Path, n: u64, passages: u64) -> Vec<PathBuf> {
    let mut meta = String::new();
    for i in 0..n {
        let pid = (i * 7919) % (passages + 50);
        meta.push_str(&format!(
            "{{\"question\": \"question {i} about passage {pid}?\", \"answers\": [{{\"passage_id\": \"{pid}\", \"offset\": 0}}]}}\n"
        ));
    }
    let mut psgs = String::from("id\ttext\ttitle\n");
    for pid in 0..passages {
        psgs.push_str(&format!(
            "{pid}\tPassage {pid}: {}\tTitle {pid}\n",
            "some words of filler text ".repeat(3)
        ));
    }
    vec![
        write_input(dir, "PAQ.metadata.jsonl.gz", meta.as_bytes()),
        write_input(dir, "psgs_w100.tsv.gz", psgs.as_bytes()),
    ]
}

#[test]
fn split_buckets_threads_and_settings_keep_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = generated(tmp.path(), 40_000, 20_000);
    let roomy = Paq {
        buckets: 8,
        memory_mib: 512,
    };
    let (_a, rows) = run_paq(roomy, &inputs, 1);
    let (_b, rows2) = run_paq(roomy, &inputs, 2);
    assert_eq!(rows, rows2, "same order on any thread count");
    // (i * 7919) % 20050 >= 20000 names a missing passage for 50 ids out of 20050.
    let missing = (0..40_000u64)
        .filter(|i| (i * 7919) % 20_050 >= 20_000)
        .count();
    assert_eq!(rows.len(), 40_000 - missing);
    for r in &rows {
        let pid = r.source_id.as_deref().unwrap();
        assert!(
            r.anchor.ends_with(&format!("about passage {pid}?")),
            "{r:?}"
        );
        assert!(r.positive.starts_with(&format!("Passage {pid}: ")), "{r:?}");
    }

    // A 1 MiB budget: the ~4 MiB passage side of one bucket must be split (recursively) to fit.
    let tight = Paq {
        buckets: 1,
        memory_mib: 1,
    };
    let (_c, mut tight_rows) = run_paq(tight, &inputs, 1);
    let mut sorted = rows.clone();
    let key = |r: &PairRecord| r.anchor.clone();
    sorted.sort_by_key(key);
    tight_rows.sort_by_key(key);
    assert_eq!(tight_rows, sorted);
}

#[test]
fn bad_lines_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = write_input(
        tmp.path(),
        "PAQ.metadata.jsonl",
        b"{\"question\": \"q1?\", \"answers\": [{\"passage_id\": \"1\"}]}\n\
          {\"question\": \"broken\n\
          {\"question\": \"bad \xff\", \"answers\": []}\n\
          {\"question\": \"q2?\", \"answers\": [{\"passage_id\": \"2\"}]}\n",
    );
    let psgs = write_input(
        tmp.path(),
        "psgs_w100.tsv",
        b"id\ttext\ttitle\n1\tpassage one\tT1\nno-tab-here\n2\t  \tT2\n",
    );
    let inputs = [meta, psgs];
    let run = ingest_with("paq", &inputs, 1);
    let rows = run.rows("paq");
    assert_eq!(triples(&rows), vec![("1", "q1?", "passage one")]);
    assert_eq!(
        skipped(&run.manifest("paq")),
        vec![
            ("empty passage".to_owned(), 1),
            ("invalid JSON".to_owned(), 1),
            ("invalid UTF-8".to_owned(), 1),
            ("missing column".to_owned(), 1),
        ]
    );
    let ex = &run.report.examples;
    assert!(
        ex[0].contains("PAQ.metadata.jsonl:line 2: invalid JSON"),
        "{ex:?}"
    );
    assert!(
        ex[1].contains("PAQ.metadata.jsonl:line 3: invalid UTF-8"),
        "{ex:?}"
    );
    assert!(
        ex[2].contains("psgs_w100.tsv:line 3: missing column"),
        "{ex:?}"
    );

    let opts = IngestOptions {
        max_errors: 2,
        ..IngestOptions::default()
    };
    let (out, res) = try_ingest("paq", &inputs, &opts);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("psgs_w100.tsv:line 3") && err.contains("--max-errors"),
        "{err}"
    );
    assert!(!out.path().join("paq").exists());

    // One side missing.
    let (_out, res) = try_ingest("paq", &inputs[..1], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(err.contains("psgs_w100.tsv"), "{err}");

    // Truncated gzip passages.
    let gen = generated(tmp.path(), 10, 30_000);
    let bytes = std::fs::read(&gen[1]).unwrap();
    let cut = tmp.path().join("cut.tsv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, res) = try_ingest("paq", &[gen[0].clone(), cut], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("cut.tsv.gz") && err.contains("truncated"),
        "{err}"
    );

    // Empty files: an error, not an empty dataset.
    let e1 = write_input(tmp.path(), "empty.jsonl", b"");
    let e2 = write_input(tmp.path(), "empty.tsv", b"");
    let (_out, res) = try_ingest("paq", &[e1, e2], &IngestOptions::default());
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("no rows") && err.contains("nothing was written"),
        "{err}"
    );

    let (_out, res) = try_ingest(
        "paq",
        &[tmp.path().join("gone.jsonl")],
        &IngestOptions::default(),
    );
    assert!(res.unwrap_err().to_string().contains("gone.jsonl"));
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Memory stays bounded on a large generated join: `cargo test -p ingest --release --test paq
/// -- --ignored --nocapture memory`. Streams ~0.5 GB of input straight to disk (never held).
#[test]
#[ignore = "writes ~0.5 GB; run by hand to measure"]
fn memory_stays_bounded_on_a_large_join() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    // PREP_PAQ_BENCH_SCALE=2 doubles the input, to show the peak does not follow it.
    let scale: u64 = std::env::var("PREP_PAQ_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (questions, passages) = (2_000_000 * scale, 1_000_000 * scale);
    let meta = tmp.path().join("PAQ.metadata.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&meta).unwrap());
    for i in 0..questions {
        let pid = (i * 7919) % passages;
        writeln!(
            w,
            "{{\"question\": \"generated question number {i} about passage {pid}?\", \"answers\": [{{\"passage_id\": \"{pid}\", \"offset\": 0, \"text\": \"x\"}}]}}"
        )
        .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let psgs = tmp.path().join("psgs_w100.tsv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&psgs).unwrap());
    writeln!(w, "id\ttext\ttitle").unwrap();
    let filler = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(7);
    for pid in 0..passages {
        writeln!(w, "{pid}\tPassage {pid}. {filler}\tTitle {pid}").unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let bytes = std::fs::metadata(&meta).unwrap().len() + std::fs::metadata(&psgs).unwrap().len();
    let before = peak_rss_mib().unwrap_or(0);
    let paq = Paq {
        buckets: 128,
        memory_mib: 64,
    };
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let report = run_with(
        &paq,
        &[meta, psgs],
        out.path(),
        &IngestOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib().unwrap_or(0);
    assert_eq!(report.manifests[0].rows, questions);
    eprintln!(
        "paq join: {:.0} MB input, {} rows in {secs:.1} s ({:.0} MB/s), peak RSS {peak} MiB \
         (before the run {before} MiB), budget 64 MiB",
        bytes as f64 / 1e6,
        questions,
        bytes as f64 / 1e6 / secs,
    );
    assert!(peak < 512, "peak RSS {peak} MiB");
}
