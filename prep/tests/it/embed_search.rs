//! `prep embed` and `prep search` through the binary, on the real test model: each output format
//! reads back through `schemas::embeddings`, search finds the text a query asks about from an
//! embedding file or a cached `--embeddings` file, and files it cannot trust are refused by name.

use std::path::Path;
use std::process::{Command, Output};

use schemas::embeddings::{read_jsonl, read_npy, read_parquet, EmbeddingMeta, EmbeddingWriter};

const CORPUS: &str = "\
Canberra is the capital city of Australia.
Preheat the oven to 220 degrees before baking the bread.
The cheetah is the fastest land animal.
A violin has four strings tuned in fifths.
";

fn prep(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prep"));
    cmd.args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().expect("running prep")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "prep failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The top hit's text of a `--json -k 1` search.
fn top_text(stdout: &str) -> String {
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    line["results"][0]["text"].as_str().unwrap().to_owned()
}

/// What every test here starts from: the test model, a scratch folder, [`CORPUS`] in it.
struct Setup {
    model: String,
    dir: tempfile::TempDir,
    corpus: std::path::PathBuf,
}

/// None (the test skips) without the test model.
fn setup() -> Option<Setup> {
    let model = testdata::test_model_dir()?.to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, CORPUS).unwrap();
    Some(Setup { model, dir, corpus })
}

#[test]
fn embed_formats_read_back_and_search_finds_the_answer() {
    let Some(Setup { model, dir, corpus }) = setup() else {
        return;
    };
    let m = model.as_str();
    for name in ["e.parquet", "e.npy", "e.jsonl"] {
        let out = dir.path().join(name);
        ok(&prep(
            &["embed", "--model", m, "--input"],
            &[&corpus, Path::new("--out"), &out],
        ));
    }
    let pq = read_parquet(&dir.path().join("e.parquet")).unwrap();
    let npy = read_npy(&dir.path().join("e.npy")).unwrap();
    let jsonl = read_jsonl(&dir.path().join("e.jsonl")).unwrap();
    assert_eq!((pq.rows(), pq.dim), (4, 384));
    assert_eq!(
        pq.texts.as_ref().unwrap()[2],
        "The cheetah is the fastest land animal."
    );
    assert_eq!(
        npy.vectors, pq.vectors,
        "npy holds the Parquet file's vectors"
    );
    assert_eq!(
        jsonl.vectors, pq.vectors,
        "jsonl holds the Parquet file's vectors"
    );
    let meta = pq.meta.unwrap();
    assert_eq!(
        meta.input_sha256.unwrap(),
        schemas::sha256_file(&corpus).unwrap()
    );
    assert_eq!((meta.pooling.as_str(), meta.normalize), ("mean", true));

    let query = ["search", "--model", m, "-k", "1", "--json", "--query"];
    let hits = ok(&prep(
        &[&query[..], &["which animal runs fastest?", "--corpus"]].concat(),
        &[&dir.path().join("e.parquet")],
    ));
    assert_eq!(top_text(&hits), "The cheetah is the fastest land animal.");

    // A text corpus with --embeddings: written by the first search, reused by the next.
    let cache = dir.path().join("cache.parquet");
    let args = [&query[..], &["how hot should the oven be?", "--corpus"]].concat();
    let first = prep(&args, &[&corpus, Path::new("--embeddings"), &cache]);
    assert!(top_text(&ok(&first)).starts_with("Preheat the oven"));
    let second = prep(&args, &[&corpus, Path::new("--embeddings"), &cache]);
    assert!(top_text(&ok(&second)).starts_with("Preheat the oven"));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("using embeddings from"), "{said}");
    // At another precision the f32 file is not reused (its vectors are not this encoder's).
    let at_int8 = [
        "how hot should the oven be?",
        "--precision",
        "int8",
        "--corpus",
    ];
    let int8 = [&query[..], &at_int8[..]].concat();
    let third = prep(&int8, &[&corpus, Path::new("--embeddings"), &cache]);
    assert!(top_text(&ok(&third)).starts_with("Preheat the oven"));
    let said = String::from_utf8_lossy(&third.stderr);
    assert!(
        said.contains("holds f32 vectors, this search encodes at int8"),
        "{said}"
    );
    let meta = schemas::embeddings::read_embeddings(&cache)
        .unwrap()
        .meta
        .unwrap();
    assert_eq!(meta.precision, "int8", "rewritten at int8");
}

#[test]
fn files_search_cannot_trust_are_refused_naming_them() {
    let Some(Setup { model, dir, .. }) = setup() else {
        return;
    };
    let m = model.as_str();
    // Vectors recorded as made by other weights.
    let other = dir.path().join("other.parquet");
    let meta = EmbeddingMeta {
        model: "elsewhere".into(),
        model_sha256: "0123456789abcdef".into(),
        input_sha256: None,
        dim: 384,
        normalize: true,
        pooling: "mean".into(),
        max_seq_length: 256,
        precision: "f32".into(),
    };
    let format = schemas::embeddings::EmbeddingFormat::Parquet;
    let mut w = EmbeddingWriter::create(&other, format, 384, 1, &meta).unwrap();
    w.write(&["a text".to_owned()], &[vec![0.05; 384]]).unwrap();
    w.finish().unwrap();
    let out = prep(
        &["search", "--model", m, "--query", "q", "--corpus"],
        &[&other],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains(&format!(
            "{} was embedded with another model",
            other.display()
        )),
        "{said}"
    );
    // An output name of no known format fails before the model loads.
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\n").unwrap();
    let out = prep(
        &["embed", "--model", m, "--input"],
        &[&input, Path::new("--out"), &dir.path().join("out.csv")],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("unknown embedding format `.csv`"), "{said}");
    assert!(!dir.path().join("out.csv").exists());
}

/// `prep search --cache` shares `prep mine`'s embedding cache: the first search encodes the
/// corpus into it, the next finds every text there and encodes none, with the same hits and
/// scores (cosines) as the search without a cache on this normalising model.
#[test]
fn search_reads_and_extends_the_mine_embedding_cache() {
    let Some(Setup { model, dir, corpus }) = setup() else {
        return;
    };
    let m = model.as_str();
    let cache = dir.path().join("cache");
    let args = [
        "search",
        "--model",
        m,
        "-k",
        "4",
        "--json",
        "--query",
        "a fast cat",
        "--corpus",
    ];
    let plain = ok(&prep(&args, &[&corpus]));
    let first = prep(&args, &[&corpus, Path::new("--cache"), &cache]);
    let second = prep(&args, &[&corpus, Path::new("--cache"), &cache]);
    for (what, out, needle) in [
        ("first", &first, "0 corpus texts found, 4 encoded and added"),
        (
            "second",
            &second,
            "4 corpus texts found, 0 encoded and added",
        ),
    ] {
        let hits = ok(out);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(needle), "{what}: no {needle:?} in {said}");
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(hits.lines().next().unwrap()).unwrap(),
            serde_json::from_str(plain.lines().next().unwrap()).unwrap(),
        );
        for (x, y) in a["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["results"].as_array().unwrap())
        {
            assert_eq!(x["text"], y["text"], "{what}: another ranking");
            let (sx, sy) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
            assert!((sx - sy).abs() < 1e-5, "{what}: score {sx} against {sy}");
        }
    }
}

#[test]
fn embed_and_search_at_bf16_and_int8_stay_close_to_f32() {
    let Some(Setup { model, dir, corpus }) = setup() else {
        return;
    };
    let m = model.as_str();
    let embed = |precision: &str| {
        let out = dir.path().join(format!("{precision}.npy"));
        let run = prep(
            &["embed", "--model", m, "--precision", precision, "--input"],
            &[&corpus, Path::new("--out"), &out],
        );
        ok(&run);
        // The user is told which kernels this CPU runs the products with (f32: nothing to say).
        let said = String::from_utf8_lossy(&run.stderr);
        let note = format!("{precision} products by ");
        assert_eq!(
            said.contains(&note),
            precision != "f32",
            "{precision}: {said}"
        );
        read_npy(&out).unwrap()
    };
    let f32 = embed("f32");
    for (precision, gate) in [("bf16", 0.9999), ("int8", 0.995)] {
        let got = embed(precision);
        assert_eq!(got.dim, f32.dim);
        let rows = f32.vectors.chunks(f32.dim).zip(got.vectors.chunks(got.dim));
        let min = rows
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
            .fold(1.0f32, f32::min);
        assert!(min >= gate, "{precision}: min cosine to f32 {min}");
        assert_ne!(got.vectors, f32.vectors, "{precision} ran its own path");
    }
    let hits = ok(&prep(
        &[
            "search",
            "--model",
            m,
            "-k",
            "1",
            "--json",
            "--precision",
            "int8",
            "--query",
            "which animal runs fastest?",
            "--corpus",
        ],
        &[&corpus],
    ));
    assert_eq!(top_text(&hits), "The cheetah is the fastest land animal.");
}

/// `prep mine --max-memory 1 --spill-dir D`: 800 distinct texts (1.2 MiB of vectors) are past
/// half of 1 MiB, so they spill to an unnamed file in D (empty afterwards), and the mined dataset
/// is byte for byte the one of a run with the default budget; so it is with an extra corpus whose
/// texts are past a quarter of 1 MiB.
#[test]
fn mine_spilling_past_max_memory_writes_the_same_dataset() {
    let Some(Setup { model, dir, .. }) = setup() else {
        return;
    };
    let pairs = dir.path().join("pairs");
    let mut w = schemas::PairWriter::new(
        &pairs,
        schemas::Arity::Pair,
        schemas::PairWriterOptions::default(),
    );
    for i in 0..400 {
        let (topic, n) = (["rivers", "bread", "violins", "cheetahs"][i % 4], i / 4);
        w.push(&schemas::PairRecord::pair(
            format!("question {n} about {topic}?"),
            format!("Answer {n}: a passage about {topic}, number {}.", i * 7),
        ))
        .unwrap();
    }
    w.finish().unwrap();
    let spill = dir.path().join("spill");
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec!["mine", "--model", &model, "--num-negatives", "2"];
        args.extend_from_slice(extra);
        let out_dir = dir.path().join(out);
        let o = prep(
            &args,
            &[
                Path::new("--pairs"),
                &pairs,
                Path::new("--out"),
                &out_dir,
                Path::new("--spill-dir"),
                &spill,
            ],
        );
        ok(&o);
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        (
            std::fs::read(out_dir.join("part-00000.parquet")).unwrap(),
            said,
        )
    };
    let (roomy, said_roomy) = run("roomy", &[]);
    let (tight, said_tight) = run("tight", &["--max-memory", "1"]);
    assert!(!said_roomy.contains("spilled"), "{said_roomy}");
    assert!(
        said_tight.contains("  vectors: past their share of --max-memory, spilled to files in"),
        "{said_tight}"
    );
    assert_eq!(roomy, tight, "the same mined rows, byte for byte");

    // With an extra --corpus file (read on each pass) of 300 KB of long texts, past a quarter
    // of 1 MiB: the texts spill too. (Encoded at 16 tokens, which keeps the test quick.)
    let extra = dir.path().join("extra.txt");
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let topic = ["rivers", "bread"][i % 2];
            // Like the positives in their first 16 tokens, marked past them.
            let more = "More words. ".repeat(80);
            format!("Answer {i}: a passage about {topic}, number {i}. {more} (extra corpus)")
        })
        .collect();
    std::fs::write(&extra, lines.join("\n\n")).unwrap();
    let corpus = [
        "--max-seq-length",
        "16",
        "--corpus",
        extra.to_str().unwrap(),
    ];
    let (roomy, said) = run("roomy-corpus", &corpus);
    assert!(!said.contains("spilled"), "{said}");
    let (tight, said) = run(
        "tight-corpus",
        &[&corpus[..], &["--max-memory", "1"]].concat(),
    );
    assert!(
        said.contains("texts and vectors: past their share"),
        "{said}"
    );
    assert_eq!(roomy, tight, "the same rows with a corpus, byte for byte");
    let rows = schemas::DatasetReader::open(dir.path().join("tight-corpus"))
        .unwrap()
        .read_all()
        .unwrap();
    assert!(
        rows.iter()
            .flat_map(|r| r.negatives())
            .any(|n| n.ends_with("(extra corpus)")),
        "some negatives come from the corpus file"
    );
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "no file left"
    );
    let m = schemas::Manifest::read(&dir.path().join("tight")).unwrap();
    assert_eq!(m.options["max_memory_mib"], 1);
}
