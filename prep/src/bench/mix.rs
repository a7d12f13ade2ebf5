//! `prep bench mix`: end-to-end mix throughput (read Parquet, sample, dedup, tokenize, write
//! shards) in pairs/s and tokens/s on the bench corpus, one thread and all cores, with peak RSS;
//! HF `tokenizers` through Python on the same texts as the peer; and peak RSS on a generated
//! 10M-row dataset to show memory does not grow with dataset size. Then tokenization alone on the
//! same texts: our WordPiece fast path, the HF `tokenizers` crate, and HF through Python.
//!
//! Each measurement runs in a child process (`prep bench mix --child ...`) so its peak RSS is
//! its own; the child calls the mixer library with its `MixOptions` (the CLI's defaults at the
//! bench's steps and batch size).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mixer::{MixConfig, MixOptions, MixTokenizer};
use schemas::{Arity, DatasetWriter, Manifest, NoProgress, PairRecord, PairWriterOptions};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Rows of the dataset made from the bench corpus (repeated).
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Rows of the generated dataset for the memory check (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    big_rows: usize,
    /// Batches mixed in each run.
    #[arg(long, default_value_t = 400)]
    steps: u64,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// The bench corpus (one text per line).
    #[arg(long, default_value = "../shared/bench/corpus.txt")]
    corpus: PathBuf,
    /// Tokenizer (tokenizer.json, model folder or Hub id).
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    tokenizer: String,
    /// Working folder for generated datasets and shards (kept, so reruns skip generation).
    #[arg(long, default_value = "target/bench-mix")]
    work: PathBuf,
    /// Skip the Python HF tokenizers peer.
    #[arg(long)]
    no_python: bool,
    /// Only the tokenize-only comparison (no end-to-end mix runs).
    #[arg(long)]
    tokenize_only: bool,
    /// Internal: run one measurement with this many threads on --child-dataset and print JSON.
    #[arg(long, hide = true)]
    child: Option<usize>,
    #[arg(long, hide = true)]
    child_dataset: Option<String>,
}

fn corpus_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the bench corpus {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.len() < 2 {
        bail!("{}: fewer than two texts", path.display());
    }
    Ok(lines)
}

/// Pair `i`: consecutive corpus texts, suffixed with the pass number so texts stay distinct
/// (round dedup would otherwise skip most of a repeated corpus).
fn pair(lines: &[String], i: usize) -> (String, String) {
    let n = lines.len();
    let pass = i / n;
    let a = &lines[i % n];
    let b = &lines[(i + 1) % n];
    if pass == 0 {
        (a.clone(), b.clone())
    } else {
        (format!("{a} ({pass})"), format!("{b} ({pass})"))
    }
}

/// Writes dataset `id` of `rows` corpus pairs under `pairs` unless it is already there.
fn ensure_dataset(pairs: &Path, id: &str, lines: &[String], rows: usize) -> Result<()> {
    let dir = pairs.join(id);
    if Manifest::read(&dir).is_ok_and(|m| m.rows == rows as u64) {
        return Ok(());
    }
    eprintln!("generating {rows} rows into {}", dir.display());
    let mut w =
        DatasetWriter::create(&dir, id, "bench", Arity::Pair, PairWriterOptions::default())?;
    for i in 0..rows {
        let (a, b) = pair(lines, i);
        w.push(&PairRecord::pair(a, b))?;
    }
    w.finish()?;
    Ok(())
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The mix a measurement runs: `prep mix`'s defaults at the bench's steps and batch size.
fn mix_options(a: &Args) -> MixOptions {
    MixOptions {
        steps: a.steps,
        batch_size: a.batch_size,
        ..MixOptions::default()
    }
}

fn child(a: &Args, threads: usize) -> Result<()> {
    let dataset = a
        .child_dataset
        .clone()
        .context("--child needs --child-dataset")?;
    let out = a.work.join(format!("shards-{dataset}-{threads}"));
    // Always a fresh run: a resumed one would measure nothing.
    let _ = std::fs::remove_dir_all(&out);
    let opts = mix_options(a);
    let cpu0 = cpu_seconds();
    let config = MixConfig::read(&a.work.join(format!("{dataset}.json")))?;
    let tok = crate::cmd::mix::tokenizer_path(&a.tokenizer)?;
    let tokenizer = MixTokenizer::open(&tok, opts.max_length_a, opts.max_length_b)
        .with_context(|| format!("loading tokenizer {}", tok.display()))?;
    let start = Instant::now();
    let report = crate::bench::with_threads(threads, || {
        mixer::mix(
            &config,
            &a.work.join("pairs"),
            &tokenizer,
            &out,
            &opts,
            &NoProgress,
        )
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "{}",
        json!({
            "threads": threads,
            "dataset": dataset,
            "secs": secs,
            "pairs": report.rows_written,
            "tokens": report.tokens_written,
            "pairs_per_s": report.rows_written as f64 / secs,
            "tokens_per_s": report.tokens_written as f64 / secs,
            "cpu_s": cpu,
            "pairs_per_cpu_s": cpu.map(|c| report.rows_written as f64 / c),
            "peak_rss_bytes": crate::bench::peak_rss_bytes(),
        })
    );
    Ok(())
}

fn measure(a: &Args, dataset: &str, threads: usize) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "bench",
            "mix",
            "--child",
            &threads.to_string(),
            "--child-dataset",
            dataset,
        ])
        .arg("--work")
        .arg(&a.work)
        .args(["--tokenizer", &a.tokenizer])
        .args([
            "--steps",
            &a.steps.to_string(),
            "--batch-size",
            &a.batch_size.to_string(),
        ])
        .output()
        .context("running the measurement child")?;
    if !out.status.success() {
        bail!(
            "measurement failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing child output {line:?}"))
}

const PEER: &str = r#"
import json, sys, time, resource
from tokenizers import Tokenizer
path, texts_file = sys.argv[1], sys.argv[2]
pairs = [l.rstrip("\n").split("\t") for l in open(texts_file, encoding="utf-8")]
anchors = [p[0] for p in pairs]; positives = [p[1] for p in pairs]
ta = Tokenizer.from_file(path); ta.no_padding(); ta.enable_truncation(64)
tb = Tokenizer.from_file(path); tb.no_padding(); tb.enable_truncation(250)
t0 = time.perf_counter(); c0 = time.process_time(); tokens = 0
for i in range(0, len(pairs), 256):
    for enc in ta.encode_batch(anchors[i:i+256]) + tb.encode_batch(positives[i:i+256]):
        tokens += len(enc.ids)
secs = time.perf_counter() - t0; cpu = time.process_time() - c0
print(json.dumps({"secs": secs, "cpu_s": cpu, "pairs_per_cpu_s": len(pairs) / cpu, "pairs": len(pairs), "tokens": tokens,
    "pairs_per_s": len(pairs) / secs, "tokens_per_s": tokens / secs,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"#;

fn python_peer(a: &Args, lines: &[String], tok: &Path, threads: usize) -> Result<Value> {
    let pairs = a.steps as usize * a.batch_size;
    let texts = a.work.join("peer_pairs.tsv");
    let mut body = String::new();
    for i in 0..pairs {
        let (x, y) = pair(lines, i);
        body.push_str(&x.replace(['\t', '\n'], " "));
        body.push('\t');
        body.push_str(&y.replace(['\t', '\n'], " "));
        body.push('\n');
    }
    std::fs::write(&texts, body)?;
    let script = a.work.join("peer.py");
    std::fs::write(&script, PEER)?;
    let out = Command::new("python3")
        .arg(&script)
        .arg(tok)
        .arg(&texts)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("RAYON_RS_NUM_CPUS", threads.to_string())
        .env(
            "TOKENIZERS_PARALLELISM",
            if threads > 1 { "true" } else { "false" },
        )
        .output()
        .context("running python3 (pip install tokenizers)")?;
    if !out.status.success() {
        bail!(
            "python peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(
        text.lines().last().unwrap_or_default(),
    )?)
}

/// The peer's texts (tabs and newlines flattened as in its TSV), for the in-process runs.
fn peer_texts(a: &Args, lines: &[String]) -> (Vec<String>, Vec<String>) {
    (0..a.steps as usize * a.batch_size)
        .map(|i| {
            let (x, y) = pair(lines, i);
            (x.replace(['\t', '\n'], " "), y.replace(['\t', '\n'], " "))
        })
        .unzip()
}

/// Tokenization alone, as the Python peer does it: batches of `batch_size` anchors (max 64)
/// and positives (max 250), each batch encoded in parallel on a pool of `threads`.
fn tokenize_only(
    tok: &Path,
    anchors: &[String],
    positives: &[String],
    batch: usize,
    threads: usize,
    fast: bool,
) -> Result<Value> {
    let mt = mixer::MixTokenizer::open_with(tok, 64, 250, fast)?;
    let a: Vec<&str> = anchors.iter().map(String::as_str).collect();
    let b: Vec<&str> = positives.iter().map(String::as_str).collect();
    let (tokens, secs, cpu) = crate::bench::with_threads(threads, || -> Result<_> {
        let cpu0 = cpu_seconds();
        let t0 = std::time::Instant::now();
        let mut tokens = 0usize;
        for (ca, cb) in a.chunks(batch).zip(b.chunks(batch)) {
            for ids in mt
                .encode_many(ca, true)?
                .iter()
                .chain(&mt.encode_many(cb, false)?)
            {
                tokens += ids.len();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        Ok((tokens, secs, cpu_seconds().zip(cpu0).map(|(x, y)| x - y)))
    })?;
    let pairs = a.len() as f64;
    Ok(json!({
        "engine": mt.engine(),
        "pairs_per_s": pairs / secs,
        "tokens_per_s": tokens as f64 / secs,
        "pairs_per_cpu_s": cpu.map(|c| pairs / c),
        "tokens": tokens,
    }))
}

fn mib(v: &Value) -> String {
    v["peak_rss_bytes"]
        .as_f64()
        .map_or("unknown".into(), |b| format!("{:.0} MiB", b / 1048576.0))
}

pub fn run(a: Args) -> Result<()> {
    if let Some(t) = a.child {
        return child(&a, t);
    }
    let lines = corpus_lines(&a.corpus)?;
    std::fs::create_dir_all(&a.work)?;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tok = crate::cmd::mix::tokenizer_path(&a.tokenizer)?;
    let tok = if tok.is_dir() {
        tok.join("tokenizer.json")
    } else {
        tok
    };
    let engine = mixer::MixTokenizer::open(&tok, 64, 250)?;
    println!(
        "prep bench mix: {} batches x {} pairs, max lengths 64/250, corpus {} ({} texts), {} cores, \
         tokenizer engine {}{}",
        a.steps,
        a.batch_size,
        a.corpus.display(),
        lines.len(),
        all,
        engine.engine(),
        engine
            .fallback_reason()
            .map_or(String::new(), |r| format!(" ({r})"))
    );
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }
    if !a.tokenize_only {
        end_to_end(&a, &lines, &tok, &thread_counts, all)?;
    }
    let (anchors, positives) = peer_texts(&a, &lines);
    println!();
    println!(
        "Tokenization only, {} pairs (anchors at 64, positives at 250, batches of {}):",
        anchors.len(),
        a.batch_size
    );
    println!("| tokenizer | threads | pairs/s | tokens/s | pairs/CPU-s | pairs/s vs Python | pairs/CPU-s vs Python |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &t in &thread_counts {
        let ours = tokenize_only(&tok, &anchors, &positives, a.batch_size, t, true)?;
        let hf = tokenize_only(&tok, &anchors, &positives, a.batch_size, t, false)?;
        let py = if a.no_python {
            None
        } else {
            Some(python_peer(&a, &lines, &tok, t)?)
        };
        if ours["tokens"] != hf["tokens"] {
            bail!(
                "token counts differ: {} (ours) vs {} (HF crate)",
                ours["tokens"],
                hf["tokens"]
            );
        }
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let vs = |v: &Value, k: &str| {
            py.as_ref()
                .map_or("-".into(), |p| format!("{:.2}x", f(v, k) / f(p, k)))
        };
        let rows = [
            (
                format!("{} (Rust)", ours["engine"].as_str().unwrap_or("?")),
                &ours,
            ),
            ("HF tokenizers crate (Rust)".to_owned(), &hf),
        ];
        for (name, v) in rows {
            println!(
                "| {name} | {t} | {:.0} | {:.0} | {:.0} | {} | {} |",
                f(v, "pairs_per_s"),
                f(v, "tokens_per_s"),
                f(v, "pairs_per_cpu_s"),
                vs(v, "pairs_per_s"),
                vs(v, "pairs_per_cpu_s")
            );
        }
        if let Some(p) = &py {
            println!(
                "| HF tokenizers {} (Python) | {t} | {:.0} | {:.0} | {:.0} | 1.00x | 1.00x |",
                python_version(),
                f(p, "pairs_per_s"),
                f(p, "tokens_per_s"),
                f(p, "pairs_per_cpu_s"),
            );
        }
    }
    Ok(())
}

fn python_version() -> String {
    Command::new("python3")
        .args(["-c", "import tokenizers; print(tokenizers.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn end_to_end(
    a: &Args,
    lines: &[String],
    tok: &Path,
    thread_counts: &[usize],
    all: usize,
) -> Result<()> {
    let pairs = a.work.join("pairs");
    let mut datasets = vec![("bench_corpus", a.rows)];
    if a.big_rows > 0 {
        datasets.push(("bench_big", a.big_rows));
    }
    for (id, rows) in &datasets {
        ensure_dataset(&pairs, id, lines, *rows)?;
        std::fs::write(
            a.work.join(format!("{id}.json")),
            format!(r#"[{{"name":"{id}","weight":1}}]"#),
        )?;
    }
    println!("| run | threads | pairs/s | tokens/s | pairs/CPU-s | peak RSS | pairs/s vs HF tokenizers (Python) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &t in thread_counts {
        let ours = measure(a, "bench_corpus", t)?;
        let peer = if a.no_python {
            None
        } else {
            Some(python_peer(a, lines, tok, t)?)
        };
        let ratio = peer.as_ref().map_or("-".into(), |p| {
            format!(
                "{:.2}x ({:.0} pairs/s)",
                ours["pairs_per_s"].as_f64().unwrap_or(0.0)
                    / p["pairs_per_s"].as_f64().unwrap_or(1.0),
                p["pairs_per_s"].as_f64().unwrap_or(0.0)
            )
        });
        println!(
            "| prep mix (end to end), {} rows | {t} | {:.0} | {:.0} | {:.0} | {} | {ratio} |",
            a.rows,
            ours["pairs_per_s"].as_f64().unwrap_or(0.0),
            ours["tokens_per_s"].as_f64().unwrap_or(0.0),
            ours["pairs_per_cpu_s"].as_f64().unwrap_or(0.0),
            mib(&ours)
        );
        if let Some(p) = peer {
            println!(
                "| HF tokenizers (Python), tokenize only | {t} | {:.0} | {:.0} | {:.0} | {} | 1.00x |",
                p["pairs_per_s"].as_f64().unwrap_or(0.0),
                p["tokens_per_s"].as_f64().unwrap_or(0.0),
                p["pairs_per_cpu_s"].as_f64().unwrap_or(0.0),
                mib(&p)
            );
        }
    }
    if a.big_rows > 0 {
        let big = measure(a, "bench_big", all)?;
        println!(
            "| prep mix (end to end), {} rows | {all} | {:.0} | {:.0} | {:.0} | {} | - |",
            a.big_rows,
            big["pairs_per_s"].as_f64().unwrap_or(0.0),
            big["tokens_per_s"].as_f64().unwrap_or(0.0),
            big["pairs_per_cpu_s"].as_f64().unwrap_or(0.0),
            mib(&big)
        );
    }
    Ok(())
}
