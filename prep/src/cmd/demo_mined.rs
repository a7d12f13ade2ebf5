//! `prep demo --mine-negatives`: the quality comparison of issue 10. The demo's training part
//! (pairs only: any negatives the sources had are stripped, so both runs see the same rows) is
//! mined for one hard negative per row with the model training starts from, on the training
//! texts only (candidates: that dataset's training positives, never a held-out text). Rows that
//! get no negative leave both sets, so the two runs see the same rows and differ only in the
//! negative column. Both sets are mixed and trained for the same steps from the same model; the
//! held-out queries are evaluated after each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use encoder::{RetrievalMetrics, SentenceEncoder};
use mine::io::{write_dataset, Provenance};
use mine::{EmbedOptions, Embedder, Mode, NegativeOptions, SearchOptions};
use schemas::{Arity, PairRecord};

use super::demo::{print_metrics, read_records, Args, EvalSets, Ingested, On, Scores};
use crate::progress::Bar;

/// The mining options of the comparison: one negative, the best candidate that scores at least
/// `--mine-relative-margin` (default 5%) below the positive, so that near-duplicates of the
/// positive, often unlabelled positives, are not taught as negatives.
pub fn negative_options(args: &Args) -> NegativeOptions {
    NegativeOptions {
        relative_margin: (!args.mine_no_margin).then_some(args.mine_relative_margin),
        num_negatives: 1,
        seed: args.seed,
        ..NegativeOptions::default()
    }
}

/// What mining the training part did, for the summary.
#[derive(Debug, Default, serde::Serialize)]
pub struct MinedStats {
    /// Per dataset: training rows in, rows with a mined negative out.
    pub datasets: BTreeMap<String, (u64, u64)>,
    pub options: serde_json::Value,
    pub seconds: f64,
}

/// The training records as pairs (negatives stripped), so "without negatives" means exactly that.
pub fn as_pairs(records: impl IntoIterator<Item = PairRecord>) -> (Vec<PairRecord>, Arity) {
    let pairs = records
        .into_iter()
        .map(|r| PairRecord {
            negative: None,
            extra_negatives: Vec::new(),
            ..r
        })
        .collect();
    (pairs, Arity::Pair)
}

/// Mines one negative per row of every training dataset into `<out>/train-pairs-mined/<id>`.
/// and rewrites `train-pairs/<id>` with the same rows as pairs (rows that got no negative leave
/// both). A dataset where no row keeps a negative is left out (and named). Returns the mined
/// datasets.
pub fn mine_all(
    args: &Args,
    model_dir: &Path,
    train_pairs: &Path,
    train_sets: &[Ingested],
    (device, precision): On,
) -> Result<(PathBuf, Vec<Ingested>, MinedStats)> {
    let started = std::time::Instant::now();
    let mut enc = SentenceEncoder::load(model_dir, device)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    enc.set_precision(precision)?;
    let embedder = Embedder::new(&enc, EmbedOptions { batch_size: 64 });
    let mode = Mode::Negatives(negative_options(args));
    let prov = Provenance {
        inputs: Vec::new(),
        options: BTreeMap::from([
            ("mode".to_owned(), serde_json::to_value(&mode)?),
            ("model".to_owned(), model_dir.display().to_string().into()),
        ]),
    };
    let dir = args.out.join("train-pairs-mined");
    let mut mined = Vec::new();
    let mut stats = MinedStats {
        options: serde_json::to_value(&mode)?,
        ..MinedStats::default()
    };
    for (id, rows, _) in train_sets {
        let records = read_records(&train_pairs.join(id))?;
        let curated = mine::curate(
            &embedder,
            &records,
            None,
            &mode,
            SearchOptions::default(),
            &Bar::new(),
        )
        .with_context(|| format!("mining {id}"))?;
        let kept = curated.len() as u64;
        stats.datasets.insert(id.clone(), (*rows, kept));
        if kept == 0 {
            println!("   {id:<28} no row kept a negative: left out");
            continue;
        }
        let manifest = write_dataset(&dir.join(id), &curated, &records, &prov)
            .with_context(|| format!("writing the mined {id}"))?;
        // The pairs run trains on the same rows: those that got a negative, without it.
        let (pairs, arity) = as_pairs(curated.records(&records)?);
        let pairs_dir = train_pairs.join(id);
        let m = schemas::Manifest::read(&pairs_dir)?;
        let reason = "no mined negative (demo)";
        super::demo::write_records(&pairs_dir, m, arity, &pairs, reason, *rows)?;
        println!(
            "   {id:<28} {rows:>6} rows -> {:>6} with a mined negative",
            manifest.rows
        );
        mined.push((id.clone(), manifest.rows, manifest.columns.columns()));
    }
    anyhow::ensure!(!mined.is_empty(), "mining kept no training row");
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((dir, mined, stats))
}

/// The mined training data, mixed.
pub struct Prepared {
    /// The datasets mixed.
    pub mixed: Vec<String>,
    /// The same datasets as pairs (the rows that got a negative, without it), for the other run.
    pub pair_sets: Vec<Ingested>,
    stats: MinedStats,
    shards: PathBuf,
}

/// Mines the training part and mixes it into `<out>/shards-mined`.
pub fn prepare(
    args: &Args,
    model_dir: &Path,
    train_pairs: &Path,
    train_sets: &[Ingested],
    on: On,
) -> Result<Prepared> {
    println!("== 3b mine one hard negative per training row with the starting model");
    let (dir, mined_sets, stats) = mine_all(args, model_dir, train_pairs, train_sets, on)?;
    println!("   mix the mined datasets");
    let shards = args.out.join("shards-mined");
    let mixed = super::demo::mix(args, model_dir, &dir, &mined_sets, &shards)?;
    let pair_sets = mined_sets
        .into_iter()
        .filter(|d| mixed.contains(&d.0))
        .map(|(id, rows, _)| (id, rows, 2))
        .collect();
    Ok(Prepared {
        mixed,
        pair_sets,
        stats,
        shards,
    })
}

/// The run with mined negatives, evaluated.
pub struct MinedRun {
    prepared: Prepared,
    after: Scores,
    loss: (f64, f64),
    steps: usize,
    model: PathBuf,
}

/// Trains from `model_dir` on the mined shards into `<out>/run-mined` and evaluates.
pub fn train_and_evaluate(
    args: &Args,
    prepared: Prepared,
    model_dir: &Path,
    sets: &EvalSets,
    on: On,
) -> Result<MinedRun> {
    println!("== 6b/6 train {} steps with mined negatives", args.steps);
    let summary = super::demo::train_model(args, &prepared.shards, model_dir, on, "-mined")?;
    let model = summary
        .last_checkpoint
        .clone()
        .context("training with mined negatives wrote no checkpoint")?;
    let after = sets.evaluate(&model, on)?;
    Ok(MinedRun {
        prepared,
        after,
        loss: super::demo::loss_ends(&summary),
        steps: summary.records.len(),
        model,
    })
}

pub fn print_comparison(before: &RetrievalMetrics, without: &RetrievalMetrics, m: &MinedRun) {
    println!("== held-out queries, same steps, with and without mined negatives");
    print_metrics("base", before);
    print_metrics("pairs", without);
    print_metrics("mined", &m.after.held_out);
    println!(
        "   training loss with mined negatives {:.3} (first 10 steps) -> {:.3} (last 10)",
        m.loss.0, m.loss.1
    );
}

/// The `mined` entry of demo-summary.json.
pub fn summary(m: &MinedRun) -> serde_json::Value {
    serde_json::json!({
        "mining": m.prepared.stats,
        "mixed": m.prepared.mixed,
        "steps_trained": m.steps,
        "held_out": {"after": m.after.held_out},
        "in_training": {"after": m.after.in_training},
        "loss": {"first_10": m.loss.0, "last_10": m.loss.1},
        "model": m.model.display().to_string(),
    })
}
