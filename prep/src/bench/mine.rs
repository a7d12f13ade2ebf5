//! `prep bench mine`: hard-negative mining end to end (embed every distinct text, exact search,
//! selection) on pairs generated from the bench corpus, in a child process of its own (so its
//! peak RSS is its own), against sentence-transformers' `mine_hard_negatives` on the same pairs,
//! same model and options, in the same run; and how often both chose the same negatives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mine::knn::Hit;
use mine::negatives::{choose, NegativeOptions};
use mine::{EmbedOptions, Embedder, Problem, SearchOptions, TextStore, VectorStore, Vectors};
use schemas::{Arity, NoProgress, PairRecord, PairWriter, PairWriterOptions};
use serde_json::{json, Value};

use super::{cpu_seconds, peak_rss_bytes, with_threads};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: the all-MiniLM-L6-v2 test model from scripts/fetch-test-model.sh).
    #[arg(long)]
    pub model: Option<String>,
    /// One text per line (default: shared/bench/corpus.txt).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Pairs generated (each positive distinct: the corpus has this many candidates).
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 3)]
    pub num_negatives: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation in tokens, for both (default: the model's, 256 for all-MiniLM-L6-v2).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Also search the same vectors with the HNSW index (k 10) and report its time and recall@10
    /// against the exact search.
    #[arg(long)]
    pub hnsw: bool,
    /// With --hnsw: one graph per this many candidates, built in parallel (as `prep mine
    /// --hnsw-shard-size`; 0: one graph).
    #[arg(long, default_value_t = 0)]
    pub hnsw_shard_size: usize,
    /// Instead: time only the exact search (top 10) of --synthetic-queries seeded random unit
    /// vectors (384-dim, as all-MiniLM-L6-v2's) against this many, with peak RSS; no model, no
    /// peer. For corpus sizes whose embedding does not fit in a run. With --hnsw, the HNSW
    /// index on the same vectors too (uniform random vectors have no clusters: the hardest
    /// case for a graph's recall, a fair one for its build rate).
    #[arg(long)]
    pub synthetic_corpus: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    pub synthetic_queries: usize,
    /// Our runs' memory budget in MiB, as `prep mine --max-memory`: the rows are read again
    /// rather than kept; texts past a quarter of it and vectors past the rest of the first half
    /// spill to files in --work and are read back as needed; the search holds as many queries as
    /// fit in the other half.
    #[arg(long, default_value_t = 4096)]
    pub max_memory: u64,
    /// Python with sentence-transformers, for the peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Skip the sentence-transformers peer.
    #[arg(long)]
    pub no_python: bool,
    /// Scratch folder (pairs, the peer's output).
    #[arg(long, default_value = "bench-mine")]
    pub work: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Internal: run our measurement in this process.
    #[arg(long, hide = true)]
    pub child: bool,
    /// Our encoder's device and number format (`--precision bf16|int8`: the CPU's low-precision
    /// kernels; the peer stays f32, and the agreement line shows what that changes).
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
}

/// Pair `i`: an anchor line and a positive of two lines, so every positive is distinct for up to
/// `lines²` rows, and anchors are distinct too.
fn pair(lines: &[String], i: usize) -> PairRecord {
    let n = lines.len();
    let positive = format!("{} {}", lines[i % n], lines[(i / n) % n]);
    let anchor = format!("{} {}", lines[(i * 7 + 3) % n], lines[(i / n + 11) % n]);
    PairRecord::pair(anchor, positive)
}

fn model_dir(a: &Args) -> Result<PathBuf> {
    match &a.model {
        Some(m) => crate::model::resolve(m),
        None => Ok(super::default_test_model()),
    }
}

pub fn run(a: Args) -> Result<()> {
    let threads = a.threads.unwrap_or_else(crate::cmd::embed::num_cpus);
    if let Some(n) = a.synthetic_corpus {
        return with_threads(threads, || synthetic_search(&a, n, threads));
    }
    if a.child {
        return with_threads(threads, || child(&a));
    }
    let corpus = a.corpus.clone().unwrap_or_else(super::default_corpus);
    let text = std::fs::read_to_string(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if lines.len() * lines.len() < a.rows {
        bail!(
            "{}: {} lines make at most {} distinct pairs",
            corpus.display(),
            lines.len(),
            lines.len().pow(2)
        );
    }
    std::fs::create_dir_all(&a.work)?;
    let pairs = a.work.join("pairs");
    let _ = std::fs::remove_dir_all(&pairs);
    let mut w = PairWriter::new(&pairs, Arity::Pair, PairWriterOptions::default());
    for i in 0..a.rows {
        w.push(&pair(&lines, i))?;
    }
    w.finish()?;
    let model = model_dir(&a)?;
    println!(
        "mine: {} pairs from {} ({} lines), model {}, num_negatives {}, top, {threads} threads",
        a.rows,
        corpus.display(),
        lines.len(),
        model.display(),
        a.num_negatives
    );
    let ours = measure_child(&a, threads)?;
    print_row(&format!("prep mine ({})", a.compute.precision), &ours);
    print_hnsw(&ours["hnsw"]);
    if a.no_python {
        return Ok(());
    }
    let peer = python_peer(&a, &model, threads)?;
    print_row(
        &format!(
            "sentence-transformers {}",
            peer["version"].as_str().unwrap_or("?")
        ),
        &peer,
    );
    let agree = agreement(&a.work.join("ours.json"), &a.work.join("peer.json"))?;
    println!(
        "end-to-end speed-up {:.2}x; identical negative sets for {:.2}% of {} anchors",
        peer["secs"].as_f64().unwrap_or(0.0) / ours["secs"].as_f64().unwrap_or(f64::NAN),
        100.0 * agree.0 as f64 / agree.1.max(1) as f64,
        agree.1
    );
    Ok(())
}

fn print_row(name: &str, v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{name:<28} {:>8.1} s total  {:>8.1} texts/s embedded ({:.1} s)  {:>9.1} queries/s searched ({:.2} s)  peak RSS {:.0} MiB{}",
        f("secs"),
        f("texts_per_s"),
        f("embed_secs"),
        f("queries_per_s"),
        f("search_secs"),
        f("peak_rss_bytes") / (1024.0 * 1024.0),
        if v["spilled"] == true { " (vectors spilled to disk)" } else { "" }
    );
}

fn measure_child(a: &Args, threads: usize) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "bench",
        "mine",
        "--child",
        "--threads",
        &threads.to_string(),
    ])
    .arg("--work")
    .arg(&a.work)
    .args([
        "--num-negatives",
        &a.num_negatives.to_string(),
        "--batch-size",
        &a.batch_size.to_string(),
    ]);
    if let Some(m) = &a.model {
        cmd.args(["--model", m]);
    }
    if let Some(n) = a.max_seq_length {
        cmd.args(["--max-seq-length", &n.to_string()]);
    }
    if a.hnsw {
        cmd.args([
            "--hnsw",
            "--hnsw-shard-size",
            &a.hnsw_shard_size.to_string(),
        ]);
    }
    cmd.args(["--max-memory", &a.max_memory.to_string()]);
    cmd.args(["--device", &a.compute.device.to_string()])
        .args(["--precision", &a.compute.precision.to_string()]);
    let out = cmd.output().context("running the measurement child")?;
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

/// Our measurement: embedding timed apart from search, selection and writing the dataset (as
/// `prep mine` does); writes the chosen negatives' hashes.
fn child(a: &Args) -> Result<()> {
    let records = mine::io::open_pairs(&a.work.join("pairs"))?;
    let encoder = crate::cmd::embed::load_encoder(
        &model_dir(a)?.display().to_string(),
        a.max_seq_length,
        &a.compute,
    )?;
    let mut embedder = Embedder::new(
        &encoder,
        EmbedOptions {
            batch_size: a.batch_size,
        },
    );
    embedder.spill_dir = Some(a.work.clone());
    let search = search_options(a)?;
    let opts = NegativeOptions {
        num_negatives: a.num_negatives,
        // As the peer's call.
        output_format: mine::OutputFormat::Triplet,
        ..Default::default()
    };
    let (t0, c0) = (Instant::now(), cpu_seconds());
    // As `mine::curate` does: texts held up to a quarter of the budget, vectors in the rest of
    // the first half.
    let store = TextStore::with_budget(search.memory / 4, Some(&a.work));
    let problem = Problem::build(&records, None, store)?;
    let room = (search.memory / 2).saturating_sub(problem.texts.held_bytes());
    let (emb, _) = embedder.embed_stored(&problem.texts, room, &NoProgress)?;
    let embed_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (queries, corpus_len, texts) = (
        problem.queries.clone(),
        problem.corpus_len,
        problem.texts.len(),
    );
    let (chosen, _, _) = choose(&problem, &emb, &opts, search, &NoProgress)?;
    // What `prep mine` does next: the rows planned and written as a dataset.
    let curated = mine::negatives::plan(problem, &chosen, &opts);
    mine::io::write_dataset(
        &a.work.join("mined"),
        &curated,
        &records,
        &mine::io::Provenance::default(),
    )?;
    let search_secs = t1.elapsed().as_secs_f64();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(c0).map(|(b, a)| b - a);
    let hnsw = match a.hnsw {
        true => hnsw_against_exact(&emb, &queries, corpus_len, search, a.hnsw_shard_size),
        false => Value::Null,
    };
    let mut negatives: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (q, c) in chosen.iter().enumerate() {
        let anchor = sha(&curated.text(queries[q])?);
        negatives.insert(
            anchor,
            c.iter()
                .map(|h| Ok(sha(&curated.text(h.index)?)))
                .collect::<Result<_>>()?,
        );
    }
    std::fs::write(
        a.work.join("ours.json"),
        serde_json::to_vec(&json!({ "negatives": negatives }))?,
    )?;
    println!(
        "{}",
        json!({
            "secs": secs, "cpu_s": cpu,
            "texts": texts, "queries": queries.len(),
            "embed_secs": embed_secs, "texts_per_s": texts as f64 / embed_secs,
            "search_secs": search_secs, "queries_per_s": queries.len() as f64 / search_secs,
            "peak_rss_bytes": peak_rss_bytes(),
            "spilled": emb.is_spilled(),
            "max_seq_length": encoder.max_seq_length(),
            "hnsw": hnsw,
        })
    );
    Ok(())
}

/// The 10 nearest candidates of every query by the HNSW index (`prep mine`'s defaults) and by
/// the exact search, on the same vectors: seconds of each (the index's include building it) and
/// the index's recall@10 (share of the exact top 10 it found).
fn hnsw_against_exact(
    emb: &dyn Vectors,
    queries: &[u32],
    corpus_len: usize,
    search: SearchOptions,
    shard_size: usize,
) -> Value {
    let t = Instant::now();
    let exact = match exact_top_10(emb, queries, corpus_len, search) {
        Ok(hits) => hits,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let secs = t.elapsed().as_secs_f64();
    hnsw_against(emb, queries, corpus_len, (&exact, secs), shard_size)
}

/// The exact search's 10 best of `emb[..corpus_len]` for each of `queries`.
fn exact_top_10(
    emb: &dyn Vectors,
    queries: &[u32],
    corpus_len: usize,
    search: SearchOptions,
) -> mine::Result<Vec<Vec<Hit>>> {
    mine::knn::top_k(emb, queries, 0..corpus_len, 10, search, &NoProgress)
}

/// `--max-memory` as search options.
fn search_options(a: &Args) -> Result<SearchOptions> {
    Ok(SearchOptions {
        memory: crate::cmd::mine::memory_bytes(a.max_memory)?,
        ..SearchOptions::default()
    })
}

/// [`hnsw_against_exact`] given the exact search's hits and seconds.
fn hnsw_against(
    emb: &dyn Vectors,
    queries: &[u32],
    corpus_len: usize,
    (exact, exact_secs): (&[Vec<Hit>], f64),
    shard_size: usize,
) -> Value {
    use mine::knn::{top_k, Index};
    let k = 10;
    let corpus = 0..corpus_len;
    let index = Index::Hnsw {
        ef_construction: 200,
        ef_search: 128,
        shard_size,
    };
    let options = SearchOptions {
        index,
        ..SearchOptions::default()
    };
    let t = Instant::now();
    let phases = PhaseClock::default();
    let approx = match top_k(emb, queries, corpus, k, options, &phases) {
        Ok(hits) => hits,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let hnsw_secs = t.elapsed().as_secs_f64();
    // The build ends where the search phase begins.
    let build_secs = phases
        .second_begin()
        .map_or(f64::NAN, |b| (b - t).as_secs_f64());
    let found: usize = exact
        .iter()
        .zip(&approx)
        .map(|(e, a)| {
            e.iter()
                .filter(|h| a.iter().any(|x| x.index == h.index))
                .count()
        })
        .sum();
    // Rows tied with the exact k-th score are equally right (the exact search keeps the lowest
    // indices among ties, the graph whichever it meets): counted by score, a hit is found if it
    // scores at least the exact k-th (less float rounding between the two products).
    let found_by_score: usize = exact
        .iter()
        .zip(&approx)
        .map(|(e, a)| match e.last() {
            Some(kth) => a
                .iter()
                .filter(|h| h.score >= kth.score - 1e-6)
                .count()
                .min(e.len()),
            None => 0,
        })
        .sum();
    let wanted: usize = exact.iter().map(Vec::len).sum();
    json!({
        "k": k, "queries": queries.len(), "corpus": corpus_len,
        "graphs": if shard_size == 0 { 1 } else { corpus_len.div_ceil(shard_size) },
        "exact_secs": exact_secs, "hnsw_secs": hnsw_secs, "build_secs": build_secs,
        "recall_at_10": found as f64 / wanted.max(1) as f64,
        "recall_at_10_by_score": found_by_score as f64 / wanted.max(1) as f64,
    })
}

/// A [`schemas::Progress`] that notes when each phase begins (to time a library call's phases).
#[derive(Default)]
struct PhaseClock(std::sync::Mutex<Vec<Instant>>);

impl PhaseClock {
    fn second_begin(&self) -> Option<Instant> {
        self.0.lock().ok()?.get(1).copied()
    }
}

impl schemas::Progress for PhaseClock {
    fn begin(&self, _: &str, _: Option<u64>, _: schemas::Unit) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Instant::now());
        }
    }
    fn advance(&self, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish(&self) {}
}

/// The line for [`hnsw_against_exact`]'s figures (nothing for null).
fn print_hnsw(h: &Value) {
    if h.is_null() {
        return;
    }
    if let Some(e) = h["error"].as_str() {
        println!("  HNSW: {e}");
        return;
    }
    let secs = |k: &str| h[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  HNSW ({} graph(s), ef_construction 200, ef_search 128) vs exact, top {} of {} candidates for {} queries: \
         {:.2} s (build {:.2} s, one thread per graph, {:.0} points/s; search {:.2} s) vs {:.2} s exact; recall@10 {:.4} \
         (by score, ties with the exact 10th counted: {:.4})",
        h["graphs"], h["k"], h["corpus"], h["queries"],
        secs("hnsw_secs"),
        secs("build_secs"),
        h["corpus"].as_f64().unwrap_or(f64::NAN) / secs("build_secs"),
        secs("hnsw_secs") - secs("build_secs"),
        secs("exact_secs"),
        secs("recall_at_10"),
        secs("recall_at_10_by_score")
    );
}

/// The exact search alone at a corpus size no run here can embed: seeded random unit vectors
/// (uniform in [-1, 1) per coordinate, then normalised), the first `--synthetic-queries` rows as
/// queries, held as `prep mine --max-memory` would (spilled to --work past half of it).
fn synthetic_search(a: &Args, corpus: usize, threads: usize) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let dim = 384;
    let search = search_options(a)?;
    std::fs::create_dir_all(&a.work)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut emb = VectorStore::new(corpus, dim, search.memory / 2, Some(&a.work))?;
    let mut v = vec![0f32; dim];
    for i in 0..corpus {
        v.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0));
        emb.set_normalized(i, &v)?;
    }
    let rows: Vec<u32> = (0..a.synthetic_queries.min(corpus) as u32).collect();
    let (t, c0) = (Instant::now(), cpu_seconds());
    let hits = exact_top_10(&emb, &rows, corpus, search)?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(c0).map(|(b, a)| b - a);
    // Each query is its own nearest neighbour: a check that the search ran over everything.
    let selves = hits
        .iter()
        .zip(&rows)
        .filter(|(h, &r)| h[0].index == r)
        .count();
    println!(
        "exact top 10 of {corpus} synthetic {dim}-dim vectors ({}, --max-memory {} MiB: {} queries \
         at a time) for {} queries, {threads} threads: {secs:.2} s ({:.1} queries/s, {:.2} CPU-s), \
         peak RSS {:.0} MiB; {selves} queries found themselves first",
        if emb.is_spilled() { "spilled to disk" } else { "in memory" },
        a.max_memory,
        search.queries_at_once(dim, 10).min(rows.len()),
        rows.len(),
        rows.len() as f64 / secs,
        cpu.unwrap_or(f64::NAN),
        peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    if a.hnsw {
        print_hnsw(&hnsw_against(
            &emb,
            &rows,
            corpus,
            (&hits, secs),
            a.hnsw_shard_size,
        ));
    }
    Ok(())
}

fn sha(text: &str) -> String {
    mine::cache::key(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PEER: &str = r#"
import glob, hashlib, json, os, resource, sys, time
import datasets, pyarrow.parquet as pq, sentence_transformers, torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
model_dir, pairs, out, num_negatives, batch_size, max_seq_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
anchors, positives = [], []
for p in sorted(glob.glob(os.path.join(pairs, "part-*.parquet"))):
    t = pq.read_table(p, columns=["anchor", "positive"])
    anchors += t.column("anchor").to_pylist(); positives += t.column("positive").to_pylist()
ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
model = SentenceTransformer(model_dir, device="cpu")
if max_seq_length > 0: model.max_seq_length = max_seq_length
sha = lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest()
texts = list(dict.fromkeys(positives + anchors))
t0 = time.perf_counter(); c0 = time.process_time()
mined = mine_hard_negatives(ds, model, num_negatives=num_negatives, sampling_strategy="top",
    output_format="triplet", batch_size=batch_size, verbose=False)
secs = time.perf_counter() - t0; cpu = time.process_time() - c0
neg = {}
for a, n in zip(mined["anchor"], mined["negative"]):
    l = neg.setdefault(sha(a), [])
    if sha(n) not in l: l.append(sha(n))
json.dump({"negatives": neg}, open(out, "w"))
print(json.dumps({"secs": secs, "cpu_s": cpu, "texts": len(texts), "texts_per_s": len(texts) / secs,
    "queries": len(set(anchors)), "queries_per_s": len(set(anchors)) / secs,
    "version": sentence_transformers.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
    "max_seq_length": model.max_seq_length,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"#;

/// sentence-transformers end to end (its embed and search are not timed apart: both rates are
/// over the whole call).
fn python_peer(a: &Args, model: &Path, threads: usize) -> Result<Value> {
    let script = a.work.join("peer.py");
    std::fs::write(&script, PEER)?;
    let out = Command::new(&a.python)
        .arg(&script)
        .arg(model)
        .arg(a.work.join("pairs"))
        .arg(a.work.join("peer.json"))
        .args([a.num_negatives.to_string(), a.batch_size.to_string()])
        // 0: the model's own.
        .arg(a.max_seq_length.unwrap_or(0).to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .with_context(|| {
            format!(
                "running {} (pip install sentence-transformers datasets pyarrow)",
                a.python
            )
        })?;
    if !out.status.success() {
        bail!(
            "python peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Value = serde_json::from_str(text.lines().last().unwrap_or_default())?;
    v["embed_secs"] = v["secs"].clone();
    v["search_secs"] = v["secs"].clone();
    Ok(v)
}

/// (anchors with identical negative sets, anchors in either output).
fn agreement(ours: &Path, peer: &Path) -> Result<(usize, usize)> {
    let read = |p: &Path| -> Result<BTreeMap<String, BTreeSet<String>>> {
        let v: Value = serde_json::from_slice(&std::fs::read(p)?)?;
        let mut m = BTreeMap::new();
        for (k, list) in v["negatives"].as_object().context("negatives")? {
            let set: BTreeSet<String> = list
                .as_array()
                .context("list")?
                .iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            if !set.is_empty() {
                m.insert(k.clone(), set);
            }
        }
        Ok(m)
    };
    let (a, b) = (read(ours)?, read(peer)?);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let same = keys.iter().filter(|k| a.get(**k) == b.get(**k)).count();
    Ok((same, keys.len()))
}
