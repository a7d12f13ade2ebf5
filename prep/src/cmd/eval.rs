//! `prep eval`: retrieval quality of a model on a pairs dataset. Each anchor searches all
//! positives (plus negatives in triplet datasets, candidates deduplicated by text) by dot
//! product; MRR@10, Recall@1/@10 and nDCG@10 are printed and optionally written as JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::EvalSet;
use schemas::{part_files, AtomicFile, PairReader};

use super::embed::load_encoder;
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder.
    #[arg(long)]
    pub model: String,
    /// A pairs dataset folder (part-*.parquet) or one Parquet file.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Use only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also write the metrics here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation length in tokens (default: the model's max_seq_length).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(super::embed::num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

/// The first `limit` records of a dataset as an [`EvalSet`].
pub fn load_eval_set(pairs: &std::path::Path, limit: Option<usize>) -> Result<EvalSet> {
    let files = part_files(pairs)?;
    if files.is_empty() {
        bail!("{}: no .parquet files", pairs.display());
    }
    let limit = limit.unwrap_or(usize::MAX);
    let mut records = Vec::new();
    'files: for f in &files {
        let reader = PairReader::open(f)?;
        for r in reader.records()? {
            if records.len() >= limit {
                break 'files;
            }
            let r = r?;
            records.push((r.anchor, r.positive, r.negative));
        }
    }
    Ok(EvalSet::from_records(records))
}

fn run_inner(args: &Args) -> Result<()> {
    let encoder = load_encoder(&args.model, args.max_seq_length)?;
    let set = load_eval_set(&args.pairs, args.limit)?;
    if set.queries.is_empty() {
        bail!("{}: no records", args.pairs.display());
    }
    let started = Instant::now();
    let bar = Bar::new();
    let metrics = set
        .evaluate(|texts| encoder.encode_with_progress(texts, args.batch_size, &bar))
        .context("embedding the evaluation texts")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} queries, {} candidates: MRR@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}  nDCG@10 {:.4}  ({:.1}s)",
        metrics.queries,
        metrics.candidates,
        metrics.mrr_at_10,
        metrics.recall_at_1,
        metrics.recall_at_10,
        metrics.ndcg_at_10,
        secs
    );
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "model": encoder.dir().display().to_string(),
            "pairs": args.pairs.display().to_string(),
            "limit": args.limit,
            "max_seq_length": encoder.max_seq_length(),
            "metrics": metrics,
            "seconds": secs,
        });
        AtomicFile::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
