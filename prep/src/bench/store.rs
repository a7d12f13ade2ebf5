//! `prep bench store`: the loader reading shards from an object store (e.g. a local S3
//! emulator) against the same shards on local disk, cold cache and warm, with peak RSS; and,
//! with a model, the trainer's seconds per step on each, in the same run.
//!
//! The shards are generated (ids of the shape the recipe trains on: 32..64-token anchors and
//! positives), published to `--url`, then read back through a fresh cache folder.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use loader::{Loader, LoaderOptions, LoaderState};

#[derive(clap::Args)]
pub struct Args {
    /// Where to publish the bench shards: an s3:// (gs://, az://) prefix; endpoint and
    /// credentials from the environment or --storage-option.
    #[arg(long)]
    pub url: String,
    /// Batches in the loader measurement.
    #[arg(long, default_value_t = 2000)]
    pub batches: u64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 100)]
    pub batches_per_shard: u64,
    /// Also time this many training steps on each (needs --model or the test model).
    #[arg(long, default_value_t = 0)]
    pub train_steps: u64,
    /// Model folder for the training measurement (default: the all-MiniLM-L6-v2 test model).
    #[arg(long)]
    pub model: Option<String>,
}

/// A shard set of `batches` batches of `batch_size` pairs, `per_shard` batches per shard:
/// deterministic token ids, 32..64 tokens per text, from a BERT-sized vocabulary.
pub(crate) fn write_generated_shards(
    dir: &Path,
    batches: u64,
    batch_size: usize,
    per_shard: u64,
) -> Result<()> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let text = |n: &mut dyn FnMut() -> u64| {
        let len = 32 + (n() % 32) as usize;
        let mut ids = vec![101u32];
        ids.extend((0..len - 2).map(|_| 1000 + (n() % 29000) as u32));
        ids.push(102);
        ids
    };
    let options = schemas::ShardWriterOptions {
        batch_size,
        keep_text: false,
    };
    let mut shards = Vec::new();
    let mut first = 0;
    while first < batches {
        let count = per_shard.min(batches - first);
        let file = schemas::shard_file_name(shards.len());
        let mut w = schemas::ShardWriter::create(dir.join(file), options)?;
        for batch in first..first + count {
            let rows: Vec<schemas::ShardRow> = (0..batch_size)
                .map(|_| schemas::ShardRow {
                    batch,
                    dataset: "bench".to_owned(),
                    anchor_ids: text(&mut next),
                    positive_ids: text(&mut next),
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows)?;
        }
        shards.push(w.finish()?);
        first += count;
    }
    schemas::ShardIndex::hand_made(batch_size as u64, 0, shards, 0).write(dir)?;
    Ok(())
}

/// Reads every batch of `dir` as the trainer would (sha256-verified, padded tensors): batches/s
/// and the phase's peak RSS.
fn read_all(dir: &Path) -> Result<(f64, String)> {
    crate::bench::reset_peak_rss();
    let t0 = Instant::now();
    let mut n = 0u64;
    for b in Loader::open(dir, LoaderState::default(), &LoaderOptions::default())? {
        b?;
        n += 1;
    }
    Ok((
        n as f64 / t0.elapsed().as_secs_f64(),
        crate::bench::peak_rss_mib(),
    ))
}

/// Seconds per step of `steps` training steps on the shards in `dir` (after the first).
/// Seconds per step and, of those, seconds waiting for the loader (mean, and the longest wait),
/// over the steps after the first (which also opens the model and warms the caches).
struct StepTimes {
    step: f64,
    data_mean: f64,
    data_max: f64,
}

fn step_times(dir: &Path, model: &Path, steps: u64, out: &Path) -> Result<StepTimes> {
    let config = train::TrainConfig {
        steps,
        warmup: 1,
        ..Default::default()
    };
    let run = train::RunOptions::new(out);
    let summary = train::train(dir, model, &config, &run, &schemas::NoProgress)?;
    let timed = &summary.records[1.min(summary.records.len())..];
    let n = timed.len().max(1) as f64;
    Ok(StepTimes {
        step: timed.iter().map(|r| r.seconds).sum::<f64>() / n,
        data_mean: timed.iter().map(|r| r.data_seconds).sum::<f64>() / n,
        data_max: timed.iter().map(|r| r.data_seconds).fold(0.0, f64::max),
    })
}

pub fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local)?;
    write_generated_shards(
        &local,
        args.batches,
        args.batch_size,
        args.batches_per_shard,
    )?;
    let Some(remote) = crate::cmd::storage::remote(Path::new(&args.url))? else {
        bail!("--url must be an object-store location (s3://, gs://, az://)");
    };
    let t0 = Instant::now();
    crate::cmd::storage::publish(&local, &remote)?;
    let bytes: u64 = std::fs::read_dir(&local)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{} batches of {} pairs, {:.1} MB, published in {:.2}s",
        args.batches,
        args.batch_size,
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    // A fresh cache, so the first remote read fetches every shard.
    let mut settings = store::settings();
    settings.cache_dir = tmp.path().join("cache");
    store::configure(settings);
    let mirror = store::Mirror::open(remote.url())?;
    let (disk, disk_rss) = read_all(&local)?;
    let (cold, cold_rss) = read_all(mirror.dir())?;
    let (warm, warm_rss) = read_all(mirror.dir())?;
    println!("{:<34} {:>12} {:>12}", "loader", "batches/s", "peak RSS");
    println!("{:<34} {disk:>12.0} {disk_rss:>12}", "local disk");
    println!(
        "{:<34} {cold:>12.0} {cold_rss:>12}",
        "store, cold cache (fetch+verify)"
    );
    println!(
        "{:<34} {warm:>12.0} {warm_rss:>12}",
        "store, warm cache (re-verify)"
    );
    if args.train_steps > 0 {
        let model = match &args.model {
            Some(m) => crate::model::resolve(m)?,
            None => crate::bench::default_test_model(),
        };
        let runs = tmp.path().join("runs");
        let steps = args.train_steps + 1;
        let on_disk = step_times(&local, &model, steps, &runs.join("disk"))
            .context("training on local shards")?;
        // A cold cache again: the run streams every shard it reads.
        std::fs::remove_dir_all(tmp.path().join("cache"))?;
        let mirror = store::Mirror::open(remote.url())?;
        let on_store = step_times(mirror.dir(), &model, steps, &runs.join("store"))
            .context("training on remote shards")?;
        println!(
            "train, batch {} (mean of {} steps after the first; shards of {} batches):",
            args.batch_size, args.train_steps, args.batches_per_shard
        );
        for (name, t) in [("local shards", &on_disk), ("remote shards", &on_store)] {
            println!(
                "  {name:<14} {:.3} s/step, of which waiting for data {:.3} ms mean, {:.3} ms max",
                t.step,
                t.data_mean * 1e3,
                t.data_max * 1e3
            );
        }
        println!(
            "  step time {:+.1}% on the store (machine noise included); peak RSS {}",
            100.0 * (on_store.step / on_disk.step - 1.0),
            crate::bench::peak_rss_mib()
        );
    }
    Ok(())
}
