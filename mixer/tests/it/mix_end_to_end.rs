//! `mix` on real small datasets with the real MiniLM tokenizer: shard contract, determinism,
//! round dedup, resume and restart.

use crate::common;

use std::collections::HashSet;
use std::path::Path;

use common::{config_json, make_dataset, make_dataset_with};
use mixer::{mix, MixConfig, MixOptions, MixTokenizer, Mixing};
use schemas::shards::{shard_file_name, ShardReader, ShardRow};
use schemas::{
    Arity, DatasetWriter, InputFile, NoProgress, PairRecord, PairWriterOptions, ShardIndex,
};
use testdata::test_model_dir;

struct Fixture {
    _tmp: tempfile::TempDir,
    pairs: std::path::PathBuf,
    config: MixConfig,
    tok: MixTokenizer,
}

fn fixture() -> Option<Fixture> {
    let model = test_model_dir()?;
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    make_dataset(&pairs, "squad", Arity::Pair, 300, 40);
    make_dataset(&pairs, "eli5", Arity::Pair, 120, 25);
    make_dataset(&pairs, "quora", Arity::Triplet, 200, 30);
    // Many repeated texts: round dedup has work to do.
    make_dataset_with(&pairs, "gooaq", Arity::Pair, 400, 50, |i| {
        (
            format!("shared question {}", i % 40),
            format!("answer {i}"),
            String::new(),
        )
    });
    // A long text to exercise truncation.
    make_dataset_with(&pairs, "searchqa", Arity::Pair, 60, 20, |i| {
        (
            format!("q{i} {}", "word ".repeat(100)),
            format!("snippets {i} {}", "more ".repeat(400)),
            String::new(),
        )
    });
    let cfg_path = tmp.path().join("data_config.json");
    std::fs::write(
        &cfg_path,
        config_json(&[
            ("squad", 40),
            ("eli5", 20),
            ("quora", 30),
            ("gooaq", 25),
            ("searchqa", 10),
        ]),
    )
    .unwrap();
    let config = MixConfig::read(&cfg_path).unwrap();
    let tok = MixTokenizer::open(&model, 16, 32).unwrap();
    Some(Fixture {
        _tmp: tmp,
        pairs,
        config,
        tok,
    })
}

fn opts() -> MixOptions {
    MixOptions {
        steps: 37,
        batch_size: 8,
        seed: 7,
        max_length_a: 16,
        max_length_b: 32,
        datasets_per_batch: 2,
        batches_per_draw: 2,
        mixing: Mixing::Random,
        keep_text: true,
        batches_per_shard: 5,
        shuffle_buffer: 64,
    }
}

fn run(f: &Fixture, out: &Path, o: &MixOptions) -> mixer::MixReport {
    mix(&f.config, &f.pairs, &f.tok, out, o, &NoProgress).unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn read_all(out: &Path, index: &ShardIndex) -> Vec<ShardRow> {
    index
        .shards
        .iter()
        .flat_map(|s| {
            ShardReader::open(out.join(&s.file))
                .unwrap()
                .read_rows()
                .unwrap()
        })
        .collect()
}

#[test]
fn shards_match_index_and_contract() {
    let Some(f) = fixture() else { return };
    let out = f._tmp.path().join("shards");
    let o = opts();
    let report = run(&f, &out, &o);
    let index = ShardIndex::read(&out).unwrap();
    assert_eq!(report.index.shards, index.shards);
    assert_eq!(
        report.index.datasets.keys().collect::<Vec<_>>(),
        index.datasets.keys().collect::<Vec<_>>()
    );
    assert_eq!((index.steps, index.batch_size, index.seed), (37, 8, 7));
    assert_eq!(index.shards.len(), 8, "ceil(37 / 5)");
    assert_eq!(index.total_batches(), 37);
    assert!(index.complete);
    assert_eq!(index.tokenizer.pad_token_id, 0);
    assert_eq!(index.tokenizer.sha256, f.tok.sha256());
    assert_eq!(index.mix.mixing, Mixing::Random);
    for (i, s) in index.shards.iter().enumerate() {
        assert_eq!(s.file, shard_file_name(i));
        assert_eq!(s.first_batch, i as u64 * 5);
        assert_eq!(s.sha256, schemas::sha256_file(&out.join(&s.file)).unwrap());
        let r = ShardReader::open(out.join(&s.file)).unwrap();
        assert_eq!(r.rows(), s.rows);
        assert_eq!(
            r.row_groups().len() as u64,
            s.batches,
            "one row group per batch"
        );
    }
    let rows = read_all(&out, &index);
    assert_eq!(rows.len(), 37 * 8);
    let mut per_dataset = std::collections::BTreeMap::<String, u64>::new();
    for (b, batch) in rows.chunks(8).enumerate() {
        assert!(
            batch.iter().all(|r| r.batch == b as u64),
            "rows in batch order"
        );
        assert!(
            batch.iter().all(|r| r.dataset == batch[0].dataset),
            "one dataset per batch"
        );
        let triplet = batch[0].dataset == "quora";
        *per_dataset.entry(batch[0].dataset.clone()).or_default() += 1;
        for r in batch {
            assert_eq!(r.negative_ids.is_some(), triplet);
            for (ids, max) in [(&r.anchor_ids, 16), (&r.positive_ids, 32)] {
                assert_eq!((ids[0], *ids.last().unwrap()), (101, 102));
                assert!(ids.len() <= max);
            }
            assert_eq!(
                r.anchor_ids,
                f.tok.encode_a(r.anchor.as_deref().unwrap()).unwrap()
            );
            assert_eq!(
                r.positive_ids,
                f.tok.encode_b(r.positive.as_deref().unwrap()).unwrap()
            );
        }
    }
    // Per-dataset batch counts in the index are the shards' own.
    for (id, n) in &per_dataset {
        assert_eq!(index.datasets[id].batches, *n, "{id}");
    }
    let drawn: u64 = index.datasets.values().map(|v| v.rows_drawn).sum();
    assert_eq!(drawn, 37 * 8);
    assert!(report.texts_truncated > 0, "searchqa's long texts are cut");
    assert!(
        index.datasets["gooaq"].rows_skipped_duplicate > 0 || !per_dataset.contains_key("gooaq")
    );
}

#[test]
fn no_text_twice_in_a_round() {
    let Some(f) = fixture() else { return };
    let out = f._tmp.path().join("shards");
    let mut o = opts();
    o.steps = 60;
    run(&f, &out, &o);
    let rows = read_all(&out, &ShardIndex::read(&out).unwrap());
    // A round is datasets_per_batch × batches_per_draw = 4 batches of 8 rows.
    let mut rounds = 0;
    for round in rows.chunks(32) {
        let mut seen = HashSet::new();
        for r in round {
            for t in [r.anchor.clone(), r.positive.clone(), r.negative.clone()]
                .into_iter()
                .flatten()
            {
                assert!(seen.insert(t.clone()), "text {t:?} twice in a round");
            }
        }
        let triplets = round.iter().filter(|r| r.negative_ids.is_some()).count();
        assert!(
            triplets == 0 || triplets == round.len(),
            "pairs and triplets mixed in a round"
        );
        rounds += 1;
    }
    assert_eq!(rounds, 15);
}

#[test]
fn same_seed_same_bytes_other_seed_other_stream() {
    let Some(f) = fixture() else { return };
    let (a, b, c) = (
        f._tmp.path().join("a"),
        f._tmp.path().join("b"),
        f._tmp.path().join("c"),
    );
    run(&f, &a, &opts());
    run(&f, &b, &opts());
    assert_eq!(files(&a), files(&b), "byte-identical shards and index");
    let mut o = opts();
    o.seed = 8;
    run(&f, &c, &o);
    let ia = ShardIndex::read(&a).unwrap();
    let ic = ShardIndex::read(&c).unwrap();
    assert_ne!(ia.shards[0].sha256, ic.shards[0].sha256);
}

#[test]
fn interrupted_mix_resumes_to_identical_output() {
    let Some(f) = fixture() else { return };
    let full = f._tmp.path().join("full");
    let out = f._tmp.path().join("out");
    run(&f, &full, &opts());
    run(&f, &out, &opts());

    // A crash after shard 5 was renamed but before the index listed it, with a temp file left.
    let mut index = ShardIndex::read(&out).unwrap();
    index.shards.truncate(5);
    index.write(&out).unwrap();
    std::fs::remove_file(out.join(shard_file_name(7))).unwrap();
    std::fs::write(out.join(".shard-00006.parquet.tmp-999"), b"half").unwrap();
    let report = run(&f, &out, &opts());
    assert_eq!(report.resumed_at_batch, 25);
    assert!(!report.restarted);
    assert_eq!(files(&out), files(&full));

    // A listed shard whose bytes changed is not trusted: it is made again.
    let mut bytes = std::fs::read(out.join(shard_file_name(7))).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(out.join(shard_file_name(7)), bytes).unwrap();
    let report = run(&f, &out, &opts());
    assert_eq!(report.resumed_at_batch, 35);
    assert_eq!(files(&out), files(&full));

    // More steps extend the stream: the result equals a fresh longer run.
    let mut longer = opts();
    longer.steps = 52;
    let fresh = f._tmp.path().join("fresh");
    run(&f, &fresh, &longer);
    let report = run(&f, &out, &longer);
    assert_eq!(
        report.resumed_at_batch, 35,
        "the short last shard is redone"
    );
    assert_eq!(files(&out), files(&fresh));

    // Other options: a clean restart, nothing stale left.
    let mut other = opts();
    other.max_length_b = 24;
    let report = run(&f, &out, &other);
    assert!(report.restarted);
    assert_eq!(report.resumed_at_batch, 0);
    assert_eq!(ShardIndex::read(&out).unwrap().shards.len(), 8);
    assert_eq!(files(&out).len(), 9, "8 shards + index.json");
}

#[test]
fn normalized_jsonl_sources_mix_like_datasets_once_ingested() {
    let Some(f) = fixture() else { return };
    let pairs = f.pairs.clone();
    // The mixer never parses it (ingest's `jsonl` source does, in `prep mix`).
    let path = pairs.join("AllNLI.jsonl.gz");
    std::fs::write(&path, "hand-made stand-in for an upstream file\n").unwrap();
    let cfg = f._tmp.path().join("c.json");
    std::fs::write(
        &cfg,
        config_json(&[("AllNLI.jsonl.gz", 5), ("squad_pairs.jsonl.gz", 5)]),
    )
    .unwrap();
    let config = MixConfig::read(&cfg).unwrap();
    let out = f._tmp.path().join("o");
    let mut o = opts();
    o.steps = 12;

    // Not ingested yet: refused, naming the file, where its dataset goes and who makes it.
    let msg = mix(&config, &pairs, &f.tok, &out, &o, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("AllNLI.jsonl.gz")
            && msg.contains(".sources/AllNLI")
            && msg.contains("prep mix"),
        "{msg}"
    );

    // With a `jsonl` ingest of this very file there (as `prep mix` makes it), it mixes.
    let mut w = DatasetWriter::create(
        mixer::upstream::dataset_dir(&out, "AllNLI"),
        "AllNLI",
        "jsonl",
        Arity::Pair,
        PairWriterOptions::default(),
    )
    .unwrap()
    .with_options(mixer::upstream::conversion_options(&path).unwrap());
    for i in 0..100 {
        w.push(&PairRecord::pair(
            format!("premise {i}"),
            format!("entailed {i}"),
        ))
        .unwrap();
    }
    w.set_inputs(vec![InputFile {
        path: path.display().to_string(),
        bytes: std::fs::metadata(&path).unwrap().len(),
        sha256: schemas::sha256_file(&path).unwrap(),
    }]);
    w.finish().unwrap();
    let report = mix(&config, &pairs, &f.tok, &out, &o, &NoProgress).unwrap();
    let ids: Vec<_> = report.index.datasets.keys().cloned().collect();
    assert_eq!(
        ids,
        ["AllNLI", "squad"],
        "upstream's squad_pairs name resolves to our squad"
    );
    assert_eq!(report.index.datasets["AllNLI"].rows, 100);
    assert!(out.join(".sources/AllNLI/manifest.json").is_file());

    // The file changed since: refused again, rather than mixing rows of another version.
    std::fs::write(
        &path,
        "another version of the file, longer than the first one\n",
    )
    .unwrap();
    let msg = mix(&config, &pairs, &f.tok, &out, &o, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("AllNLI.jsonl.gz"), "{msg}");
}

#[test]
fn a_second_mix_into_the_same_folder_fails_at_once_and_stale_temps_go() {
    let Some(f) = fixture() else { return };
    let out = f._tmp.path().join("shards");
    // Another run holds the folder (here: this process, as a second `prep mix` would see it).
    let held = schemas::OutputLock::acquire(&out).unwrap();
    let err = mix(&f.config, &f.pairs, &f.tok, &out, &opts(), &NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("in use by pid {}", std::process::id())),
        "{msg}"
    );
    assert!(
        !out.join("index.json").exists(),
        "the refused run wrote nothing"
    );
    drop(held);

    // What killed runs of other pids left: shard and index temps, a half-converted source.
    std::fs::create_dir_all(out.join(".sources/.AllNLI.tmp-424242")).unwrap();
    std::fs::write(out.join(".index.json.tmp-31337"), b"{").unwrap();
    std::fs::write(out.join(".shard-00002.parquet.tmp-31337"), b"half").unwrap();
    run(&f, &out, &opts());
    assert!(!out.join(".sources/.AllNLI.tmp-424242").exists());
    assert_eq!(files(&out).len(), 9, "8 shards + index.json, no temps");
}

#[test]
fn resume_verifies_every_listed_shard_and_remakes_the_damaged_ones() {
    let Some(f) = fixture() else { return };
    let full = f._tmp.path().join("full");
    let out = f._tmp.path().join("out");
    run(&f, &full, &opts());
    run(&f, &out, &opts());
    // Damage in the middle of the list (not the last shard), and a listed shard gone.
    let path = out.join(shard_file_name(2));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    std::fs::remove_file(out.join(shard_file_name(4))).unwrap();

    let report = run(&f, &out, &opts());
    assert_eq!(
        report.shards_remade,
        [shard_file_name(2), shard_file_name(4)]
    );
    assert_eq!(report.resumed_at_batch, 10);
    assert_eq!(
        report.batches_written, 10,
        "only shards 2 and 4 are made again"
    );
    assert_eq!(
        files(&out),
        files(&full),
        "byte-identical to an untouched mix"
    );
}

#[test]
fn a_no_op_rerun_leaves_the_index_byte_identical() {
    let Some(f) = fixture() else { return };
    let out = f._tmp.path().join("out");
    run(&f, &out, &opts());
    let before = files(&out);
    let index = out.join("index.json");
    let mtime = std::fs::metadata(&index).unwrap().modified().unwrap();
    let report = run(&f, &out, &opts());
    assert_eq!(report.batches_written, 0);
    assert!(report.shards_remade.is_empty());
    assert_eq!(files(&out), before, "shards and index.json unchanged");
    assert_eq!(
        std::fs::metadata(&index).unwrap().modified().unwrap(),
        mtime,
        "index.json not even rewritten"
    );
    let idx = ShardIndex::read(&out).unwrap();
    assert!(idx.mixing_deviation.is_some());
    assert!(idx.datasets.values().any(|d| d.batches > 0));

    // Fewer steps: nothing to write, and the index is the one a fresh shorter run writes.
    let mut shorter = opts();
    shorter.steps = 35;
    let fresh = f._tmp.path().join("fresh");
    run(&f, &fresh, &shorter);
    let report = run(&f, &out, &shorter);
    assert_eq!(report.batches_written, 0);
    assert_eq!(files(&out), files(&fresh));
}

#[test]
fn weights_past_the_limit_fail_the_mix_and_huge_valid_ones_mix() {
    let Some(f) = fixture() else { return };
    let entry = |name: &str, weight| mixer::ConfigEntry {
        name: name.into(),
        lines: None,
        weight,
    };
    let half = u64::MAX / 2 + 1;
    let config = MixConfig {
        path: f._tmp.path().join("c.json"),
        entries: vec![entry("squad", half), entry("eli5", half)],
    };
    let out = f._tmp.path().join("over");
    let err = mix(&config, &f.pairs, &f.tok, &out, &opts(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");

    // Weights near the limit: exact arithmetic, every dataset gets its share of batches.
    let big = mixer::MAX_TOTAL_WEIGHT / 2;
    let config = MixConfig {
        path: f._tmp.path().join("c.json"),
        entries: vec![entry("squad", big), entry("eli5", big)],
    };
    let mut o = opts();
    o.mixing = Mixing::Exact;
    o.steps = 12;
    let report = mix(
        &config,
        &f.pairs,
        &f.tok,
        &f._tmp.path().join("big"),
        &o,
        &NoProgress,
    )
    .unwrap();
    for id in ["squad", "eli5"] {
        assert_eq!(report.index.datasets[id].batches, 6, "{id}");
    }
}
