//! `prep demo`: the whole pipeline on bundled samples, offline: ingest every sample source, hold
//! out a seeded share of the queries, mix the rest into tokenized shards, train a small encoder,
//! and evaluate retrieval on the held-out queries before and after training.
//!
//! The samples are the ones embedded in the binary (see `crate::samples`: an invented world, each
//! fact stated by one record), written to `<out>/samples/`; `--fixtures DIR` runs on another
//! folder of the same layout instead (e.g. the real samples in ../shared/fixtures).
//!
//! Without `--model`, the encoder is a tiny BERT (2 layers, hidden 128) with a WordPiece vocab
//! trained on the training texts only, initialised from `--seed`; with `--model M` it fine-tunes M.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::Device;
use encoder::{EvalSet, Precision, RetrievalMetrics, SentenceEncoder};
use ingest::IngestOptions;
use mixer::{MixConfig, MixOptions, MixTokenizer};
use schemas::{part_files, AtomicFile, Manifest, NoProgress, PairReader, PairRecord, PairWriter};
use train::{RunOptions, TrainConfig};

use super::demo_mined;
use crate::compute::ComputeArgs;
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Folder of sample sources (`<source>/...`, the layout of shared/fixtures). Default: the
    /// samples embedded in this binary, written to `<out>/samples/`.
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Work folder (samples/, pairs/, train-pairs/, shards/, model-init/, run/,
    /// demo-summary.json). Replaced on each run.
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
    /// Seeds the held-out split, the mix, the initial weights and training.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of the distinct queries held out of training for the before/after evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub held_out: f64,
    /// Only these sources (comma-separated, e.g. `squad,amazon_qa`; default: every one found).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Compare training with and without mined hard negatives: the training part, as pairs, is
    /// also mined for one negative per row with the starting model (candidates: that dataset's
    /// training positives), and a second run trains on it for the same steps from the same
    /// model (`train-pairs-mined/`, `shards-mined/`, `run-mined/`).
    #[arg(long)]
    pub mine_negatives: bool,
    /// `--mine-negatives`: the mining's `--relative-margin` (candidates scoring above
    /// positive - |positive| x R are not negatives).
    #[arg(long, default_value_t = 0.05)]
    pub mine_relative_margin: f32,
    /// `--mine-negatives`: no margin at all (any candidate but the positives may be a negative;
    /// for a model from scratch, whose untrained scores are all alike).
    #[arg(long, conflicts_with = "mine_relative_margin")]
    pub mine_no_margin: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// (source, inputs under the samples folder): the embedded samples and shared/fixtures use the
/// same paths; each source takes the first of its inputs that exists. A source that fails on its
/// sample is reported and skipped, so `--fixtures` runs on whatever samples a folder has.
const SOURCES: &[(&str, &[&str])] = &[
    ("squad", &["squad2"]),
    ("stackexchange", &["stackexchange"]),
    ("gooaq", &["gooaq"]),
    ("yahoo_answers", &["yahoo_answers"]),
    ("quora", &["quora/QQP.train.tsv"]),
    ("amazon_qa", &["amazon_qa/qa_Appliances.json.gz"]),
    ("searchqa", &["searchqa"]),
    ("triviaqa", &["triviaqa"]),
    ("wikianswers", &["wikianswers"]),
    ("msmarco", &["msmarco"]),
    ("natural_questions", &["natural_questions"]),
    (
        "eli5",
        &[
            "eli5/eli5-category-train.json",
            "eli5/eli5-category-test.json",
        ],
    ),
    ("paq", &["paq"]),
    ("jsonl", &["jsonl"]),
];

/// An ingested dataset: id, rows, columns.
pub(super) type Ingested = (String, u64, usize);

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&args.held_out) || args.held_out == 0.0 {
        bail!(
            "--held-out must be above 0 and below 1, got {}",
            args.held_out
        );
    }
    // Before anything is written: a missing GPU or a precision the device cannot run fails now.
    if args.mine_negatives && args.batch_size < 2 {
        bail!("--mine-negatives needs --batch-size of at least 2");
    }
    let device = args.compute.open()?;
    let on = (&device, args.compute.precision);
    let out = &args.out;
    clear_out(out)?;
    let fixtures = samples_folder(&args)?;
    let pairs = out.join("pairs");
    println!("== 1/6 ingest samples from {}", fixtures.display());
    let datasets = ingest_all(&fixtures, &pairs, &args.sources)?;

    let train_pairs = out.join("train-pairs");
    let (held_out, in_training) = split(&pairs, &datasets, &train_pairs, &args)?;
    let mut train_sets: Vec<Ingested> = in_training.iter().map(|(d, _)| d.clone()).collect();

    println!("== 3/6 model");
    let model_dir = prepare_model(&args, &train_pairs, &train_sets)?;
    let mined = match args.mine_negatives {
        true => {
            let m = demo_mined::prepare(&args, &model_dir, &train_pairs, &train_sets, on)?;
            // The run without negatives trains on the same rows as the run with them.
            train_sets = m.pair_sets.clone();
            Some(m)
        }
        false => None,
    };

    println!("== 4/6 mix {} batches of {}", args.steps, args.batch_size);
    let shards = out.join("shards");
    let mixed = mix(&args, &model_dir, &train_pairs, &train_sets, &shards)?;

    println!("== 5/6 eval before training");
    let sets = EvalSets::new(&held_out, &in_training);
    let before = sets.evaluate(&model_dir, on)?;
    print_metrics("held-out", &before.held_out);

    println!("== 6/6 train {} steps", args.steps);
    let summary = train_model(&args, &shards, &model_dir, on, "")?;
    let ck = summary
        .last_checkpoint
        .clone()
        .context("training wrote no checkpoint")?;
    let after = sets.evaluate(&ck, on)?;
    let loss = loss_ends(&summary);
    let mined = match mined {
        Some(m) => Some(demo_mined::train_and_evaluate(
            &args, m, &model_dir, &sets, on,
        )?),
        None => None,
    };
    print_results(&sets, &before, &after, loss);
    if let Some(m) = &mined {
        demo_mined::print_comparison(&before.held_out, &after.held_out, m);
    }

    let report = Report {
        args: &args,
        datasets: &datasets,
        mixed: &mixed,
        before: &before,
        after: &after,
        loss,
        model: &ck,
        seconds: started.elapsed().as_secs_f64(),
        mined: mined.as_ref().map(demo_mined::summary),
    };
    let summary_path = write_summary(&report)?;
    println!(
        "model: {} (a sentence-transformers folder); log: {}; summary: {}; total {:.0}s",
        ck.display(),
        out.join("train-log.jsonl").display(),
        summary_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The samples to ingest: `--fixtures`, else the embedded ones written to `<out>/samples/`.
fn samples_folder(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.fixtures {
        return Ok(d.clone());
    }
    let dir = args.out.join("samples");
    crate::samples::write_to(&dir)?;
    Ok(dir)
}

/// The two evaluation sets: the held-out queries, and as many in-training ones.
pub(super) struct EvalSets {
    held_out: EvalSet,
    in_training: EvalSet,
}

/// Retrieval metrics of one model on both [`EvalSets`].
pub(super) struct Scores {
    pub held_out: RetrievalMetrics,
    pub in_training: RetrievalMetrics,
}

impl EvalSets {
    fn new(held_out: &[PairRecord], in_training: &[(Ingested, Vec<PairRecord>)]) -> Self {
        let train_sample: Vec<PairRecord> = in_training
            .iter()
            .flat_map(|(_, rs)| rs.iter().cloned())
            .take(held_out.len())
            .collect();
        EvalSets {
            held_out: eval_set(held_out),
            in_training: eval_set(&train_sample),
        }
    }

    pub(super) fn evaluate(&self, model: &Path, on: On) -> Result<Scores> {
        Ok(Scores {
            held_out: evaluate(model, &self.held_out, on)?,
            in_training: evaluate(model, &self.in_training, on)?,
        })
    }
}

fn print_results(sets: &EvalSets, before: &Scores, after: &Scores, (first, last): (f64, f64)) {
    println!(
        "== held-out queries: {} queries never seen in training, {} candidates",
        sets.held_out.queries.len(),
        sets.held_out.candidates.len()
    );
    print_metrics("before", &before.held_out);
    print_metrics("after", &after.held_out);
    println!(
        "== in-training queries (memorisation, not generalisation): {} queries",
        sets.in_training.queries.len()
    );
    print_metrics("before", &before.in_training);
    print_metrics("after", &after.in_training);
    println!("   training loss {first:.3} (first 10 steps) -> {last:.3} (last 10)");
}

/// Everything `demo-summary.json` holds.
struct Report<'a> {
    args: &'a Args,
    datasets: &'a [Ingested],
    mixed: &'a [String],
    before: &'a Scores,
    after: &'a Scores,
    loss: (f64, f64),
    model: &'a Path,
    seconds: f64,
    /// `--mine-negatives`: the run with mined negatives.
    mined: Option<serde_json::Value>,
}

/// Writes `<out>/demo-summary.json`; returns its path.
fn write_summary(r: &Report) -> Result<PathBuf> {
    let args = r.args;
    let path = args.out.join("demo-summary.json");
    let report = serde_json::json!({
        "samples": args.fixtures.as_ref().map_or("embedded".to_owned(), |d| d.display().to_string()),
        "seed": args.seed,
        "device": args.compute.device.to_string(),
        "precision": args.compute.precision.to_string(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "held_out_fraction": args.held_out,
        "datasets": r.datasets.iter().map(|d| serde_json::json!({"id": d.0, "rows": d.1})).collect::<Vec<_>>(),
        "mixed": r.mixed,
        "held_out": {"before": r.before.held_out, "after": r.after.held_out},
        "in_training": {"before": r.before.in_training, "after": r.after.in_training},
        "loss": {"first_10": r.loss.0, "last_10": r.loss.1},
        "model": r.model.display().to_string(),
        "seconds": r.seconds,
        "sources": args.sources,
        "mined": r.mined,
    });
    AtomicFile::write_json(&path, &report)?;
    Ok(path)
}

/// Empties the work folder, refusing one that holds anything but an earlier demo's outputs.
fn clear_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let ours = [
        "samples",
        "pairs",
        "train-pairs",
        "shards",
        "model-init",
        "run",
        "data_config.json",
        "train-log.jsonl",
        "demo-summary.json",
        "train-pairs-mined",
        "shards-mined",
        "run-mined",
        "train-log-mined.jsonl",
    ];
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !ours.contains(&name.as_ref()) && !name.starts_with('.') {
            bail!(
                "{} holds {name}, which the demo did not write: pass another --out",
                out.display()
            );
        }
    }
    std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))
}

fn ingest_all(fixtures: &Path, pairs: &Path, only: &[String]) -> Result<Vec<Ingested>> {
    if let Some(unknown) = only.iter().find(|s| !SOURCES.iter().any(|(n, _)| n == s)) {
        let known: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        bail!(
            "--sources: no source {unknown} (known: {})",
            known.join(", ")
        );
    }
    let mut datasets: Vec<Ingested> = Vec::new();
    let chosen = SOURCES
        .iter()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n));
    for (source, inputs) in chosen {
        let Some(path) = inputs.iter().map(|i| fixtures.join(i)).find(|p| p.exists()) else {
            continue;
        };
        let opts = IngestOptions {
            threads: 1,
            max_errors: 1000,
            ..IngestOptions::default()
        };
        match ingest::run(
            source,
            std::slice::from_ref(&path),
            pairs,
            &opts,
            &NoProgress,
        ) {
            Ok(report) => {
                for m in report.manifests.iter().filter(|m| m.rows > 0) {
                    println!("   {source:<17} -> {:<28} {:>6} rows", m.dataset, m.rows);
                    datasets.push((m.dataset.clone(), m.rows, m.columns.columns()));
                }
            }
            Err(e) => eprintln!("   {source:<17} skipped: {e}"),
        }
    }
    if datasets.is_empty() {
        bail!("no sample ingested from {}", fixtures.display());
    }
    Ok(datasets)
}

/// Writes `records` as dataset `dir` under `manifest` (the dataset's own), counting the rows of
/// `rows_before` not written as `reason`.
pub(super) fn write_records(
    dir: &Path,
    mut manifest: Manifest,
    arity: schemas::Arity,
    records: &[PairRecord],
    reason: &str,
    rows_before: u64,
) -> Result<Manifest> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    let mut w = PairWriter::new(dir, arity, Default::default());
    for r in records {
        w.push(r)?;
    }
    manifest.columns = arity;
    manifest.files = w.finish()?;
    manifest.rows = records.len() as u64;
    *manifest.skipped.entry(reason.into()).or_default() += rows_before - manifest.rows;
    manifest.write(dir)?;
    Ok(manifest)
}

pub(super) fn read_records(dir: &Path) -> Result<Vec<PairRecord>> {
    Ok(schemas::DatasetReader::open(dir)?.read_all()?)
}

/// Holds out a seeded share of the queries ([`crate::holdout`]) and writes the rest as training
/// datasets under `train_pairs` (same ids, manifests counting the records held out). Returns the
/// held-out records and, per training dataset, its records.
#[allow(clippy::type_complexity)]
fn split(
    pairs: &Path,
    datasets: &[Ingested],
    train_pairs: &Path,
    args: &Args,
) -> Result<(Vec<PairRecord>, Vec<(Ingested, Vec<PairRecord>)>)> {
    let mut all = Vec::new();
    for (id, _, _) in datasets {
        all.push((id.clone(), read_records(&pairs.join(id))?));
    }
    let split = crate::holdout::split(all, args.held_out, args.seed);
    let queries: std::collections::HashSet<&str> =
        split.held_out.iter().map(|r| r.anchor.as_str()).collect();
    println!(
        "== 2/6 hold out {} of the queries (seed {}): {} queries, {} records; {} more records \
         left out of training for sharing a held-out text",
        args.held_out,
        args.seed,
        queries.len(),
        split.held_out.len(),
        split.dropped
    );
    let mut in_training = Vec::new();
    for ((id, rows, _), (_, records)) in datasets.iter().zip(split.train) {
        if records.is_empty() {
            continue;
        }
        let manifest = Manifest::read(&pairs.join(id))?;
        let (records, arity) = match args.mine_negatives {
            true => super::demo_mined::as_pairs(records),
            false => (records, manifest.columns),
        };
        let dir = train_pairs.join(id);
        let manifest = write_records(&dir, manifest, arity, &records, "held out (demo)", *rows)?;
        in_training.push(((id.clone(), manifest.rows, arity.columns()), records));
    }
    if in_training.is_empty() {
        bail!(
            "nothing left to train on after holding out {}",
            args.held_out
        );
    }
    Ok((split.held_out, in_training))
}

fn prepare_model(args: &Args, train_pairs: &Path, train_sets: &[Ingested]) -> Result<PathBuf> {
    if let Some(m) = &args.model {
        let dir = crate::model::resolve(m)?;
        println!("   fine-tuning {}", dir.display());
        return Ok(dir);
    }
    let dir = args.out.join("model-init");
    // The vocab sees the training texts only: no held-out text shapes anything the model
    // starts from, and names it never saw are split into pieces of names it did.
    let texts = sample_texts(train_pairs, train_sets)?;
    train::vocab::build_model_folder(&texts, 8000, &dir, |v| train::vocab::tiny_config(v, 128))
        .context("building the demo vocab")?;
    // Write the seeded initial weights so "before" is evaluated on exactly what training starts from.
    let cfg = encoder::BertConfig::from_file(&dir.join("config.json"))?;
    let mut model = train::Trainable::fresh(&cfg, args.seed, None, &Device::Cpu)?;
    model.source = Some(dir.clone());
    train::checkpoint::write_model_files(&dir, &model, 128)?;
    println!(
        "   tiny BERT (2 layers, hidden 128, {} params), WordPiece vocab of {} from {} training texts",
        model.vars.iter().map(|v| v.elem_count()).sum::<usize>(),
        cfg.vocab_size,
        texts.len()
    );
    Ok(dir)
}

/// Mixes the training datasets, weights proportional to rows. A dataset too small to fill a
/// batch with distinct texts is left out (the mixer says which) and the mix retried without it.
/// Returns the ids mixed.
pub(super) fn mix(
    args: &Args,
    model_dir: &Path,
    train_pairs: &Path,
    train_sets: &[Ingested],
    shards: &Path,
) -> Result<Vec<String>> {
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
    let mut in_mix: Vec<&Ingested> = train_sets
        .iter()
        .filter(|d| d.1 >= args.batch_size as u64)
        .collect();
    let report = loop {
        if in_mix.is_empty() {
            bail!(
                "no training dataset has enough rows for batches of {}; lower --batch-size",
                args.batch_size
            );
        }
        let entries: Vec<serde_json::Value> = in_mix
            .iter()
            .map(|(id, rows, _)| serde_json::json!({"name": id, "lines": rows, "weight": rows}))
            .collect();
        let config_path = args.out.join("data_config.json");
        let config_bytes = serde_json::to_vec_pretty(&entries)?;
        std::fs::write(&config_path, &config_bytes)?;
        let config = MixConfig::from_slice(&config_path, &config_bytes)?;
        match mixer::mix(
            &config,
            train_pairs,
            &tokenizer,
            shards,
            &mix_opts,
            &Bar::new(),
        ) {
            Ok(r) => break r,
            Err(mixer::MixError::Dataset { dataset, message }) if in_mix.len() > 1 => {
                println!("   leaving {dataset} out of the mix: {message}");
                in_mix.retain(|d| d.0 != dataset);
            }
            // The last one left cannot fill a batch either: say what to change.
            Err(mixer::MixError::Dataset { dataset, message }) => bail!(
                "mixing: every training dataset was left out (the last, {dataset}: {message}); \
                 a batch needs distinct texts in every column (with --mine-negatives each row's \
                 negative is another row's positive), so the bundled samples need a smaller \
                 --batch-size than {} (e.g. 8)",
                args.batch_size
            ),
            Err(e) => return Err(e).context("mixing"),
        }
    };
    let mixed: Vec<String> = in_mix.iter().map(|d| d.0.clone()).collect();
    println!("   mixed {}", mixed.join(", "));
    println!(
        "   {} batches, {} rows, {} shards",
        report.index.total_batches(),
        report.rows_written,
        report.index.shards.len()
    );
    Ok(mixed)
}

/// What the demo trains with: upstream's recipe (`TrainConfig::default`) at the demo's steps,
/// seed and learning rate, a 10% warmup and 128-token sequences.
fn train_config(args: &Args) -> TrainConfig {
    let from_scratch = args.model.is_none();
    TrainConfig {
        lr: args.lr.unwrap_or(if from_scratch { 1e-3 } else { 2e-5 }),
        warmup: (args.steps / 10).max(1),
        seed: args.seed,
        steps: args.steps,
        max_seq_length: 128,
        ..TrainConfig::default()
    }
}

/// Where the demo trains and evaluates: the opened device and the precision.
pub(super) type On<'a> = (&'a Device, Precision);

/// Trains on `shards` from `model_dir` into `<out>/run<tag>`, logging to
/// `<out>/train-log<tag>.jsonl`.
pub(super) fn train_model(
    args: &Args,
    shards: &Path,
    model_dir: &Path,
    (device, precision): On,
    tag: &str,
) -> Result<train::TrainSummary> {
    let mut opts = RunOptions::new(args.out.join(format!("run{tag}")));
    opts.device = device.clone();
    opts.precision = precision;
    opts.log = Some(args.out.join(format!("train-log{tag}.jsonl")));
    let summary = train::train(shards, model_dir, &train_config(args), &opts, &Bar::new())
        .with_context(|| format!("training on {}", shards.display()))?;
    eprintln!(
        "trained {} steps in {:.1}s, {:.3} s/step",
        summary.records.len(),
        summary.seconds,
        summary.seconds / summary.records.len().max(1) as f64
    );
    Ok(summary)
}

/// Mean loss of the first and of the last ten steps.
pub(super) fn loss_ends(summary: &train::TrainSummary) -> (f64, f64) {
    let r = &summary.records;
    let n = r.len();
    let mean =
        |s: &[train::StepRecord]| s.iter().map(|r| r.loss).sum::<f64>() / s.len().max(1) as f64;
    (mean(&r[..n.min(10)]), mean(&r[n.saturating_sub(10)..]))
}

fn eval_set(records: &[PairRecord]) -> EvalSet {
    EvalSet::from_records(
        records
            .iter()
            .map(|r| (r.anchor.clone(), r.positive.clone(), r.negative.clone())),
    )
}

pub(super) fn print_metrics(label: &str, m: &RetrievalMetrics) {
    println!(
        "   {label:<8} MRR@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}  nDCG@10 {:.4}",
        m.mrr_at_10, m.recall_at_1, m.recall_at_10, m.ndcg_at_10
    );
}

fn evaluate(model: &Path, set: &EvalSet, (device, precision): On) -> Result<RetrievalMetrics> {
    let mut enc = SentenceEncoder::load(model, device)
        .with_context(|| format!("loading {}", model.display()))?;
    enc.set_precision(precision)?;
    set.evaluate(|texts| enc.encode(texts, 64))
        .context("evaluating")
}

/// Every text of the ingested samples (for the WordPiece vocab), in a fixed order.
fn sample_texts(pairs: &Path, datasets: &[Ingested]) -> Result<Vec<String>> {
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
