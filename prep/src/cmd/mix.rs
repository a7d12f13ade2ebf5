//! `prep mix`: data_config.json weights over the ingested datasets into tokenized shards.
//!
//! Upstream normalized `*.jsonl(.gz)` files the config names are first ingested through
//! `ingest`'s `jsonl` source (the one reader of that format: its line rules, counted skips and
//! `--max-errors`) into `<out>/.sources/<id>/`, then mixed like any dataset. The mixer itself
//! reads only datasets; this wiring is the binary's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mixer::{MixConfig, MixOptions, MixReport, MixTokenizer, Mixing, ResolvedSource, SourceKind};

#[derive(clap::Args)]
pub struct Args {
    /// Mix config, upstream's format `[{"name", "lines", "weight"}]`; names are our dataset ids,
    /// upstream file names (`PAQ_pairs.jsonl.gz`, `stackexchange_title_body/<site>.jsonl.gz`) or
    /// normalized jsonl(.gz) files under --pairs.
    #[arg(long, default_value = "data_config.json")]
    pub config: PathBuf,
    /// Folder of ingested datasets (`<pairs>/<dataset>/part-*.parquet` + manifest.json).
    #[arg(long, default_value = "data/pairs")]
    pub pairs: PathBuf,
    /// A tokenizer.json, a model folder holding one, or a Hugging Face Hub id.
    #[arg(long)]
    pub tokenizer: String,
    /// Output folder: shard-NNNNN.parquet + index.json. Rerunning resumes (every listed shard's
    /// sha256 is checked; missing or damaged ones are made again). Locked for the run: a second
    /// mix into the same folder fails at once.
    #[arg(long, default_value = "data/shards")]
    pub out: PathBuf,
    /// Batches (training steps) to produce.
    #[arg(long)]
    pub steps: u64,
    /// Rows per batch (upstream: 1024 global).
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Max tokens of an anchor, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 64)]
    pub max_length_a: usize,
    /// Max tokens of a positive or negative, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 250)]
    pub max_length_b: usize,
    /// Datasets drawn per round (all with the same column count); no text repeats in a round.
    #[arg(long, default_value_t = 2)]
    pub datasets_per_batch: usize,
    /// Consecutive batches each draw fills (upstream: 4 at global batch 1024 on 8 devices).
    #[arg(long, default_value_t = 4)]
    pub batches_per_draw: usize,
    /// `random` (upstream: weighted draws) or `exact` (every prefix within one batch of each share).
    #[arg(long, default_value = "random")]
    pub mixing: Mixing,
    /// Also store the raw texts in the shards.
    #[arg(long)]
    pub keep_text: bool,
    /// Batches per shard file.
    #[arg(long, default_value_t = 64)]
    pub batches_per_shard: usize,
    /// Shuffle buffer per dataset, in rows (memory does not grow with dataset size).
    #[arg(long, default_value_t = 8192)]
    pub shuffle_buffer: usize,
    /// Tokenizer threads, and parsing threads for upstream jsonl files (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Malformed lines tolerated (each counted and reported) in each upstream normalized jsonl
    /// file the config names, before the run fails (as `prep ingest --max-errors`).
    #[arg(long, default_value_t = 1000)]
    pub max_errors: u64,
}

impl Args {
    pub fn options(&self) -> MixOptions {
        MixOptions {
            steps: self.steps,
            batch_size: self.batch_size,
            seed: self.seed,
            max_length_a: self.max_length_a,
            max_length_b: self.max_length_b,
            datasets_per_batch: self.datasets_per_batch,
            batches_per_draw: self.batches_per_draw,
            mixing: self.mixing,
            keep_text: self.keep_text,
            batches_per_shard: self.batches_per_shard,
            shuffle_buffer: self.shuffle_buffer,
        }
    }
}

/// A tokenizer.json or a folder as is; anything else is a model id for `crate::model::resolve`.
pub fn tokenizer_path(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_file() || p.is_dir() {
        return Ok(p.to_path_buf());
    }
    crate::model::resolve(spec)
}

/// Runs the mix with `args`, returning the report and the seconds it took.
pub fn run_mix(args: &Args) -> Result<(MixReport, f64)> {
    let config = MixConfig::read(&args.config)
        .with_context(|| format!("reading mix config {}", args.config.display()))?;
    let (pairs, out, remote_out) = local_folders(args)?;
    // Fail on missing datasets before spending time on the tokenizer.
    let sources = mixer::resolve(&config, &pairs)?;
    let tok_path = tokenizer_path(&args.tokenizer)?;
    let tokenizer = MixTokenizer::open(&tok_path, args.max_length_a, args.max_length_b)
        .with_context(|| format!("loading tokenizer {}", tok_path.display()))?;
    ingest_upstream_files(&sources, &out, args.max_errors, args.threads)?;
    let bar = crate::progress::Bar::new();
    let opts = args.options();
    let start = Instant::now();
    let go = || {
        mixer::mix(&config, &pairs, &tokenizer, &out, &opts, &bar)
            .with_context(|| format!("mixing into {}", args.out.display()))
    };
    let mix = || match args.threads {
        Some(t) => crate::bench::with_threads(t, go),
        None => go(),
    };
    let report = match &remote_out {
        Some(remote) => super::storage::ShardPublisher::new(&out, remote).around(mix)?,
        None => mix()?,
    };
    Ok((report, start.elapsed().as_secs_f64()))
}

/// The local pairs and output folders a mix works in, and the remote output if any. A remote
/// `--pairs` is pulled into the cache (each file checked by sha256); a remote `--out` is mixed
/// in a staging folder holding the remote set's current shards (pulled and checked), so a rerun
/// resumes there exactly as it does locally, and is published shard by shard as the mix goes.
fn local_folders(args: &Args) -> Result<(PathBuf, PathBuf, Option<store::Remote>)> {
    let remote_out = super::storage::remote_output(&args.out)?;
    let pairs = match super::storage::remote(&args.pairs)? {
        Some(r) => super::storage::pull_pairs(&r)?,
        None => args.pairs.clone(),
    };
    let out = match &remote_out {
        Some(r) => {
            let staging = super::storage::staging(r);
            store::pull_dir(r, &staging, schemas::SHARD_INDEX_FILE)
                .with_context(|| format!("reading the shards already at {}", r.url()))?;
            staging
        }
        None => args.out.clone(),
    };
    Ok((pairs, out, remote_out))
}

/// The upstream jsonl files among `sources` with no up-to-date ingest under `out`.
fn pending_upstream_files(
    sources: &[ResolvedSource],
    out: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut pending = Vec::new();
    for s in sources {
        if let SourceKind::Jsonl { file } = &s.kind {
            let dir = mixer::upstream::dataset_dir(out, &s.id);
            if mixer::upstream::converted(file, &dir)?.is_none() {
                pending.push((file.clone(), dir));
            }
        }
    }
    Ok(pending)
}

/// Ingests each upstream jsonl file `sources` name that has no up-to-date dataset under
/// `<out>/.sources/` yet, with `ingest`'s `jsonl` source. Holds `out`'s lock meanwhile, so no
/// ingest replaces a dataset that a running mix into `out` reads (`mixer::mix` takes the same
/// lock next, and a second run fails at once either way).
fn ingest_upstream_files(
    sources: &[ResolvedSource],
    out: &Path,
    max_errors: u64,
    threads: Option<usize>,
) -> Result<()> {
    if pending_upstream_files(sources, out)?.is_empty() {
        return Ok(());
    }
    let _lock = schemas::OutputLock::acquire(out)?;
    // Checked again under the lock: another run may have ingested them meanwhile.
    for (file, dir) in pending_upstream_files(sources, out)? {
        let name = dir.file_name().expect("a dataset folder").to_string_lossy();
        let mut record = mixer::upstream::conversion_options(&file)?;
        record.insert("source".to_owned(), serde_json::json!("jsonl"));
        record.insert("max_errors".to_owned(), serde_json::json!(max_errors));
        record.insert("dataset".to_owned(), serde_json::json!(name));
        let defaults = ingest::IngestOptions::default();
        let opts = ingest::IngestOptions {
            max_errors,
            threads: threads.unwrap_or(defaults.threads).max(1),
            dataset: Some(name.into_owned()),
            record,
            ..defaults
        };
        let parent = dir.parent().expect("inside .sources");
        println!(
            "ingesting {} (normalized jsonl) into {}",
            file.display(),
            dir.display()
        );
        let report = ingest::run(
            "jsonl",
            std::slice::from_ref(&file),
            parent,
            &opts,
            &crate::progress::Bar::new(),
        )
        .with_context(|| format!("ingesting {} before mixing", file.display()))?;
        print_ingest(&report);
    }
    Ok(())
}

/// What ingesting an upstream file gave: rows, skips by reason, the first malformed lines.
fn print_ingest(report: &ingest::IngestReport) {
    for m in &report.manifests {
        let skipped: Vec<_> = m.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "  {}: {} rows, {} cols, skipped {} ({})",
            m.dataset,
            m.rows,
            m.columns.columns(),
            m.skipped_total(),
            skipped.join(", ")
        );
    }
    if report.malformed > 0 {
        eprintln!("{} malformed lines skipped; first ones:", report.malformed);
    }
    for line in report.examples.iter() {
        eprintln!("  {line}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}

pub fn run(args: Args) -> Result<()> {
    let (report, secs) = run_mix(&args)?;
    if !report.shards_remade.is_empty() {
        println!(
            "{} listed shard(s) were missing or did not match their sha256 and were made again: {}",
            report.shards_remade.len(),
            report.shards_remade.join(", ")
        );
    }
    if report.restarted {
        println!("options or inputs changed since the last run: restarted from batch 0");
    } else if report.resumed_at_batch > 0 {
        println!("resumed at batch {}", report.resumed_at_batch);
    }
    let idx = &report.index;
    println!(
        "{}: {} shards, {} batches of {} ({} written now in {:.1}s: {:.0} pairs/s, {:.0} tokens/s; {:.1}% of texts truncated)",
        args.out.display(),
        idx.shards.len(),
        idx.total_batches(),
        idx.batch_size,
        report.batches_written,
        secs,
        report.rows_written as f64 / secs.max(1e-9),
        report.tokens_written as f64 / secs.max(1e-9),
        100.0 * report.texts_truncated as f64 / report.texts_written.max(1) as f64,
    );
    for (id, d) in &idx.datasets {
        println!(
            "  {id:<28} weight {:>5}  batches {:>8}  share {:.4} (want {:.4})  epochs {:.3}",
            d.weight, d.batches, d.realised_share, d.share, d.epochs
        );
    }
    Ok(())
}
