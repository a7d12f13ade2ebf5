//! `prep bench encode`: encoder throughput (sentences/s, tokens/s) on the bench corpus.
//!
//! Every figure is end to end (tokenize, sort by length, forward, pool, normalise) over the whole
//! corpus, best of `--rounds`, on a rayon pool of the stated size, with GFLOP/s of the model's
//! matrix products and each engine's min cosine to our f32 vectors. Measured in one run: our packed
//! CPU path at every batch size on all cores and at batch 32 and the best batch on one thread, and
//! at bf16 and int8 (`encoder::lowp`) at batch 32 and the best batch on all cores; our trainable
//! candle graph (the training forward) at batch 32; built with `--features candle-peer`, stock
//! candle-transformers `BertModel` on the same sorted batches; and with `--peer-python PY`,
//! sentence-transformers (PyTorch) and ONNX Runtime fp32 and dynamic int8 (the model exported
//! with `torch.onnx`) in a child process on the same texts, model folder and batch sizes
//! (`st_peer.py`), its peak RSS its own; a peer that cannot run is reported as not measured.
//!
//! With `--device cuda[:N]` (a build with `--features cuda`) it measures the candle graph on
//! the GPU at `--precision` over the batch sizes instead, checks its vectors against the CPU's
//! packed path (min cosine), and runs the sentence-transformers peer on the same GPU.

use std::path::{Path, PathBuf};
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
    /// A Python with sentence-transformers installed: also measure it on the same texts, model
    /// folder and batch sizes (32 and our best on all cores, 32 on one), in a child process.
    #[arg(long)]
    pub peer_python: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
}

#[derive(serde::Serialize)]
struct Row {
    engine: String,
    threads: usize,
    batch: usize,
    seconds: f64,
    sentences_per_s: f64,
    tokens_per_s: f64,
    /// Sentences per second of CPU time (user + system) of the measured process: a figure other
    /// processes on a shared machine disturb less than wall time.
    sentences_per_cpu_s: f64,
    /// Peak RSS during this configuration (the high-water mark is reset before it).
    peak_rss_bytes: Option<u64>,
    /// Arithmetic rate of the model's matrix products ([`encode_flops`]) over wall time.
    gflop_per_s: f64,
    /// Smallest cosine of this engine's vectors to our packed f32 ones over the whole corpus
    /// (None where not compared).
    min_cosine_to_f32: Option<f64>,
}

/// Multiply-add FLOPs of one BERT forward over sequences of these lengths: per layer and token
/// the Q|K|V, output and feed-forward products, plus the attention's two `t × t` products.
fn encode_flops(cfg: &encoder::BertConfig, lens: impl Iterator<Item = usize>) -> f64 {
    let (h, inter, layers) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.num_hidden_layers as f64,
    );
    lens.map(|t| {
        let t = t as f64;
        layers * (2.0 * t * (4.0 * h * h + 2.0 * h * inter) + 4.0 * t * t * h)
    })
    .sum()
}

/// Times configurations over one corpus and keeps a [`Row`] for each.
struct Bench<'a> {
    texts: &'a [&'a str],
    tokens: usize,
    /// [`encode_flops`] of the whole corpus.
    flops: f64,
    rounds: usize,
    rows: Vec<Row>,
}

impl Bench<'_> {
    /// Runs `f` `rounds` times on `threads` threads; records and prints the best round.
    fn time(
        &mut self,
        engine: &str,
        threads: usize,
        batch: usize,
        f: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<f64> {
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        super::reset_peak_rss();
        for _ in 0..self.rounds {
            let (secs, cpu) = with_threads(threads, || -> Result<(f64, f64)> {
                let t = Instant::now();
                let c = super::cpu_seconds().unwrap_or(0.0);
                f()?;
                let cpu = super::cpu_seconds().unwrap_or(0.0) - c;
                Ok((t.elapsed().as_secs_f64(), cpu))
            })?;
            best = best.min(secs);
            best_cpu = best_cpu.min(cpu);
        }
        self.record(
            engine,
            threads,
            batch,
            best,
            best_cpu,
            super::peak_rss_bytes(),
        );
        Ok(best)
    }

    fn record(
        &mut self,
        engine: &str,
        threads: usize,
        batch: usize,
        seconds: f64,
        cpu_seconds: f64,
        peak_rss_bytes: Option<u64>,
    ) {
        let n = self.texts.len() as f64;
        let row = Row {
            engine: engine.to_owned(),
            threads,
            batch,
            seconds,
            sentences_per_s: n / seconds,
            tokens_per_s: self.tokens as f64 / seconds,
            sentences_per_cpu_s: n / cpu_seconds.max(1e-9),
            peak_rss_bytes,
            gflop_per_s: self.flops / seconds / 1e9,
            min_cosine_to_f32: None,
        };
        println!(
            "{:<30} threads {:>2}  batch {:>4}  {:>7.1} sentences/s  {:>7.0} tokens/s  {:>6.1} GFLOP/s  {:>6.1} sent/CPU-s  peak RSS {:>6.1} MiB  ({:.2}s)",
            row.engine,
            row.threads,
            row.batch,
            row.sentences_per_s,
            row.tokens_per_s,
            row.gflop_per_s,
            row.sentences_per_cpu_s,
            row.peak_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            row.seconds
        );
        self.rows.push(row);
    }

    /// Sets the min cosine of `engine`'s rows (printed once).
    fn set_min_cosine(&mut self, engine: &str, got: &[Vec<f32>], reference: &[Vec<f32>]) {
        let min = gpu::min_cosine(got, reference);
        println!(
            "  {engine} vs packed f32: min cosine {min:.6} over {} texts",
            got.len().min(reference.len())
        );
        for r in self.rows.iter_mut().filter(|r| r.engine == engine) {
            r.min_cosine_to_f32 = Some(min);
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let device = args.compute.open_for_encoding()?;
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
    if !device.is_cpu() {
        let on = Corpus {
            path: &corpus,
            texts: &texts,
            model: &model_dir,
        };
        return gpu::run(&args, &on, &device, all);
    }
    let mut enc = SentenceEncoder::load(&model_dir, &Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let (tokens, flops) = describe_corpus(&corpus, &enc, &texts, all)?;
    let mut bench = Bench {
        texts: &texts,
        tokens,
        // No products in tokenization: its row's GFLOP/s is 0.
        flops: 0.0,
        rounds: args.rounds.max(1),
        rows: Vec::new(),
    };

    // Tokenization alone (part of every figure below).
    bench.time("tokenize only", all, 0, &|| {
        enc.tokenize(&texts)?;
        Ok(())
    })?;
    bench.flops = flops;
    // Warm-up: page in weights, grow allocator pools.
    enc.encode(&texts[..texts.len().min(64)], 32)?;
    let best_batch = bench_packed(&mut bench, &mut enc, &args.batch_sizes, all)?;
    let reference = enc.encode(&texts, 32)?;
    bench.set_min_cosine("prep packed (ours)", &reference, &reference);
    bench_low_precision(&mut bench, &mut enc, &[32, best_batch], all, &reference)?;
    if !args.no_peers {
        bench_candle_graph(&mut bench, &mut enc, &reference, all)?;
        stock::bench(&model_dir, &enc, &reference, &mut bench, all)?;
    }
    if let Some(python) = &args.peer_python {
        let batches = if best_batch == 32 {
            vec![32]
        } else {
            vec![32, best_batch]
        };
        let peer = PythonPeer {
            python,
            model: &model_dir,
            batches: &batches,
            threads: all,
            device: None,
            onnx: true,
        };
        peer.bench(&mut bench, &reference)?;
    }
    print_peak(&bench.rows, all);
    print_fma_peak(&bench.rows, all);
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "corpus": corpus.display().to_string(),
            "texts": texts.len(),
            "tokens": tokens,
            "model": model_dir.display().to_string(),
            "rows": bench.rows,
            "best_batch": best_batch,
            "peak_rss_bytes": bench.rows.iter().filter_map(|r| r.peak_rss_bytes).max(),
        });
        schemas::AtomicFile::write_json(path, &report)?;
    }
    Ok(())
}

/// Prints what is measured on; returns the corpus's token count and [`encode_flops`].
fn describe_corpus(
    corpus: &Path,
    enc: &SentenceEncoder,
    texts: &[&str],
    threads: usize,
) -> Result<(usize, f64)> {
    let ids = enc.tokenize(texts)?;
    let tokens: usize = ids.iter().map(|s| s.len()).sum();
    let flops = encode_flops(enc.config(), ids.iter().map(|s| s.len()));
    let max_len = ids.iter().map(|s| s.len()).max().unwrap_or(0);
    println!(
        "corpus {}: {} texts, {} tokens (mean {:.1}, max {}), max_seq_length {}, {} cores",
        corpus.display(),
        texts.len(),
        tokens,
        tokens as f64 / texts.len() as f64,
        max_len,
        enc.max_seq_length(),
        threads
    );
    println!(
        "  {:.1} GFLOP per pass over the corpus (matrix products)",
        flops / 1e9
    );
    Ok((tokens, flops))
}

/// Our packed path at bf16 and int8 ([`encoder::lowp`]) on all cores at `batches`, with each
/// precision's min cosine to the f32 vectors; leaves the encoder at f32.
fn bench_low_precision(
    bench: &mut Bench,
    enc: &mut SentenceEncoder,
    batches: &[usize],
    all: usize,
    reference: &[Vec<f32>],
) -> Result<()> {
    let texts = bench.texts;
    let mut batches = batches.to_vec();
    batches.dedup();
    for p in [encoder::Precision::Bf16, encoder::Precision::Int8] {
        enc.set_precision(p)?;
        if let Some(kernels) = p.cpu_kernels() {
            println!("  {kernels}");
        }
        let engine = format!("prep packed {p} (ours)");
        for &b in &batches {
            bench.time(&engine, all, b, &|| {
                enc.encode(texts, b)?;
                Ok(())
            })?;
        }
        bench.set_min_cosine(&engine, &enc.encode(texts, 32)?, reference);
    }
    enc.set_precision(encoder::Precision::F32)?;
    Ok(())
}

/// Our packed path at every batch size on all cores, then split batches and one thread; returns
/// the fastest batch size on all cores.
fn bench_packed(
    bench: &mut Bench,
    enc: &mut SentenceEncoder,
    batch_sizes: &[usize],
    all: usize,
) -> Result<usize> {
    let texts = bench.texts;
    let mut best_batch = 32;
    let mut best_secs = f64::INFINITY;
    for &b in batch_sizes {
        let secs = bench.time("prep packed (ours)", all, b, &|| {
            enc.encode(texts, b)?;
            Ok(())
        })?;
        if secs < best_secs {
            best_secs = secs;
            best_batch = b;
        }
    }
    if all == 1 {
        return Ok(best_batch);
    }
    // The other threading: whole batches side by side, one per core.
    enc.set_batch_parallel(true);
    bench.time("prep packed, batches side by side", all, 32, &|| {
        enc.encode(texts, 32)?;
        Ok(())
    })?;
    enc.set_batch_parallel(false);
    let mut single = vec![32];
    if best_batch != 32 {
        single.push(best_batch);
    }
    for b in single {
        bench.time("prep packed (ours)", 1, b, &|| {
            enc.encode(texts, b)?;
            Ok(())
        })?;
    }
    Ok(best_batch)
}

/// The trainable candle graph (the training forward, eval mode) at batch 32.
fn bench_candle_graph(
    bench: &mut Bench,
    enc: &mut SentenceEncoder,
    reference: &[Vec<f32>],
    all: usize,
) -> Result<()> {
    let texts = bench.texts;
    enc.set_backend(Backend::Candle)?;
    bench.time("prep candle graph (train fwd)", all, 32, &|| {
        enc.encode(texts, 32)?;
        Ok(())
    })?;
    let graph = enc.encode(&texts[..texts.len().min(64)], 32)?;
    println!(
        "  candle graph vs packed: max |diff| {:.2e}",
        max_abs_diff(&graph, reference)
    );
    enc.set_backend(Backend::Packed)?;
    Ok(())
}

fn print_peak(rows: &[Row], all: usize) {
    println!(
        "peak RSS of the packed path (batch 32, all cores): {}",
        rows.iter()
            .find(|r| r.engine == "prep packed (ours)" && r.batch == 32 && r.threads == all)
            .and_then(|r| r.peak_rss_bytes)
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(peak_rss_mib)
    );
}

/// Each engine's best rate on all cores against the machine's f32 FMA peak (bf16 and int8
/// products can pass it: their instructions do 2× and 4× the multiply-adds).
fn print_fma_peak(rows: &[Row], all: usize) {
    let Some((peak, how)) = super::fma_peak(all) else {
        println!("f32 FMA peak: unknown here (no FMA, or no clock in /proc/cpuinfo)");
        return;
    };
    println!("f32 FMA peak ≈ {peak:.0} GFLOP/s ({how}); best rate on all cores:");
    // Each engine's best row, in the order the engines were first measured.
    let mut best: Vec<(&str, f64)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.threads == all && r.gflop_per_s > 0.0)
    {
        match best.iter_mut().find(|(e, _)| *e == r.engine) {
            Some((_, g)) => *g = g.max(r.gflop_per_s),
            None => best.push((&r.engine, r.gflop_per_s)),
        }
    }
    for (engine, g) in best {
        println!(
            "  {engine:<50} {g:>6.1} GFLOP/s = {:>3.0}% of the f32 peak",
            100.0 * g / peak
        );
    }
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// sentence-transformers in a child Python process (`st_peer.py`): its figures are its own
/// process's (wall, CPU, peak RSS), on the texts we encode, written to a file it reads.
struct PythonPeer<'a> {
    python: &'a Path,
    model: &'a Path,
    batches: &'a [usize],
    threads: usize,
    /// A GPU (`cuda:N`) and the precision to run it at; `None`: the CPU, f32.
    device: Option<(String, encoder::Precision)>,
    /// Also ONNX Runtime fp32 and int8 (the CPU only).
    onnx: bool,
}

/// A peer engine's name with its versions (`st_peer.py`'s "versions" lines).
fn peer_engine(engine: &str, v: &serde_json::Map<String, serde_json::Value>) -> String {
    let get = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("?").to_owned();
    match engine {
        "sentence-transformers" => format!(
            "sentence-transformers {} (torch {})",
            get("sentence_transformers"),
            get("torch")
        ),
        other => format!("{other} (ort {})", get("onnxruntime")),
    }
}

/// One line `st_peer.py` prints per configuration.
#[derive(serde::Deserialize)]
struct PeerLine {
    engine: String,
    threads: usize,
    batch: usize,
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_bytes: Option<u64>,
}

impl PythonPeer<'_> {
    fn bench(&self, bench: &mut Bench, reference: &[Vec<f32>]) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("st_peer.py");
        std::fs::write(&script, include_str!("st_peer.py"))?;
        let texts_file = dir.path().join("texts.txt");
        std::fs::write(&texts_file, bench.texts.join("\n"))?;
        let npy = dir.path().join("st.npy");
        let stdout = self.run(&script, &texts_file, &npy, bench.rounds, dir.path())?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        let mut versions = serde_json::Map::new();
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
                format!("{}: unexpected output line {line:?}", script.display())
            })?;
            if let Some(vs) = v.get("versions").and_then(|v| v.as_object()) {
                versions.extend(vs.clone());
                continue;
            }
            if let Some(name) = v.get("skipped").and_then(|n| n.as_str()) {
                println!(
                    "{name:<30} not measured: {}",
                    v["why"].as_str().unwrap_or("?")
                );
                continue;
            }
            let p: PeerLine = serde_json::from_value(v)?;
            let engine = peer_engine(&p.engine, &versions);
            if !names.iter().any(|(e, _)| *e == engine) {
                let file = match p.engine.as_str() {
                    "sentence-transformers" => npy.clone(),
                    other => {
                        PathBuf::from(format!("{}.{}.npy", npy.display(), other.replace(' ', "-")))
                    }
                };
                names.push((engine.clone(), file));
            }
            bench.record(
                &engine,
                p.threads,
                p.batch,
                p.seconds,
                p.cpu_seconds,
                p.peak_rss_bytes,
            );
        }
        for (engine, file) in names {
            let got = schemas::embeddings::read_npy(&file)?;
            let got: Vec<Vec<f32>> = got
                .vectors
                .chunks(got.dim.max(1))
                .map(<[f32]>::to_vec)
                .collect();
            bench.set_min_cosine(&engine, &got, reference);
        }
        Ok(())
    }

    fn run(
        &self,
        script: &Path,
        texts: &Path,
        npy: &Path,
        rounds: usize,
        onnx_dir: &Path,
    ) -> Result<String> {
        let mut cmd = std::process::Command::new(self.python);
        cmd.arg(script)
            .arg("--model")
            .arg(self.model)
            .arg("--texts")
            .arg(texts)
            .arg("--npy")
            .arg(npy)
            .arg("--rounds")
            .arg(rounds.to_string());
        for b in self.batches {
            cmd.arg("--batch").arg(b.to_string());
        }
        let mut threads = vec![self.threads];
        if self.threads != 1 && self.device.is_none() {
            threads.push(1);
        }
        for t in threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        if self.onnx && self.device.is_none() {
            cmd.arg("--onnx").arg(onnx_dir);
        }
        // Offline, and on the device we run on.
        cmd.env("HF_HUB_OFFLINE", "1")
            .env("OMP_NUM_THREADS", self.threads.to_string());
        match &self.device {
            Some((device, precision)) => {
                cmd.arg("--device").arg(device);
                cmd.arg("--precision").arg(precision.to_string());
            }
            None => {
                cmd.env("CUDA_VISIBLE_DEVICES", "");
            }
        }
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} failed ({}): is sentence-transformers installed there?",
                self.python.display(),
                script.display(),
                out.status
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The corpus a run measures on.
struct Corpus<'a> {
    path: &'a Path,
    texts: &'a [&'a str],
    model: &'a Path,
}

mod gpu {
    //! `prep bench encode --device cuda`: the candle graph on a GPU, checked against the CPU.

    use anyhow::{Context, Result};
    use encoder::candle_core::Device;
    use encoder::SentenceEncoder;

    use super::{describe_corpus, Args, Bench, Corpus, PythonPeer};

    pub fn run(args: &Args, on: &Corpus, device: &Device, all: usize) -> Result<()> {
        let texts = on.texts;
        let load = |d: &Device| {
            SentenceEncoder::load(on.model, d)
                .with_context(|| format!("loading {}", on.model.display()))
        };
        let mut enc = load(device)?;
        enc.set_precision(args.compute.precision)?;
        let (tokens, flops) = describe_corpus(on.path, &enc, texts, all)?;
        let mut bench = Bench {
            texts,
            tokens,
            flops,
            rounds: args.rounds.max(1),
            rows: Vec::new(),
        };
        let first = &texts[..texts.len().min(64)];
        enc.encode(first, 32)?; // warm-up: kernels loaded, allocator grown
        let engine = format!("prep {} {}", args.compute.device, args.compute.precision);
        for &b in &args.batch_sizes {
            // Vectors come back to the host, so each round includes the GPU's whole work.
            bench.time(&engine, all, b, &|| {
                enc.encode(texts, b)?;
                Ok(())
            })?;
        }
        let ours = enc.encode(first, 32)?;
        let cpu = load(&Device::Cpu)?.encode(first, 32)?;
        println!(
            "  {engine} vs CPU packed f32: min cosine {:.6} over {} texts",
            min_cosine(&ours, &cpu),
            ours.len()
        );
        if let Some(python) = &args.peer_python {
            let peer = PythonPeer {
                python,
                model: on.model,
                batches: &args.batch_sizes,
                threads: all,
                device: Some((args.compute.device.to_string(), args.compute.precision)),
                onnx: false,
            };
            peer.bench(&mut bench, &ours)?;
        }
        if let Some(path) = &args.json {
            let report = serde_json::json!({
                "corpus": on.path.display().to_string(),
                "texts": texts.len(),
                "tokens": tokens,
                "model": on.model.display().to_string(),
                "device": args.compute.device.to_string(),
                "precision": args.compute.precision.to_string(),
                "min_cosine_vs_cpu": min_cosine(&ours, &cpu),
                "rows": bench.rows,
            });
            schemas::AtomicFile::write_json(path, &report)?;
        }
        Ok(())
    }

    /// The smallest cosine between paired vectors.
    pub fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
                let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
                let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
                dot / (nx * ny).max(1e-30)
            })
            .fold(1.0, f64::min)
    }
}

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

    use super::{max_abs_diff, Bench};

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
        reference: &[Vec<f32>],
        bench: &mut Bench,
        threads: usize,
    ) -> Result<()> {
        let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        // Read into memory (no mmap, so no unsafe): the weights are copied into tensors anyway.
        let weights = std::fs::read(dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &cfg)?;
        let texts = bench.texts;
        bench.time("stock candle BertModel", threads, 32, &|| {
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

    use super::Bench;

    pub fn bench(
        _: &Path,
        _: &SentenceEncoder,
        _: &[Vec<f32>],
        _: &mut Bench,
        _: usize,
    ) -> Result<()> {
        println!("stock candle BertModel: not built (cargo build --release -p prep --features candle-peer)");
        Ok(())
    }
}
