//! `prep bench encode`: encoder throughput (sentences/s, tokens/s) on the bench corpus.
//!
//! Every figure is end to end (tokenize, sort by length, forward, pool, normalise) over the whole
//! corpus, best of `--rounds`, on a rayon pool of the stated size. Measured in one run: our packed
//! CPU path at every batch size on all cores and at batch 32 and the best batch on one thread; our
//! trainable candle graph (the training forward) at batch 32; and, built with
//! `--features candle-peer`, stock candle-transformers `BertModel` on the same sorted batches.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::Device;
use encoder::{Backend, SentenceEncoder};

use super::{peak_rss_mib, with_threads};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: the all-MiniLM-L6-v2 test model from scripts/fetch-test-model.sh).
    #[arg(long)]
    pub model: Option<String>,
    /// One text per line (default: shared/bench/corpus.txt).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Repeat the corpus this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Batch sizes tried on all cores.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128,256")]
    pub batch_sizes: Vec<usize>,
    /// "All cores" (default: every available core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runs per configuration; the best is reported (other processes share the machine).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Skip the candle-graph and stock-candle comparisons.
    #[arg(long)]
    pub no_peers: bool,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    engine: String,
    threads: usize,
    batch: usize,
    seconds: f64,
    sentences_per_s: f64,
    tokens_per_s: f64,
    /// Sentences per second of CPU time (user + system) of this process: a figure other
    /// processes on a shared machine disturb less than wall time.
    sentences_per_cpu_s: f64,
    /// Peak RSS during this configuration (the high-water mark is reset before it).
    peak_rss_bytes: Option<u64>,
}

/// User + system CPU seconds of this process so far (Linux /proc/self/stat).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (clock ticks, 100 Hz).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the peak-RSS high-water mark (`VmHWM`) so each configuration reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn run(args: Args) -> Result<()> {
    let model_dir = match &args.model {
        Some(m) => crate::model::resolve(m)?,
        None => super::default_test_model(),
    };
    let corpus = args.corpus.clone().unwrap_or_else(super::default_corpus);
    let text = std::fs::read_to_string(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let texts: Vec<&str> = (0..args.repeat.max(1))
        .flat_map(|_| lines.iter().copied())
        .collect();
    if texts.is_empty() {
        bail!("{}: no texts", corpus.display());
    }
    let all = args.threads.unwrap_or_else(crate::cmd::embed::num_cpus);
    let rounds = args.rounds.max(1);

    let mut enc = SentenceEncoder::load(&model_dir, &Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let ids = enc.tokenize(&texts)?;
    let tokens: usize = ids.iter().map(|s| s.len()).sum();
    let max_len = ids.iter().map(|s| s.len()).max().unwrap_or(0);
    println!(
        "corpus {}: {} texts, {} tokens (mean {:.1}, max {}), max_seq_length {}, {} cores",
        corpus.display(),
        texts.len(),
        tokens,
        tokens as f64 / texts.len() as f64,
        max_len,
        enc.max_seq_length(),
        all
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut time = |engine: &str,
                    threads: usize,
                    batch: usize,
                    f: &(dyn Fn() -> Result<()> + Sync)|
     -> Result<f64> {
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        reset_peak_rss();
        for _ in 0..rounds {
            let (secs, cpu) = with_threads(threads, || -> Result<(f64, f64)> {
                let t = Instant::now();
                let c = cpu_seconds();
                f()?;
                Ok((t.elapsed().as_secs_f64(), cpu_seconds() - c))
            })?;
            best = best.min(secs);
            best_cpu = best_cpu.min(cpu);
        }
        let row = Row {
            engine: engine.to_owned(),
            threads,
            batch,
            seconds: best,
            sentences_per_s: texts.len() as f64 / best,
            tokens_per_s: tokens as f64 / best,
            sentences_per_cpu_s: texts.len() as f64 / best_cpu.max(1e-9),
            peak_rss_bytes: super::peak_rss_bytes(),
        };
        println!(
            "{:<30} threads {:>2}  batch {:>4}  {:>7.1} sentences/s  {:>7.0} tokens/s  {:>6.1} sent/CPU-s  peak RSS {:>6.1} MiB  ({:.2}s)",
            row.engine,
            row.threads,
            row.batch,
            row.sentences_per_s,
            row.tokens_per_s,
            row.sentences_per_cpu_s,
            row.peak_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            row.seconds
        );
        rows.push(row);
        Ok(best)
    };

    // Tokenization alone (part of every figure below).
    time("tokenize only", all, 0, &|| {
        enc.tokenize(&texts)?;
        Ok(())
    })?;

    // Warm-up: page in weights, grow allocator pools.
    enc.encode(&texts[..texts.len().min(64)], 32)?;

    let mut best_batch = 32;
    let mut best_secs = f64::INFINITY;
    for &b in &args.batch_sizes {
        let secs = time("prep packed (ours)", all, b, &|| {
            enc.encode(&texts, b)?;
            Ok(())
        })?;
        if secs < best_secs {
            best_secs = secs;
            best_batch = b;
        }
    }
    if all != 1 {
        // The other threading: each batch's steps spread over all cores.
        enc.set_batch_parallel(false);
        time("prep packed, split batches", all, 32, &|| {
            enc.encode(&texts, 32)?;
            Ok(())
        })?;
        enc.set_batch_parallel(true);
        time("prep packed (ours)", 1, 32, &|| {
            enc.encode(&texts, 32)?;
            Ok(())
        })?;
        if best_batch != 32 {
            time("prep packed (ours)", 1, best_batch, &|| {
                enc.encode(&texts, best_batch)?;
                Ok(())
            })?;
        }
    }

    let reference = enc.encode(&texts, 32)?;
    if !args.no_peers {
        enc.set_backend(Backend::Candle)?;
        time("prep candle graph (train fwd)", all, 32, &|| {
            enc.encode(&texts, 32)?;
            Ok(())
        })?;
        let graph = enc.encode(&texts[..texts.len().min(64)], 32)?;
        println!(
            "  candle graph vs packed: max |diff| {:.2e}",
            max_abs_diff(&graph, &reference)
        );
        enc.set_backend(Backend::Packed)?;
        stock::bench(&model_dir, &enc, &texts, &reference, &mut time, all)?;
    }
    let peak = rows.iter().filter_map(|r| r.peak_rss_bytes).max();
    println!(
        "peak RSS of the packed path (batch 32, all cores): {}",
        rows.iter()
            .find(|r| r.engine == "prep packed (ours)" && r.batch == 32 && r.threads == all)
            .and_then(|r| r.peak_rss_bytes)
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(peak_rss_mib)
    );

    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "corpus": corpus.display().to_string(),
            "texts": texts.len(),
            "tokens": tokens,
            "model": model_dir.display().to_string(),
            "rows": rows,
            "best_batch": best_batch,
            "peak_rss_bytes": peak,
        });
        schemas::AtomicFile::write_json(path, &report)?;
    }
    Ok(())
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

type Timer<'a> =
    dyn FnMut(&str, usize, usize, &(dyn Fn() -> Result<()> + Sync)) -> Result<f64> + 'a;

#[cfg(feature = "candle-peer")]
mod stock {
    //! Stock candle-transformers `BertModel` (candle's own bert.rs), fed the same length-sorted
    //! batches, mean-pooled and normalised like the model's modules say.

    use std::path::Path;

    use anyhow::Result;
    use candle_transformers::models::bert::{BertModel, Config};
    use encoder::candle_core::{DType, Device, D};
    use encoder::candle_nn::VarBuilder;
    use encoder::SentenceEncoder;

    use super::{max_abs_diff, Timer};

    fn encode(
        model: &BertModel,
        enc: &SentenceEncoder,
        texts: &[&str],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let ids = enc.tokenize(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(batch) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let (input, mask) = encoder::pad_batch(&seqs, &Device::Cpu)?;
            let types = input.zeros_like()?;
            let hidden = model.forward(&input, &types, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let pooled = hidden
                .broadcast_mul(&m)?
                .sum(1)?
                .broadcast_div(&m.sum(1)?)?;
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            let v: Vec<Vec<f32>> = pooled.broadcast_div(&norm)?.to_vec2()?;
            for (&i, v) in chunk.iter().zip(v) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    pub fn bench(
        dir: &Path,
        enc: &SentenceEncoder,
        texts: &[&str],
        reference: &[Vec<f32>],
        time: &mut Timer,
        threads: usize,
    ) -> Result<()> {
        let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        // SAFETY: read-only mapping of a file nobody writes during the benchmark.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )?
        };
        let model = BertModel::load(vb, &cfg)?;
        time("stock candle BertModel", threads, 32, &|| {
            encode(&model, enc, texts, 32)?;
            Ok(())
        })?;
        let got = encode(&model, enc, &texts[..texts.len().min(64)], 32)?;
        println!(
            "  stock candle vs packed: max |diff| {:.2e}",
            max_abs_diff(&got, reference)
        );
        Ok(())
    }
}

#[cfg(not(feature = "candle-peer"))]
mod stock {
    use std::path::Path;

    use anyhow::Result;
    use encoder::SentenceEncoder;

    use super::Timer;

    pub fn bench(
        _: &Path,
        _: &SentenceEncoder,
        _: &[&str],
        _: &[Vec<f32>],
        _: &mut Timer,
        _: usize,
    ) -> Result<()> {
        println!("stock candle BertModel: not built (cargo build --release -p prep --features candle-peer)");
        Ok(())
    }
}
