//! `prep mine`: model-based curation of a pairs dataset into a new dataset (the `mine` crate):
//! hard negatives (default), `--filter consistency` or `--filter dedup`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use mine::io::{open_pairs, write_dataset, CorpusFile, Provenance};
use mine::{
    DedupOn, EmbedOptions, Embedder, Mode, NegativeOptions, OutputFormat, Sampling, SearchOptions,
    TextSource,
};
use schemas::InputFile;

use crate::progress::Bar;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Filter {
    /// Keep a row only if its positive ranks in its anchor's top --top-k.
    Consistency,
    /// Drop rows whose --on text has cosine >= --threshold to an earlier kept row's.
    Dedup,
}

/// How nearest neighbours are found.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexKind {
    /// Every candidate scored (blocked matrix products): the true neighbours
    Exact,
    /// An approximate HNSW graph (for corpora of millions; --ef-construction, --ef-search)
    Hnsw,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    Top,
    Random,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[value(name = "n-tuple")]
    NTuple,
    Triplet,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum On {
    Anchor,
    Positive,
}

/// Hard negatives follow sentence-transformers' `mine_hard_negatives` (same option names):
/// each anchor's `range_max + max_positives + 1` nearest candidates, minus its positives and its
/// own text, minus those failing a margin/score bound; of the rest the first `range_max` are
/// kept, the first `range_min` skipped, and `num_negatives` taken (`top`, or a seeded `random`
/// draw). One (anchor, positive, negative) row per negative, input order kept.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or Hub id (sentence-transformers layout).
    #[arg(long)]
    pub model: String,
    /// The dataset to curate (a pairs folder, e.g. data/pairs/squad).
    #[arg(long)]
    pub pairs: PathBuf,
    /// The new dataset's folder (its name is the dataset id), replaced whole when complete.
    #[arg(long)]
    pub out: PathBuf,
    /// A filter instead of mining negatives.
    #[arg(long, value_enum)]
    pub filter: Option<Filter>,
    /// Extra candidates besides the dataset's positives: a pairs dataset (its positives and
    /// negatives) or a .txt file (one text per line).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Negatives: skip the first N surviving candidates.
    #[arg(long, default_value_t = 0)]
    pub range_min: usize,
    /// Negatives: consider only the first N surviving candidates (default: range_min +
    /// num_negatives [x10 with a margin or --max-score] + the most positives of one anchor).
    #[arg(long)]
    pub range_max: Option<usize>,
    /// Negatives: drop candidates with score + M > the anchor's lowest positive score.
    #[arg(long, visible_alias = "margin")]
    pub absolute_margin: Option<f32>,
    /// Negatives: drop candidates above positive - |positive| x R.
    #[arg(long)]
    pub relative_margin: Option<f32>,
    /// Negatives: drop candidates scoring above this.
    #[arg(long)]
    pub max_score: Option<f32>,
    /// Negatives: drop candidates scoring below this.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Negatives per anchor: columns `negative`, `negative_2`, ... (n-tuple) or one output row
    /// each (triplet).
    #[arg(long, default_value_t = 1)]
    pub num_negatives: usize,
    /// Negatives: one row per input row with --num-negatives negative columns (rows whose anchor
    /// got fewer are dropped), or one (anchor, positive, negative) row per negative.
    #[arg(long, value_enum, default_value = "n-tuple")]
    pub output_format: Format,
    /// Negatives: the best ones, or a seeded random draw from the window.
    #[arg(long, value_enum, default_value = "top", visible_alias = "sampling")]
    pub sampling_strategy: Strategy,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Consistency: the rank a positive must reach.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Dedup: cosine at or above which a row is a near-duplicate.
    #[arg(long, default_value_t = 0.95)]
    pub threshold: f32,
    /// Dedup: which text to compare.
    #[arg(long, value_enum, default_value = "anchor")]
    pub on: On,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation length in tokens (default: the model's max_seq_length).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Search: queries per block (memory per thread: query-block x corpus-block scores).
    #[arg(long, default_value_t = 256)]
    pub query_block: usize,
    /// Search: corpus rows per block.
    #[arg(long, default_value_t = 4096)]
    pub corpus_block: usize,
    /// Search: exact, or an approximate HNSW index (usearch; built on one thread, so results are
    /// reproducible; its candidates are re-scored exactly).
    #[arg(long, value_enum, default_value = "exact")]
    pub index: IndexKind,
    /// HNSW: candidates kept while building the graph (higher: better recall, slower build).
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// HNSW: candidates explored per query (at least the neighbours needed).
    #[arg(long, default_value_t = 128)]
    pub ef_search: usize,
    /// HNSW: one graph per this many corpus rows, built in parallel (each on one thread, so the
    /// output does not depend on the threads); every query searches every graph. 0: one graph.
    #[arg(long, default_value_t = 0)]
    pub hnsw_shard_size: usize,
    /// The most memory (MiB) the texts, the vectors and the search's state take. The rows are
    /// read again rather than kept; their distinct texts are held up to a quarter of it, the
    /// vectors up to what is left of the first half, the rest written to files in --spill-dir
    /// and read back as needed; the search holds as many queries at once as fit in the other
    /// half. The output does not depend on it. (The model, an HNSW graph and about 50 bytes of
    /// index per distinct text come on top.)
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_memory: u64,
    /// Where vectors past --max-memory go (an unnamed file, gone when the run ends; default:
    /// the folder of --out).
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// Embedding cache folder (vectors keyed by model sha256 and text sha256), read and extended.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
}

impl Args {
    fn index(&self) -> mine::knn::Index {
        match self.index {
            IndexKind::Exact => mine::knn::Index::Exact,
            IndexKind::Hnsw => mine::knn::Index::Hnsw {
                ef_construction: self.ef_construction,
                ef_search: self.ef_search,
                shard_size: self.hnsw_shard_size,
            },
        }
    }

    fn mode(&self) -> Mode {
        match self.filter {
            Some(Filter::Consistency) => Mode::Consistency { top_k: self.top_k },
            Some(Filter::Dedup) => Mode::Dedup {
                threshold: self.threshold,
                on: match self.on {
                    On::Anchor => DedupOn::Anchor,
                    On::Positive => DedupOn::Positive,
                },
            },
            None => Mode::Negatives(NegativeOptions {
                range_min: self.range_min,
                range_max: self.range_max,
                absolute_margin: self.absolute_margin,
                relative_margin: self.relative_margin,
                max_score: self.max_score,
                min_score: self.min_score,
                num_negatives: self.num_negatives,
                sampling: match self.sampling_strategy {
                    Strategy::Top => Sampling::Top,
                    Strategy::Random => Sampling::Random,
                },
                seed: self.seed,
                output_format: match self.output_format {
                    Format::NTuple => OutputFormat::NTuple,
                    Format::Triplet => OutputFormat::Triplet,
                },
            }),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(super::embed::num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

fn run_inner(args: &Args) -> Result<()> {
    let started = Instant::now();
    let mode = args.mode();
    let input = open_pairs(&args.pairs).context("reading --pairs")?;
    let corpus = match &args.corpus {
        Some(p) => Some(CorpusFile::open(p).context("reading --corpus")?),
        None => None,
    };
    let encoder = super::embed::load_encoder(&args.model, args.max_seq_length, &args.compute)?;
    let weights = encoder.dir().join("model.safetensors");
    let model_sha256 = super::embed::model_sha256(encoder.dir())?;
    let mut embedder = Embedder::new(
        &encoder,
        EmbedOptions {
            batch_size: args.batch_size,
        },
    );
    if let Some(dir) = &args.cache {
        embedder = embedder
            .with_cache(dir, &model_sha256)
            .with_context(|| format!("opening the embedding cache {}", dir.display()))?;
    }
    embedder.spill_dir = Some(spill_dir(args)?);
    let search = SearchOptions {
        query_block: args.query_block,
        corpus_block: args.corpus_block,
        index: args.index(),
        memory: memory_bytes(args.max_memory)?,
    };
    let bar = Bar::new();
    let texts = corpus.as_ref().map(|c| c as &dyn TextSource);
    let curated = mine::curate(&embedder, &input, texts, &mode, search, &bar)?;

    let mut inputs = input.inputs()?;
    if let Some(c) = &corpus {
        inputs.extend(c.inputs()?);
    }
    inputs.push(InputFile {
        path: weights.display().to_string(),
        bytes: std::fs::metadata(&weights)?.len(),
        sha256: model_sha256.clone(),
    });
    let prov = Provenance {
        inputs,
        options: options(args, &mode, &model_sha256, encoder.max_seq_length()),
    };
    let manifest = write_dataset(&args.out, &curated, &input, &prov)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let dropped: Vec<String> = manifest
        .skipped
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    eprintln!(
        "{}: {} rows from {} in {:.1}s{}",
        args.out.display(),
        manifest.rows,
        input.rows()?,
        started.elapsed().as_secs_f64(),
        if dropped.is_empty() {
            String::new()
        } else {
            format!("; dropped {}", dropped.join(", "))
        }
    );
    eprintln!(
        "  texts encoded: {}, read from the cache: {}",
        curated.embedded.encoded, curated.embedded.cached
    );
    let spilled: Vec<&str> = [
        (curated.embedded.texts_spilled, "texts"),
        (curated.embedded.spilled, "vectors"),
    ]
    .into_iter()
    .filter_map(|(s, what)| s.then_some(what))
    .collect();
    if !spilled.is_empty() {
        eprintln!(
            "  {}: past their share of --max-memory, spilled to files in {}",
            spilled.join(" and "),
            spill_dir(args)?.display()
        );
    }
    for (k, v) in &curated.counts {
        eprintln!("  {k}: {v}");
    }
    Ok(())
}

/// `--max-memory` (MiB) in bytes; `prep mine` and `prep bench mine` both read it so.
pub fn memory_bytes(mib: u64) -> Result<usize> {
    mib.checked_mul(1 << 20)
        .and_then(|b| usize::try_from(b).ok())
        .with_context(|| format!("--max-memory {mib} MiB is more bytes than this machine counts"))
}

/// --spill-dir, or the folder --out will be written in (created if missing).
fn spill_dir(args: &Args) -> Result<PathBuf> {
    let dir = match &args.spill_dir {
        Some(d) => d.clone(),
        None => match args.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Every option of the run, as the manifest records it.
fn options(
    args: &Args,
    mode: &Mode,
    model_sha256: &str,
    max_seq_length: usize,
) -> BTreeMap<String, serde_json::Value> {
    let mut o = BTreeMap::new();
    let mut put = |k: &str, v: serde_json::Value| {
        o.insert(k.to_owned(), v);
    };
    put("model", args.model.clone().into());
    put("model_sha256", model_sha256.into());
    put("pairs", args.pairs.display().to_string().into());
    put(
        "corpus",
        args.corpus.as_ref().map(|p| p.display().to_string()).into(),
    );
    put("mode", serde_json::to_value(mode).expect("serialisable"));
    put("batch_size", args.batch_size.into());
    put("max_seq_length", max_seq_length.into());
    put("query_block", args.query_block.into());
    put("corpus_block", args.corpus_block.into());
    put("max_memory_mib", args.max_memory.into());
    put(
        "index",
        serde_json::to_value(args.index()).expect("serialisable"),
    );
    // Where the vectors were computed (GPU and CPU vectors differ in float noise).
    put("device", args.compute.device.to_string().into());
    put("precision", args.compute.precision.to_string().into());
    o
}
