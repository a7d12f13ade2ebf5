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
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
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
    let encoder = load_encoder(&args.model, args.max_seq_length, &args.compute)?;
    let pairs = super::storage::local_input(&args.pairs)?;
    let set = load_eval_set(&pairs, args.limit)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Arity, PairRecord, PairWriter};

    #[test]
    fn eval_set_from_a_pairs_folder_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PairWriter::new(dir.path(), Arity::Triplet, Default::default());
        for (a, p, n) in [
            (
                "What is the capital of Australia?",
                "Canberra is the capital city of Australia.",
                "Sydney has a famous opera house.",
            ),
            (
                "How do I bake sourdough bread?",
                "Feed the starter, mix flour and water, fold, proof and bake.",
                "Bread mould is a fungus.",
            ),
            (
                "Is ibuprofen safe with acetaminophen?",
                "Ibuprofen and acetaminophen can usually be taken together.",
                "Aspirin was first made in 1897.",
            ),
        ] {
            w.push(&PairRecord::triplet(a, p, n)).unwrap();
        }
        w.finish().unwrap();
        let set = load_eval_set(dir.path(), Some(2)).unwrap();
        assert_eq!(set.queries.len(), 2);
        assert_eq!(
            set.candidates.len(),
            4,
            "positives and negatives of the first two"
        );
        let set = load_eval_set(dir.path(), None).unwrap();
        assert_eq!(set.candidates.len(), 6);

        let Some(model) = testdata::test_model_dir() else {
            return;
        };
        let enc = load_encoder(model.to_str().unwrap(), None, &Default::default()).unwrap();
        let m = set.evaluate(|t| enc.encode(t, 8)).unwrap();
        assert_eq!(m.queries, 3);
        assert_eq!(
            m.recall_at_1, 1.0,
            "the real model finds each obvious answer first: {m:?}"
        );
        assert_eq!(m.mrr_at_10, 1.0);
    }
}
