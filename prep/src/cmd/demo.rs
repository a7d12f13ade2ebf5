//! `prep demo`: the whole pipeline on bundled samples, offline: ingest every sample source, mix
//! them into tokenized shards, train a small encoder, and evaluate retrieval before and after.
//!
//! Without `--model`, the encoder is a tiny BERT (2 layers, hidden 128) with a WordPiece vocab
//! trained on the sample texts, initialised from `--seed`; with `--model M` it fine-tunes M.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::Device;
use encoder::{RetrievalMetrics, SentenceEncoder};
use ingest::IngestOptions;
use mixer::{MixConfig, MixOptions, MixTokenizer};
use schemas::{part_files, NoProgress, PairReader};

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Folder of sample sources (`<source>/...` as in shared/fixtures). Default: $PREP_SHARED or
    /// ../shared fixtures when present, else the repository's `samples/`.
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Work folder (pairs/, shards/, model-init/, run/). Replaced on each run.
    #[arg(long, default_value = "demo-run")]
    pub out: PathBuf,
    /// Fine-tune this model instead of training a tiny one from scratch.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Learning rate (default: 1e-3 from scratch, 2e-5 when fine-tuning).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Records of the evaluation dataset used by the before/after evaluation.
    #[arg(long, default_value_t = 500)]
    pub eval_limit: usize,
}

/// (source, input under the fixtures folder). Sources that fail on their sample are reported and
/// skipped, so the demo runs on whatever samples exist.
const SOURCES: &[(&str, &str)] = &[
    ("squad", "squad2"),
    ("stackexchange", "stackexchange"),
    ("gooaq", "gooaq"),
    ("yahoo_answers", "yahoo_answers"),
    ("quora", "quora/QQP.train.tsv"),
    ("amazon_qa", "amazon_qa/qa_Appliances.json.gz"),
    ("searchqa", "searchqa"),
    ("triviaqa", "triviaqa"),
    ("wikianswers", "wikianswers"),
];

fn fixtures_dir(arg: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = arg {
        return Ok(d.clone());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(s) = std::env::var_os("PREP_SHARED") {
        candidates.push(PathBuf::from(s).join("fixtures"));
    }
    candidates.push(PathBuf::from("../shared/fixtures"));
    candidates.push(PathBuf::from("samples"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(repo.join("../shared/fixtures"));
    candidates.push(repo.join("samples"));
    candidates
        .into_iter()
        .find(|c| c.is_dir())
        .ok_or_else(|| anyhow::anyhow!("no sample folder found: pass --fixtures DIR"))
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let fixtures = fixtures_dir(&args.fixtures)?;
    let out = &args.out;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let pairs = out.join("pairs");
    println!("== 1/5 ingest samples from {}", fixtures.display());
    let mut datasets: Vec<(String, u64, usize)> = Vec::new();
    for (source, input) in SOURCES {
        let path = fixtures.join(input);
        if !path.exists() {
            continue;
        }
        let opts = IngestOptions {
            threads: 1,
            max_errors: 1000,
            ..IngestOptions::default()
        };
        match ingest::run(
            source,
            std::slice::from_ref(&path),
            &pairs,
            &opts,
            &NoProgress,
        ) {
            Ok(report) => {
                for m in report.manifests.iter().filter(|m| m.rows > 0) {
                    println!("   {source:<14} -> {:<28} {:>6} rows", m.dataset, m.rows);
                    datasets.push((m.dataset.clone(), m.rows, m.columns.columns()));
                }
            }
            Err(e) => eprintln!("   {source:<14} skipped: {e}"),
        }
    }
    if datasets.is_empty() {
        bail!("no sample ingested from {}", fixtures.display());
    }

    println!("== 2/5 model");
    let model_dir = match &args.model {
        Some(m) => {
            let dir = crate::model::resolve(m)?;
            println!("   fine-tuning {}", dir.display());
            dir
        }
        None => {
            let dir = out.join("model-init");
            let texts = sample_texts(&pairs, &datasets)?;
            let bar_texts = texts.len();
            train::vocab::build_model_folder(&texts, 8000, &dir, |v| {
                train::vocab::tiny_config(v, 128)
            })
            .context("building the demo vocab")?;
            // Write the seeded initial weights so "before" is evaluated on exactly what training starts from.
            let cfg = encoder::BertConfig::from_file(&dir.join("config.json"))?;
            let mut model = train::Trainable::fresh(&cfg, args.seed, None, &Device::Cpu)?;
            model.source = Some(dir.clone());
            train::checkpoint::write_model_files(&dir, &model, 128)?;
            println!(
                "   tiny BERT (2 layers, hidden 128, {} params), WordPiece vocab of {} from {bar_texts} sample texts",
                model.vars.iter().map(|v| v.elem_count()).sum::<usize>(),
                cfg.vocab_size
            );
            dir
        }
    };

    println!("== 3/5 mix {} batches of {}", args.steps, args.batch_size);
    let shards = out.join("shards");
    let tokenizer = MixTokenizer::open(&model_dir.join("tokenizer.json"), 32, 64)
        .with_context(|| format!("loading {}", model_dir.join("tokenizer.json").display()))?;
    let mix_opts = MixOptions {
        steps: args.steps,
        batch_size: args.batch_size,
        seed: args.seed,
        max_length_a: 32,
        max_length_b: 64,
        batches_per_draw: 1,
        batches_per_shard: 100,
        ..MixOptions::default()
    };
    // Weights proportional to rows. A sample too small to fill a batch with distinct texts is
    // left out of the mix (the mixer says which), and the mix retried without it.
    let mut in_mix: Vec<&(String, u64, usize)> = datasets
        .iter()
        .filter(|d| d.1 >= args.batch_size as u64)
        .collect();
    let report = loop {
        if in_mix.is_empty() {
            bail!(
                "no sample dataset has enough rows for batches of {}; lower --batch-size",
                args.batch_size
            );
        }
        let entries: Vec<serde_json::Value> = in_mix
            .iter()
            .map(|(id, rows, _)| serde_json::json!({"name": id, "lines": rows, "weight": rows}))
            .collect();
        let config_path = out.join("data_config.json");
        let config_bytes = serde_json::to_vec_pretty(&entries)?;
        std::fs::write(&config_path, &config_bytes)?;
        let config = MixConfig::from_slice(&config_path, &config_bytes)?;
        match mixer::mix(&config, &pairs, &tokenizer, &shards, &mix_opts, &Bar::new()) {
            Ok(r) => break r,
            Err(mixer::MixError::Dataset { dataset, message }) if in_mix.len() > 1 => {
                println!("   leaving {dataset} out of the mix: {message}");
                in_mix.retain(|d| d.0 != dataset);
            }
            Err(e) => return Err(e).context("mixing"),
        }
    };
    let mixed: Vec<&str> = in_mix.iter().map(|d| d.0.as_str()).collect();
    println!("   mixed {}", mixed.join(", "));
    println!(
        "   {} batches, {} rows, {} shards",
        report.index.total_batches(),
        report.rows_written,
        report.index.shards.len()
    );

    // Evaluate on the largest pair dataset. The samples are tiny, so this dataset is also in the
    // training mix: the numbers show the pipeline learns, not how the model generalises.
    let (eval_id, eval_rows, _) = datasets
        .iter()
        .filter(|d| d.2 == 2)
        .max_by_key(|d| d.1)
        .or(datasets.iter().max_by_key(|d| d.1))
        .cloned()
        .expect("non-empty");
    let eval_set = super::eval::load_eval_set(&pairs.join(&eval_id), Some(args.eval_limit))?;
    println!("== 4/5 eval before training on {eval_id} ({} of {eval_rows} records; also in the training mix)", eval_set.queries.len());
    let before = evaluate(&model_dir, &eval_set)?;
    print_metrics("before", &before);

    println!("== 5/5 train {} steps", args.steps);
    let from_scratch = args.model.is_none();
    let train_args = super::train::Args {
        shards: Some(shards.clone()),
        model: Some(model_dir.to_string_lossy().into_owned()),
        output: out.join("run"),
        resume: None,
        steps: args.steps,
        lr: args.lr.unwrap_or(if from_scratch { 1e-3 } else { 2e-5 }),
        warmup: (args.steps / 10).max(1),
        schedule: super::train::Schedule::Linear,
        weight_decay: 0.0,
        eps: 1e-6,
        beta1: 0.9,
        beta2: 0.999,
        max_grad_norm: 1.0,
        dropout: None,
        seed: args.seed,
        loss: super::train::Loss::Symmetric,
        scale: 20.0,
        mini_batch_size: None,
        save_steps: None,
        log: Some(out.join("train-log.jsonl")),
        rank: 0,
        world_size: 1,
        max_seq_length: 128,
        prefetch: 4,
        threads: None,
    };
    let summary = super::train::run_with(&train_args, &Bar::new())?;
    let ck = summary
        .last_checkpoint
        .context("training wrote no checkpoint")?;
    let after = evaluate(&ck, &eval_set)?;
    println!(
        "== results on {eval_id} ({} queries)",
        eval_set.queries.len()
    );
    print_metrics("before", &before);
    print_metrics("after", &after);
    let first: f64 = summary.records.iter().take(10).map(|r| r.loss).sum::<f64>()
        / summary.records.len().clamp(1, 10) as f64;
    let n = summary.records.len();
    let last: f64 = summary.records[n.saturating_sub(10)..]
        .iter()
        .map(|r| r.loss)
        .sum::<f64>()
        / n.clamp(1, 10) as f64;
    println!("   training loss {first:.3} (first 10 steps) -> {last:.3} (last 10)");
    println!(
        "model: {} (a sentence-transformers folder); log: {}; total {:.0}s",
        ck.display(),
        out.join("train-log.jsonl").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_metrics(label: &str, m: &RetrievalMetrics) {
    println!(
        "   {label:<7} MRR@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}  nDCG@10 {:.4}",
        m.mrr_at_10, m.recall_at_1, m.recall_at_10, m.ndcg_at_10
    );
}

fn evaluate(model: &Path, set: &encoder::EvalSet) -> Result<RetrievalMetrics> {
    let enc = SentenceEncoder::load(model, &Device::Cpu)
        .with_context(|| format!("loading {}", model.display()))?;
    set.evaluate(|texts| enc.encode(texts, 64))
        .context("evaluating")
}

/// Every text of the ingested samples (for the WordPiece vocab), in a fixed order.
fn sample_texts(pairs: &Path, datasets: &[(String, u64, usize)]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut seen = BTreeMap::new();
    for (id, _, _) in datasets {
        for f in part_files(&pairs.join(id))? {
            for r in PairReader::open(&f)?.records()? {
                let r = r?;
                for t in [Some(r.anchor), Some(r.positive), r.negative]
                    .into_iter()
                    .flatten()
                {
                    if seen.insert(t.clone(), ()).is_none() {
                        texts.push(t);
                    }
                }
            }
        }
    }
    Ok(texts)
}
