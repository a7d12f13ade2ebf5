//! `prep bench train`: seconds per training step (forward + backward + clip + AdamW) on a batch
//! of 32 pairs at max length 128 with all-MiniLM-L6-v2, peak RSS, and the loader's batches/s on
//! shards of the same shape beside it (the loader must never be the bottleneck).
//!
//! `--device cuda --precision bf16 --batch-size 1024 --max-length 64 --max-length-positive 250`
//! is the recipe's step on a GPU (scripts/gpu-check.sh runs it beside PyTorch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::{Device, Tensor};
use encoder::tokenizers::{Tokenizer, TruncationParams};
use loader::{Column, Loader, LoaderOptions, LoaderState};
use serde_json::json;
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
    /// Truncation of the anchors (and of the positives without --max-length-positive).
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Truncation of the positives (the recipe: 64 for questions, 250 for answers).
    #[arg(long)]
    pub max_length_positive: Option<usize>,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// GradCache chunk size (default: the whole batch in one graph).
    #[arg(long)]
    pub mini_batch_size: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batches in the loader measurement (0: skip it).
    #[arg(long, default_value_t = 200)]
    pub loader_batches: u64,
    /// Data-parallel comparison (needs a build with `--features mpi` and Open MPI's mpirun):
    /// W ranks started by `mpirun -np W`, each with --threads threads (default 1) and B/W rows
    /// of the batch, against one process with W × --threads threads on the whole batch, in one
    /// run: seconds per step, time in collectives, bytes exchanged per step, peak RSS.
    #[arg(long, default_value_t = 1)]
    pub world_size: usize,
    /// The MPI launcher for --world-size.
    #[arg(long, default_value = "mpirun")]
    pub mpirun: String,
    /// Internal: this process is one rank of the --world-size comparison (started by mpirun).
    #[arg(long, hide = true)]
    pub rank_worker: bool,
    /// Also write the figures here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A Python with sentence-transformers: also time the same step in PyTorch (same batch,
    /// lengths, loss, clipping and AdamW, dropout on) on the same threads, in a child process.
    #[arg(long, value_name = "PY")]
    pub peer_python: Option<PathBuf>,
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
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

/// The benchmark's batch: token rows of both columns and their padded tensors.
struct BenchBatch {
    anchors: Vec<Vec<u32>>,
    positives: Vec<Vec<u32>>,
    a: Column,
    p: Column,
}

impl BenchBatch {
    /// Real (unpadded) tokens of both columns.
    fn tokens(&self) -> usize {
        self.anchors
            .iter()
            .chain(&self.positives)
            .map(Vec::len)
            .sum()
    }

    /// The matrix products' floating-point operations in one training step: per sequence of L
    /// tokens and per layer, 2·L·(4H² + 2HI) in the Linears and 4·L²·H in attention forward,
    /// twice that backward. Padding is not counted (the CPU's step computes none).
    fn step_flop(&self, cfg: &encoder::BertConfig) -> f64 {
        let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
        let forward: f64 = self
            .anchors
            .iter()
            .chain(&self.positives)
            .map(|row| {
                let l = row.len() as f64;
                2.0 * l * (4.0 * h * h + 2.0 * h * i) + 4.0 * l * l * h
            })
            .sum();
        3.0 * forward * cfg.num_hidden_layers as f64
    }

    /// Tokens the step computes on (padded to each column's longest row).
    fn padded_tokens(&self) -> usize {
        self.a.ids.elem_count() + self.p.ids.elem_count()
    }
}

/// The prepared batch padded into tensors on `device`.
fn bench_batch(prepared: &Prepared, device: &Device) -> Result<BenchBatch> {
    let n = prepared.anchors.len();
    let (a, p) = prepared.columns_on(0..n, device)?;
    Ok(BenchBatch {
        anchors: prepared.anchors.clone(),
        positives: prepared.positives.clone(),
        a,
        p,
    })
}

/// One step as `prep train` takes it alone: loss and gradients in one graph (or GradCache
/// chunks of `mini_batch_size`), clipping at 1.0, AdamW at lr 2e-5; returns the loss.
fn train_step(
    model: &Trainable,
    cols: &Columns,
    mini_batch_size: Option<usize>,
    rng: &mut encoder::DropoutRng,
    opt: &mut AdamW,
) -> Result<f64> {
    let mut out = loss_and_grads(
        model,
        cols,
        LossConfig::default(),
        mini_batch_size,
        Some(rng),
    )?;
    train::optim::clip_grad_norm(&mut out.grads, 1.0)?;
    opt.step(&model.vars, &out.grads, 2e-5)?;
    Ok(out.loss)
}

/// Seconds of each timed step (after one untimed warm-up), the device drained after each so
/// a GPU's queued work is inside the step that queued it.
fn time_steps_on_device(args: &Args, model: &Trainable, batch: &BenchBatch) -> Result<Vec<f64>> {
    let mut opt = AdamW::new(&model.vars, AdamWConfig::default())?;
    let mut rng = encoder::DropoutRng::new(1);
    let cols = Columns {
        anchor: &batch.a,
        positive: &batch.p,
        negatives: Vec::new(),
    };
    let device = model.device().clone();
    let mut step = || -> Result<f64> {
        let loss = train_step(model, &cols, args.mini_batch_size, &mut rng, &mut opt)?;
        device.synchronize()?;
        Ok(loss)
    };
    step()?; // warm-up: allocator, thread pools, GPU kernels loaded
    let mut times = Vec::new();
    for _ in 0..args.steps.max(1) {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(times)
}

pub fn run(args: Args) -> Result<()> {
    if args.rank_worker {
        return crate::bench::train_dp::rank_worker(&args);
    }
    if args.world_size > 1 {
        if args.compute.device != encoder::DeviceSpec::Cpu {
            bail!("--world-size compares MPI ranks on the CPU; NCCL between GPUs is not implemented yet: leave out --device");
        }
        return crate::bench::train_dp::run(&args);
    }
    if let Some(t) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let device = args.compute.open()?;
    let prepared = prepare(&args)?;
    let model_dir = &prepared.model_dir;
    let batch = bench_batch(&prepared, &device)?;
    // Upstream's training mode: dropout 0.1 on.
    let mut model = Trainable::from_pretrained(model_dir, None, &device)?;
    model.set_precision(args.compute.precision, None)?;
    let threads = args.threads.unwrap_or_else(crate::cmd::embed::num_cpus);
    let (ta, tp) = (batch.a.ids.dims()[1], batch.p.ids.dims()[1]);
    eprintln!(
        "model {}, batch {} pairs, padded lengths {ta}/{tp} ({} real tokens), {}, {}, {threads} CPU threads, dropout {}, {}",
        model_dir.display(),
        args.batch_size,
        batch.tokens(),
        args.compute.device,
        args.compute.precision,
        model.dropout,
        args.mini_batch_size
            .map_or("one graph".to_owned(), |m| format!("GradCache chunks of {m}"))
    );
    let cpu0 = crate::bench::cpu_seconds();
    let times = time_steps_on_device(&args, &model, &batch)?;
    let cpu = match (cpu0, crate::bench::cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / (times.len() + 1) as f64),
        _ => None,
    };
    let mean = report(&args, &batch, &times, cpu)?;
    let gflop = batch.step_flop(model.model.config()) / 1e9;
    let rate = gflop / mean;
    let of_peak = match (args.compute.device == encoder::DeviceSpec::Cpu)
        .then(|| crate::bench::fma_peak(threads))
        .flatten()
    {
        Some((peak, how)) => format!(
            " = {:.0}% of the f32 FMA peak ≈ {peak:.0} GFLOP/s ({how})",
            100.0 * rate / peak
        ),
        None => String::new(),
    };
    println!("  matrix products: {gflop:.1} GFLOP per step, {rate:.1} GFLOP/s{of_peak}");
    if let Some(python) = &args.peer_python {
        if args.compute.device != encoder::DeviceSpec::Cpu {
            bail!("--peer-python times PyTorch on the CPU: leave out --device");
        }
        pytorch_peer(&args, &prepared, python, threads, mean)?;
    }
    if args.loader_batches > 0 {
        bench_loader(&args, &batch, mean)?;
    }
    Ok(())
}

/// One line of `train_peer.py`'s output for a thread count.
#[derive(serde::Deserialize)]
struct PeerStep {
    threads: usize,
    times: Vec<f64>,
    cpu_seconds_per_step: f64,
    peak_rss_bytes: Option<u64>,
    tokens: usize,
    loss: f64,
}

/// The same step in sentence-transformers (`train_peer.py`) on `threads`, printed beside ours
/// (`ours`: our mean seconds per step) with the ratio of the two.
fn pytorch_peer(
    args: &Args,
    prepared: &Prepared,
    python: &Path,
    threads: usize,
    ours: f64,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("train_peer.py");
    std::fs::write(&script, include_str!("train_peer.py"))?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(prepared.batch_flags(args))
        .args(["--threads", &threads.to_string()])
        .env("HF_HUB_OFFLINE", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("OMP_NUM_THREADS", threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch peer failed ({}): see its output above",
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut engine = "sentence-transformers".to_owned();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: unexpected output line {line:?}", script.display()))?;
        if let Some(vs) = v.get("versions") {
            let get = |k: &str| vs[k].as_str().unwrap_or("?").to_owned();
            engine = format!(
                "sentence-transformers {} (torch {})",
                get("sentence-transformers"),
                get("torch")
            );
            continue;
        }
        let p: PeerStep = serde_json::from_value(v)?;
        let mean = p.times.iter().sum::<f64>() / p.times.len().max(1) as f64;
        let min = p.times.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{engine}: {mean:.3} s/step (min {min:.3}) over {} steps, {:.2} CPU s/step, {} threads, {:.0} tokens/s, peak RSS {:.0} MiB, first loss {:.4}",
            p.times.len(),
            p.cpu_seconds_per_step,
            p.threads,
            p.tokens as f64 / mean,
            p.peak_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            p.loss,
        );
        println!("ours / PyTorch step time: {:.2}x", ours / mean);
    }
    Ok(())
}

/// Prints (and with --json writes) the step's figures; returns the mean seconds per step.
fn report(args: &Args, batch: &BenchBatch, times: &[f64], cpu: Option<f64>) -> Result<f64> {
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    // CPU seconds (user + system, all threads) per step: steadier than wall time on a shared
    // machine, and what a quiet machine would need at most.
    let cpu_per_step = cpu.map_or("?".to_owned(), |c| format!("{c:.2}"));
    let rss = crate::bench::peak_rss_mib();
    let lengths = match args.max_length_positive {
        Some(p) => format!("{}/{p}", args.max_length),
        None => args.max_length.to_string(),
    };
    println!(
        "train step (fwd+bwd+clip+AdamW, batch {} pairs, max len {lengths}, {} {}): {mean:.3} s/step (min {min:.3}) over {} steps, {cpu_per_step} CPU s/step, {:.0} tokens/s, peak RSS {rss}",
        args.batch_size,
        args.compute.device,
        args.compute.precision,
        times.len(),
        batch.tokens() as f64 / mean
    );
    if let Some(path) = &args.json {
        let value = json!({
            "device": args.compute.device.to_string(),
            "precision": args.compute.precision.to_string(),
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "max_length_positive": args.max_length_positive.unwrap_or(args.max_length),
            "mini_batch_size": args.mini_batch_size,
            "steps": times.len(),
            "seconds_per_step": mean,
            "min_seconds_per_step": min,
            "tokens": batch.tokens(),
            "padded_tokens": batch.padded_tokens(),
            "tokens_per_s": batch.tokens() as f64 / mean,
            "cpu_seconds_per_step": cpu,
            "peak_rss_bytes": crate::bench::peak_rss_bytes(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(mean)
}

/// Loader: shards of the same shape (B pairs per batch), read with checksum verification,
/// padding and tensor building, as the trainer consumes them.
fn bench_loader(args: &Args, batch: &BenchBatch, step_seconds: f64) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    write_bench_shards(
        tmp.path(),
        &batch.anchors,
        &batch.positives,
        args.loader_batches,
    )?;
    let t0 = Instant::now();
    let mut n = 0u64;
    for b in Loader::open(
        tmp.path(),
        LoaderState::default(),
        &LoaderOptions::default(),
    )? {
        b?;
        n += 1;
    }
    let loader_rate = n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "loader: {loader_rate:.0} batches/s ({:.0}x the trainer's {:.2} steps/s)",
        loader_rate * step_seconds,
        1.0 / step_seconds
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

/// The benchmark's global batch: B anchors and B positives from the corpus, tokenized.
pub struct Prepared {
    pub model_dir: PathBuf,
    pub corpus: PathBuf,
    pub anchors: Vec<Vec<u32>>,
    pub positives: Vec<Vec<u32>>,
}

impl Prepared {
    /// Rows `range` of both columns on the CPU, padded to their own longest row (as the loader
    /// pads a rank's slice).
    pub fn columns(&self, range: std::ops::Range<usize>) -> Result<(Column, Column)> {
        self.columns_on(range, &Device::Cpu)
    }

    fn columns_on(
        &self,
        range: std::ops::Range<usize>,
        device: &Device,
    ) -> Result<(Column, Column)> {
        let column = |rows: &[Vec<u32>]| -> Result<Column> {
            let (ids, mask, t) = loader::pad(rows, 0);
            Ok(Column {
                ids: Tensor::from_vec(ids, (rows.len(), t), device)?,
                mask: Tensor::from_vec(mask, (rows.len(), t), device)?,
            })
        };
        Ok((
            column(&self.anchors[range.clone()])?,
            column(&self.positives[range])?,
        ))
    }

    /// The flags that rebuild this batch and step count in another process (an MPI rank, the
    /// PyTorch peer): the resolved model and corpus, the batch size and both lengths.
    pub fn batch_flags(&self, args: &Args) -> Vec<std::ffi::OsString> {
        let positive = args.max_length_positive.unwrap_or(args.max_length);
        let mut flags: Vec<std::ffi::OsString> =
            vec!["--model".into(), self.model_dir.clone().into()];
        flags.extend(["--corpus".into(), self.corpus.clone().into()]);
        for (flag, value) in [
            ("--batch-size", args.batch_size),
            ("--max-length", args.max_length),
            ("--max-length-positive", positive),
            ("--steps", args.steps),
        ] {
            flags.extend([flag.into(), value.to_string().into()]);
        }
        flags
    }

    /// Real (unpadded) tokens in rows `range` of both columns.
    pub fn tokens(&self, range: std::ops::Range<usize>) -> usize {
        self.anchors[range.clone()]
            .iter()
            .chain(&self.positives[range])
            .map(Vec::len)
            .sum()
    }
}

/// Resolves the model and corpus and tokenizes the batch: anchors are corpus lines 0..B,
/// positives the next B, cut at `--max-length` / `--max-length-positive`; a corpus shorter
/// than 2B lines is cycled (the recipe's batch of 1,024 needs 2,048 texts).
pub fn prepare(args: &Args) -> Result<Prepared> {
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
    if lines.is_empty() || args.batch_size == 0 {
        bail!("{}: no texts (or --batch-size 0)", corpus.display());
    }
    let b = args.batch_size;
    let tokenizer = |max_length: usize| -> Result<Tokenizer> {
        let path = model_dir.join("tokenizer.json");
        let mut tok =
            Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        tok.with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        tok.with_padding(None);
        Ok(tok)
    };
    let encode = |tok: &Tokenizer, first: usize| -> Result<Vec<Vec<u32>>> {
        (first..first + b)
            .map(|i| {
                let text = lines[i % lines.len()];
                let enc = tok.encode(text, true).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(enc.get_ids().to_vec())
            })
            .collect()
    };
    let anchors = encode(&tokenizer(args.max_length)?, 0)?;
    let positive_length = args.max_length_positive.unwrap_or(args.max_length);
    Ok(Prepared {
        positives: encode(&tokenizer(positive_length)?, b)?,
        anchors,
        model_dir,
        corpus,
    })
}

/// Wall seconds of each timed step (after one untimed warm-up), and CPU seconds (user +
/// system, all threads) per step: steadier than wall time on a shared machine.
pub struct Timing {
    pub times: Vec<f64>,
    pub cpu_per_step: Option<f64>,
}

impl Timing {
    pub fn mean(&self) -> f64 {
        self.times.iter().sum::<f64>() / self.times.len().max(1) as f64
    }

    pub fn min(&self) -> f64 {
        self.times.iter().cloned().fold(f64::INFINITY, f64::min)
    }

    pub fn cpu(&self) -> String {
        self.cpu_per_step
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
    }
}

/// Runs `step` once untimed (allocator and thread pools warm up), calls `warm`, then runs
/// `step` `steps` times timed.
pub fn time_steps(
    steps: usize,
    mut step: impl FnMut() -> Result<()>,
    warm: impl FnOnce(),
) -> Result<Timing> {
    step()?;
    warm();
    let mut times = Vec::new();
    let cpu0 = crate::bench::cpu_seconds();
    for _ in 0..steps {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let cpu_per_step = match (cpu0, crate::bench::cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / times.len().max(1) as f64),
        _ => None,
    };
    Ok(Timing {
        times,
        cpu_per_step,
    })
}

/// One process: loss and gradients in one graph (what `prep train` does alone), clipping and
/// AdamW, upstream's training mode (dropout 0.1 on).
pub fn time_one_process(args: &Args, prepared: &Prepared) -> Result<Timing> {
    let (a, p) = prepared.columns(0..args.batch_size)?;
    let model = Trainable::from_pretrained(&prepared.model_dir, None, &Device::Cpu)?;
    let mut opt = AdamW::new(&model.vars, AdamWConfig::default())?;
    let mut rng = encoder::DropoutRng::new(1);
    let cols = Columns {
        anchor: &a,
        positive: &p,
        negatives: Vec::new(),
    };
    let step = || -> Result<()> {
        train_step(&model, &cols, args.mini_batch_size, &mut rng, &mut opt).map(|_| ())
    };
    time_steps(args.steps, step, || ())
}
