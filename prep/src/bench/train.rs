//! `prep bench train`: seconds per training step (forward + backward + clip + AdamW) on a batch
//! of 32 pairs at max length 128 with all-MiniLM-L6-v2, peak RSS, and the loader's batches/s on
//! shards of the same shape beside it (the loader must never be the bottleneck).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::{Device, Tensor};
use encoder::tokenizers::{Tokenizer, TruncationParams};
use loader::{Column, Loader, LoaderOptions, LoaderState};
use train::{loss_and_grads, AdamW, AdamWConfig, Columns, LossConfig, Trainable};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: the all-MiniLM-L6-v2 test model, $PREP_TEST_MODEL or
    /// ~/.cache/prep/test-models/all-MiniLM-L6-v2).
    #[arg(long)]
    pub model: Option<String>,
    /// Text lines to build the batch from (default: the shared bench corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// GradCache chunk size (default: the whole batch in one graph).
    #[arg(long)]
    pub mini_batch_size: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batches in the loader measurement.
    #[arg(long, default_value_t = 200)]
    pub loader_batches: u64,
}

fn default_model() -> Result<PathBuf> {
    let dir = std::env::var_os("PREP_TEST_MODEL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/prep/test-models/all-MiniLM-L6-v2"))
        });
    match dir {
        Some(d) if d.join("model.safetensors").is_file() => Ok(d),
        _ => bail!(
            "no --model given and the test model is missing (run scripts/fetch-test-model.sh)"
        ),
    }
}

fn default_corpus() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("PREP_SHARED").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")),
    ];
    for c in candidates.into_iter().flatten() {
        let p = c.join("bench/corpus.txt");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("no --corpus given and shared/bench/corpus.txt is missing (set PREP_SHARED)")
}

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let model_dir = match &args.model {
        Some(m) => crate::model::resolve(m)?,
        None => default_model()?,
    };
    let corpus = match &args.corpus {
        Some(c) => c.clone(),
        None => default_corpus()?,
    };
    let text = std::fs::read_to_string(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let b = args.batch_size;
    if lines.len() < 2 * b {
        bail!("{}: needs at least {} lines", corpus.display(), 2 * b);
    }

    let mut tok = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_dir.join("tokenizer.json").display()))?;
    tok.with_truncation(Some(TruncationParams {
        max_length: args.max_length,
        ..Default::default()
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tok.with_padding(None);
    let encode = |texts: &[&str]| -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                Ok(tok
                    .encode(*t, true)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .get_ids()
                    .to_vec())
            })
            .collect()
    };
    // Anchors: lines 0..B; positives: the next B lines (bench corpus lines are paragraphs, so
    // both columns fill the 128 tokens, the worst case for the step).
    let anchors = encode(&lines[..b])?;
    let positives = encode(&lines[b..2 * b])?;
    let column = |rows: &[Vec<u32>]| -> Result<Column> {
        let (ids, mask, t) = loader::pad(rows, 0);
        Ok(Column {
            ids: Tensor::from_vec(ids, (rows.len(), t), &Device::Cpu)?,
            mask: Tensor::from_vec(mask, (rows.len(), t), &Device::Cpu)?,
        })
    };
    let (a, p) = (column(&anchors)?, column(&positives)?);
    let tokens: usize = anchors.iter().chain(&positives).map(Vec::len).sum();
    let (ta, tp) = (a.ids.dims()[1], p.ids.dims()[1]);

    // Upstream's training mode: dropout 0.1 on.
    let model = Trainable::from_pretrained(&model_dir, None, &Device::Cpu)?;
    let mut opt = AdamW::new(&model.vars, AdamWConfig::default())?;
    let mut rng = encoder::DropoutRng::new(1);
    let cols = Columns {
        anchor: &a,
        positive: &p,
        negative: None,
    };
    let mut step = || -> Result<f64> {
        let mut out = loss_and_grads(
            &model,
            &cols,
            LossConfig::default(),
            args.mini_batch_size,
            Some(&mut rng),
        )?;
        train::optim::clip_grad_norm(&mut out.grads, 1.0)?;
        opt.step(&model.vars, &out.grads, 2e-5)?;
        Ok(out.loss)
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    eprintln!(
        "model {}, batch {b} pairs, padded lengths {ta}/{tp} ({tokens} real tokens), {threads} threads, dropout {}",
        model_dir.display(),
        model.dropout
    );
    step()?; // warm-up: allocator and thread pools
    let mut times = Vec::new();
    let cpu0 = crate::bench::cpu_seconds();
    for _ in 0..args.steps {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    // CPU seconds (user + system, all threads) per step: steadier than wall time on a shared
    // machine, and what a quiet machine would need at most.
    let cpu_per_step = match (cpu0, crate::bench::cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / times.len().max(1) as f64),
        _ => "?".to_owned(),
    };
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let rss = crate::bench::peak_rss_mib();

    // Loader: shards of the same shape (B pairs of 128 tokens per batch), read with checksum
    // verification, padding and tensor building, as the trainer consumes them.
    let tmp = tempfile::tempdir()?;
    write_bench_shards(tmp.path(), &anchors, &positives, args.loader_batches)?;
    let t0 = Instant::now();
    let mut n = 0u64;
    for batch in Loader::open(
        tmp.path(),
        LoaderState::default(),
        &LoaderOptions::default(),
    )? {
        batch?;
        n += 1;
    }
    let loader_rate = n as f64 / t0.elapsed().as_secs_f64();

    println!(
        "train step (fwd+bwd+clip+AdamW, batch {b} pairs, max len {}): {mean:.3} s/step (min {min:.3}) over {} steps, {cpu_per_step} CPU s/step, {:.0} tokens/s, peak RSS {rss}",
        args.max_length,
        times.len(),
        tokens as f64 / mean
    );
    println!(
        "loader: {loader_rate:.0} batches/s ({:.0}x the trainer's {:.2} steps/s)",
        loader_rate * mean,
        1.0 / mean
    );
    Ok(())
}

fn write_bench_shards(
    dir: &Path,
    anchors: &[Vec<u32>],
    positives: &[Vec<u32>],
    batches: u64,
) -> Result<()> {
    let b = anchors.len();
    let options = schemas::ShardWriterOptions {
        batch_size: b,
        keep_text: false,
    };
    let per_shard = 50u64;
    let mut shards = Vec::new();
    let mut first = 0u64;
    while first < batches {
        let count = per_shard.min(batches - first);
        let file = schemas::shards::shard_file_name(shards.len());
        let mut w = schemas::ShardWriter::create(dir.join(&file), options)?;
        for i in first..first + count {
            let rows: Vec<schemas::ShardRow> = anchors
                .iter()
                .zip(positives)
                .map(|(a, p)| schemas::ShardRow {
                    batch: i,
                    dataset: "bench".to_owned(),
                    anchor_ids: a.clone(),
                    positive_ids: p.clone(),
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows)?;
        }
        shards.push(w.finish()?);
        first += count;
    }
    schemas::ShardIndex::hand_made(b as u64, 0, shards, 0).write(dir)?;
    Ok(())
}
