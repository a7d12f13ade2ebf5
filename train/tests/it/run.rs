//! The training loop end to end on a tiny model: exact resume, JSONL log, checkpoint folders that
//! load as sentence-transformers models, crash-safe saves.

use crate::common;

use std::path::Path;

use schemas::NoProgress;
use train::{RunOptions, StepRecord, TrainConfig};

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        common::tiny_model(&tmp.path().join("model"));
        let vocab = common::vocab_size(&tmp.path().join("model"));
        common::write_shards(&tmp.path().join("shards"), vocab, 12, 8, 5);
        Setup { tmp }
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        lr: 1e-3,
        warmup: 2,
        steps: 8,
        dropout: Some(0.1),
        mini_batch_size: Some(3),
        save_steps: Some(3),
        seed: 5,
        ..TrainConfig::default()
    }
}

fn run_opts(out: &Path, log: Option<&Path>) -> RunOptions {
    let mut r = RunOptions::new(out);
    r.log = log.map(Path::to_owned);
    r
}

fn read_log(p: &Path) -> Vec<StepRecord> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resume_gives_the_same_losses() {
    let s = Setup::new();
    let cfg = config();
    let full = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &run_opts(&s.path("a"), Some(&s.path("a.jsonl"))),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(full.records.len(), 8);
    assert!(full
        .records
        .iter()
        .all(|r| r.loss.is_finite() && r.grad_norm > 0.0));
    assert_eq!(
        full.records[0].lr, 0.0,
        "warmup starts at lr 0, as transformers' scheduler"
    );

    // Interrupted after step 5: checkpoint-3 is the last save.
    let mut interrupted = run_opts(&s.path("b"), Some(&s.path("b.jsonl")));
    interrupted.stop_after = Some(5);
    let first = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &interrupted,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(first.steps_done, 5);
    assert!(s.path("b/checkpoint-3").is_dir() && !s.path("b/checkpoint-5").exists());
    assert_eq!(read_log(&s.path("b.jsonl")).len(), 5);

    // Resume from the run folder: picks checkpoint-3, runs steps 4..8.
    let rest = train::resume(
        &s.path("b"),
        &run_opts(&s.path("b"), Some(&s.path("b.jsonl"))),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(rest.records.first().unwrap().step, 4);
    let combined: Vec<f64> = first.records[..3]
        .iter()
        .chain(&rest.records)
        .map(|r| r.loss)
        .collect();
    let want: Vec<f64> = full.records.iter().map(|r| r.loss).collect();
    assert_eq!(
        combined, want,
        "resumed losses differ from the uninterrupted run"
    );
    let norms = |v: &[StepRecord]| v.iter().map(|r| r.grad_norm).collect::<Vec<_>>();
    assert_eq!(
        norms(&first.records[..3])
            .into_iter()
            .chain(norms(&rest.records))
            .collect::<Vec<_>>(),
        norms(&full.records)
    );

    // The log was rewound to the checkpoint and continued: steps 1..8 once each, same as run a.
    let log = read_log(&s.path("b.jsonl"));
    assert_eq!(
        log.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    let log_a = read_log(&s.path("a.jsonl"));
    for (x, y) in log.iter().zip(&log_a) {
        assert_eq!(
            (x.step, x.loss, x.lr, x.grad_norm),
            (y.step, y.loss, y.lr, y.grad_norm)
        );
    }

    // Same final weights.
    let wa =
        candle_core::safetensors::load(s.path("a/checkpoint-8/model.safetensors"), &common::cpu())
            .unwrap();
    let wb =
        candle_core::safetensors::load(s.path("b/checkpoint-8/model.safetensors"), &common::cpu())
            .unwrap();
    assert_eq!(wa.len(), wb.len());
    for (k, t) in &wa {
        assert_eq!(common::max_abs_diff(t, &wb[k]), 0.0, "{k}");
    }
}

#[test]
fn checkpoint_is_a_sentence_transformers_folder() {
    let s = Setup::new();
    let cfg = TrainConfig {
        steps: 2,
        save_steps: None,
        ..config()
    };
    let out = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &run_opts(&s.path("run"), None),
        &NoProgress,
    )
    .unwrap();
    let ck = out.last_checkpoint.unwrap();
    assert_eq!(ck, s.path("run/checkpoint-2"));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "trainer_state.json",
        "optimizer.safetensors",
    ] {
        assert!(ck.join(f).is_file(), "missing {f}");
    }
    let modules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("modules.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"
        ]
    );
    // HF tensor names.
    let w = candle_core::safetensors::load(ck.join("model.safetensors"), &common::cpu()).unwrap();
    for n in [
        "embeddings.word_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.1.attention.self.query.weight",
        "encoder.layer.1.output.LayerNorm.bias",
    ] {
        assert!(w.contains_key(n), "no {n}");
    }
    // The encoder (what `prep embed/eval` use) loads it; its vectors are the trained model's.
    let enc = encoder::SentenceEncoder::load(&ck, &common::cpu()).unwrap();
    let v = enc.encode(&["how far is the moon", "canberra"], 2).unwrap();
    assert_eq!(v.len(), 2);
    let n: f32 = v[0].iter().map(|x| x * x).sum();
    assert!((n - 1.0).abs() < 1e-4, "normalised: {n}");
    let trained = train::Trainable::from_pretrained(&ck, Some(0.0), &common::cpu()).unwrap();
    let ids = enc.tokenize(&["how far is the moon"]).unwrap();
    let t = candle_core::Tensor::new(ids[0].as_slice(), &common::cpu())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = t.ones_like().unwrap();
    let e = trained
        .embed(&t, &mask, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = e
        .iter()
        .zip(&v[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "encoder and trainer disagree by {d}");
}

#[test]
fn crash_during_save_keeps_the_last_good_checkpoint() {
    let s = Setup::new();
    let cfg = TrainConfig {
        steps: 6,
        save_steps: Some(2),
        ..config()
    };
    let mut opts = run_opts(&s.path("run"), None);
    opts.fail_save_at = Some(4);
    let err = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &opts,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoint-4"), "{err}");
    let visible: Vec<String> = std::fs::read_dir(s.path("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        visible,
        ["checkpoint-2"],
        "only the good checkpoint, no half-written folder"
    );
    // It is whole: loads and resumes to the end, matching an uninterrupted run.
    encoder::SentenceEncoder::load(&s.path("run/checkpoint-2"), &common::cpu()).unwrap();
    let rest = train::resume(&s.path("run"), &run_opts(&s.path("run"), None), &NoProgress).unwrap();
    assert_eq!(rest.steps_done, 6);
    let full = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &run_opts(&s.path("ref"), None),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        rest.records.iter().map(|r| r.loss).collect::<Vec<_>>(),
        full.records[2..].iter().map(|r| r.loss).collect::<Vec<_>>()
    );
}

#[test]
fn asking_for_more_steps_than_shards_hold_fails_clearly() {
    let s = Setup::new();
    let cfg = TrainConfig {
        steps: 50,
        ..config()
    };
    let err = train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &run_opts(&s.path("run"), None),
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("holds 12 batches"), "{err}");
}

#[test]
fn demo_model_folder_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    common::tiny_model(&a);
    common::tiny_model(&b);
    for f in ["tokenizer.json", "vocab.txt", "config.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    // No [UNK] for words made of sample or ASCII characters (characters are always in the vocab).
    let tok = encoder::tokenizers::Tokenizer::from_file(a.join("tokenizer.json")).unwrap();
    let enc = tok.encode("Zebra crossings near Canberra!", true).unwrap();
    assert!(!enc.get_ids().contains(&1), "{:?}", enc.get_tokens());
    assert_eq!(enc.get_ids()[0], 2, "[CLS] first");
}

fn set_index(dir: &Path, edit: impl FnOnce(&mut schemas::ShardIndex)) {
    let mut index = schemas::ShardIndex::read(dir).unwrap();
    edit(&mut index);
    index.write(dir).unwrap();
}

#[test]
fn incomplete_or_empty_shard_sets_are_refused_unless_allowed() {
    let s = Setup::new();
    let shards = s.path("part");
    common::write_shards(&shards, common::vocab_size(&s.path("model")), 4, 8, 2);
    // What a killed mix leaves: 4 batches listed of the 10 asked for.
    set_index(&shards, |i| {
        i.steps = 10;
        i.complete = false;
    });
    let cfg = TrainConfig {
        steps: 0,
        save_steps: None,
        ..config()
    };
    let go = |opts: &RunOptions| {
        train::train(&shards, &s.path("model"), &cfg, opts, &NoProgress).map_err(|e| e.to_string())
    };
    let err = go(&run_opts(&s.path("run"), None)).unwrap_err();
    assert!(
        err.contains("incomplete") && err.contains("4 of 10") && err.contains("--allow-incomplete"),
        "{err}"
    );
    assert!(!s.path("run").exists(), "nothing written");

    let mut allowed = run_opts(&s.path("run"), None);
    allowed.allow_incomplete = true;
    let set = train::check_shards(&shards, true).unwrap();
    assert!(set.incomplete_notice().unwrap().contains("4 batches"));
    let done = go(&allowed).unwrap();
    assert_eq!(done.steps_done, 4, "the listed prefix");
    let state = train::checkpoint::read_state(&s.path("run/checkpoint-4")).unwrap();
    assert_eq!(state.config.steps, 4, "schedule length fixed for resumes");

    // No batches at all: refused even when incomplete sets are allowed.
    set_index(&shards, |i| i.shards.clear());
    let err = go(&allowed).unwrap_err();
    assert!(err.contains("lists no batches"), "{err}");
}

#[test]
fn a_damaged_shard_fails_the_run_before_the_first_step() {
    let s = Setup::new();
    // Shard 1 holds batches 5..10: a lazy check would train steps 1-5 (and save checkpoint-3)
    // before finding it.
    let path = s.path("shards/shard-00001.parquet");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[6] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let err = train::train(
        &s.path("shards"),
        &s.path("model"),
        &config(),
        &run_opts(&s.path("run"), Some(&s.path("run.jsonl"))),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("shard-00001.parquet") && err.contains("sha256"),
        "{err}"
    );
    assert_eq!(read_log(&s.path("run.jsonl")).len(), 0, "no step was run");
    assert!(!s.path("run/checkpoint-3").exists());
}

#[test]
fn a_second_run_into_the_same_folder_fails_at_once() {
    let s = Setup::new();
    let cfg = TrainConfig {
        steps: 2,
        save_steps: None,
        ..config()
    };
    let held = schemas::OutputLock::acquire(s.path("run")).unwrap();
    let go = || {
        train::train(
            &s.path("shards"),
            &s.path("model"),
            &cfg,
            &run_opts(&s.path("run"), None),
            &NoProgress,
        )
        .map_err(|e| e.to_string())
    };
    let err = go().unwrap_err();
    assert!(
        err.contains(&format!("in use by pid {}", std::process::id())),
        "{err}"
    );
    let err = train::resume(&s.path("run"), &run_opts(&s.path("run"), None), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by pid"), "{err}");
    drop(held);
    // A killed save of another pid left its temporary folder: the next run removes it.
    std::fs::create_dir_all(s.path("run/.checkpoint-7.tmp-424242")).unwrap();
    go().unwrap();
    let visible: Vec<String> = std::fs::read_dir(s.path("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(visible, ["checkpoint-2"]);
}

#[test]
fn run_folder_of_a_checkpoint_is_its_parent() {
    let s = Setup::new();
    let cfg = TrainConfig {
        steps: 1,
        save_steps: None,
        ..config()
    };
    train::train(
        &s.path("shards"),
        &s.path("model"),
        &cfg,
        &run_opts(&s.path("r"), None),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(train::run_folder_of(&s.path("r/checkpoint-1")), s.path("r"));
    assert_eq!(train::run_folder_of(&s.path("r")), s.path("r"));
}

/// Shards of `batches` copies of one batch of 8 rows with 3 negative columns (a mined n-tuple
/// dataset): a model that learns anything lowers the loss on it.
fn write_three_negative_shards(dir: &Path, vocab: u32, batches: u64) {
    use rand::SeedableRng;
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<schemas::ShardRow> = (0..8)
        .map(|_| schemas::ShardRow {
            dataset: "squad_hn3".to_owned(),
            anchor_ids: common::random_seq(&mut rng, vocab, 12),
            positive_ids: common::random_seq(&mut rng, vocab, 20),
            negative_ids: Some(common::random_seq(&mut rng, vocab, 20)),
            extra_negative_ids: (0..2)
                .map(|_| common::random_seq(&mut rng, vocab, 20))
                .collect(),
            ..Default::default()
        })
        .collect();
    let options = schemas::ShardWriterOptions {
        batch_size: 8,
        keep_text: false,
    };
    let path = dir.join(schemas::shard_file_name(0));
    let mut w = schemas::ShardWriter::create_for(path, options, 3).unwrap();
    for b in 0..batches {
        let batch: Vec<_> = rows
            .iter()
            .map(|r| schemas::ShardRow {
                batch: b,
                ..r.clone()
            })
            .collect();
        w.write_batch(&batch).unwrap();
    }
    schemas::ShardIndex::hand_made(8, 7, vec![w.finish().unwrap()], 0)
        .write(dir)
        .unwrap();
}

#[test]
fn three_negative_columns_train_lower_the_loss_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, shards) = (tmp.path().join("model"), tmp.path().join("shards"));
    common::tiny_model(&model);
    write_three_negative_shards(&shards, common::vocab_size(&model), 10);
    let cfg = TrainConfig {
        steps: 10,
        save_steps: Some(4),
        ..config()
    };
    let full = train::train(
        &shards,
        &model,
        &cfg,
        &run_opts(&tmp.path().join("a"), None),
        &NoProgress,
    )
    .unwrap();
    let losses: Vec<f64> = full.records.iter().map(|r| r.loss).collect();
    assert_eq!(losses.len(), 10);
    assert!(full.records.iter().all(|r| r.dataset == "squad_hn3"));
    // 8 anchors against 32 candidates: ln 32 = 3.47 for a model that knows nothing.
    let last = losses[7..].iter().sum::<f64>() / 3.0;
    eprintln!("3-negative run losses: {losses:?}");
    assert!(last < 0.8 * losses[0], "the loss did not fall: {losses:?}");

    let mut stopped = run_opts(&tmp.path().join("b"), None);
    stopped.stop_after = Some(6);
    let first = train::train(&shards, &model, &cfg, &stopped, &NoProgress).unwrap();
    assert!(tmp.path().join("b/checkpoint-4").is_dir());
    let rest = train::resume(
        &tmp.path().join("b"),
        &run_opts(&tmp.path().join("b"), None),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(rest.records.first().unwrap().step, 5);
    let resumed: Vec<f64> = first.records[..4]
        .iter()
        .chain(&rest.records)
        .map(|r| r.loss)
        .collect();
    assert_eq!(resumed, losses, "the resumed run's losses differ");
}

#[test]
fn a_resume_refuses_shards_that_now_hold_another_mix() {
    let s = Setup::new();
    set_index(&s.path("shards"), |i| {
        i.fingerprint = serde_json::json!({"seed": 1});
    });
    let mut stopped = run_opts(&s.path("run"), None);
    stopped.stop_after = Some(4);
    train::train(
        &s.path("shards"),
        &s.path("model"),
        &config(),
        &stopped,
        &NoProgress,
    )
    .unwrap();
    let state = train::checkpoint::read_state(&s.path("run/checkpoint-3")).unwrap();
    assert_eq!(state.shards_fingerprint, serde_json::json!({"seed": 1}));
    assert_eq!(state.shards_url, None, "local shards");

    // The folder re-mixed with other options: the resume names it and stops before any step.
    set_index(&s.path("shards"), |i| {
        i.fingerprint = serde_json::json!({"seed": 2});
    });
    let opts = run_opts(&s.path("run"), None);
    let err = train::resume(&s.path("run"), &opts, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another mix") && err.contains("index.json"),
        "{err}"
    );
    assert!(!s.path("run/checkpoint-6").exists(), "no step taken");

    // Put back, it resumes.
    set_index(&s.path("shards"), |i| {
        i.fingerprint = serde_json::json!({"seed": 1});
    });
    let rest = train::resume(&s.path("run"), &opts, &NoProgress).unwrap();
    assert_eq!(rest.records.first().unwrap().step, 4);
}
