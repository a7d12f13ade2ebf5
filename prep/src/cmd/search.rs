//! `prep search`: the corpus texts closest to a query, by dot product of embeddings.
//!
//! A corpus is embedded once: either pass the Parquet file `prep embed` wrote as `--corpus`, or
//! pass `--embeddings FILE` with a text corpus: the first search writes FILE, later ones reuse it
//! while the model's and the corpus's sha256 (kept in FILE's metadata) still match.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::retrieval::top_k;
use encoder::SentenceEncoder;
use schemas::embeddings::{
    is_embedding_parquet, read_parquet, read_texts, EmbeddingFormat, EmbeddingWriter, Embeddings,
};

use super::embed::{embed_into, embedding_meta, load_encoder, model_sha256};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder; queries are embedded with it (and the corpus, when not already embedded).
    #[arg(long)]
    pub model: String,
    /// Corpus: a text file (.txt, .jsonl, .parquet with --field) or an embedding Parquet file
    /// written by `prep embed`.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Query text (repeat for several).
    #[arg(long, required = true)]
    pub query: Vec<String>,
    /// Results per query.
    #[arg(short = 'k', long, default_value_t = 10)]
    pub k: usize,
    /// Reusable embedding file for a text corpus: read when it matches, else written.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Embedding cache folder shared with `prep mine --cache` (vectors keyed by the model's
    /// weights sha256 and each text's sha256): corpus texts found there are not encoded again,
    /// the others are added. Scores are then cosines (the cache holds L2-normalised vectors).
    #[arg(long, conflicts_with = "embeddings")]
    pub cache: Option<PathBuf>,
    /// Field (jsonl) or column (parquet) of a text corpus.
    #[arg(long, default_value = "text")]
    pub field: String,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Print results as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
}

/// The corpus as searched: each text and its vector (row-major, the model's dim).
struct Corpus {
    texts: Vec<String>,
    vectors: Vec<f32>,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(super::embed::num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

fn run_inner(args: &Args) -> Result<()> {
    let encoder = load_encoder(&args.model, None, &args.compute)?;
    let model_sha = model_sha256(encoder.dir())?;
    let corpus = if is_embedding_parquet(&args.corpus) {
        let f = read_parquet(&args.corpus)?;
        check_model(&f, &model_sha, &args.corpus)?;
        let rows = f.rows();
        if f.dim != encoder.dim() && rows > 0 {
            bail!(
                "{}: vectors of dim {}, the model makes {}",
                args.corpus.display(),
                f.dim,
                encoder.dim()
            );
        }
        corpus_of(f)
    } else {
        match cached(args, &model_sha, encoder.precision().as_str())? {
            Some(c) => c,
            None => embed_corpus(args, &encoder)?,
        }
    };
    let dim = encoder.dim();
    if corpus.vectors.len() != corpus.texts.len() * dim {
        bail!(
            "corpus vectors have {} floats for {} texts of dim {dim}",
            corpus.vectors.len(),
            corpus.texts.len()
        );
    }
    let queries: Vec<&str> = args.query.iter().map(|s| s.as_str()).collect();
    let mut qvecs = encoder.encode(&queries, args.batch_size)?;
    if args.cache.is_some() {
        // Cosines against the cache's unit vectors.
        for v in qvecs.iter_mut() {
            let mut unit = mine::Embeddings::new(dim);
            unit.push_normalized(v);
            *v = unit.data;
        }
    }
    for (q, qv) in queries.iter().zip(&qvecs) {
        print_hits(
            q,
            &top_k(qv, &corpus.vectors, dim, args.k),
            &corpus,
            args.json,
        );
    }
    Ok(())
}

/// The corpus's unit vectors from the embedding cache under `dir`, encoding (and adding) only
/// the texts it lacks.
fn embed_through_cache(
    args: &Args,
    encoder: &SentenceEncoder,
    dir: &Path,
    texts: &[String],
) -> Result<Vec<f32>> {
    let options = mine::EmbedOptions {
        batch_size: args.batch_size,
    };
    let embedder = mine::Embedder::new(encoder, options)
        .with_cache(dir, &model_sha256(encoder.dir())?)
        .with_context(|| format!("opening the embedding cache {}", dir.display()))?;
    let (vectors, counts) = embedder.embed_counted(&texts, &Bar::new())?;
    eprintln!(
        "embedding cache {}: {} corpus texts found, {} encoded and added",
        dir.display(),
        counts.cached,
        counts.encoded
    );
    Ok(vectors.data)
}

/// Texts (`#i` for a file without a `text` column) beside their vectors.
fn corpus_of(f: Embeddings) -> Corpus {
    let rows = f.rows();
    Corpus {
        texts: f
            .texts
            .unwrap_or_else(|| (0..rows).map(|i| format!("#{i}")).collect()),
        vectors: f.vectors,
    }
}

/// The `--embeddings` file, when it was made by this model, at this precision, from this
/// version of the corpus.
fn cached(args: &Args, model_sha: &str, precision: &str) -> Result<Option<Corpus>> {
    let Some(path) = args.embeddings.as_deref().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let f = read_parquet(path)?;
    check_model(&f, model_sha, path)?;
    let made_at = f.meta.as_ref().map_or("f32", |m| m.precision.as_str());
    if made_at != precision {
        eprintln!(
            "{} holds {made_at} vectors, this search encodes at {precision}: embedding again",
            path.display()
        );
        return Ok(None);
    }
    let corpus_sha = schemas::sha256_file(&args.corpus)?;
    let input_sha = f.meta.as_ref().and_then(|m| m.input_sha256.as_deref());
    if input_sha == Some(corpus_sha.as_str()) {
        eprintln!("using embeddings from {}", path.display());
        Ok(Some(corpus_of(f)))
    } else {
        eprintln!(
            "{} was made from another version of {}: embedding again",
            path.display(),
            args.corpus.display()
        );
        Ok(None)
    }
}

/// Embeds a text corpus, writing `--embeddings` when given.
fn embed_corpus(args: &Args, encoder: &SentenceEncoder) -> Result<Corpus> {
    let texts = read_texts(&args.corpus, &args.field)?;
    let started = Instant::now();
    let vectors = match &args.embeddings {
        Some(p) => {
            let meta = embedding_meta(encoder, Some(&args.corpus))?;
            let format = EmbeddingFormat::Parquet;
            let mut sink = EmbeddingWriter::create(p, format, encoder.dim(), texts.len(), &meta)?;
            embed_into(encoder, &texts, args.batch_size, &Bar::new(), &mut sink)?;
            sink.finish()?;
            read_parquet(p)?.vectors
        }
        None => match &args.cache {
            Some(dir) => embed_through_cache(args, encoder, dir, &texts)?,
            None => {
                let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                let v = encoder.encode_with_progress(&refs, args.batch_size, &Bar::new())?;
                v.concat()
            }
        },
    };
    eprintln!(
        "embedded {} corpus texts in {:.1}s{}",
        texts.len(),
        started.elapsed().as_secs_f64(),
        if args.embeddings.is_none() && args.cache.is_none() {
            " (pass --embeddings FILE to keep them for the next search)"
        } else {
            ""
        }
    );
    Ok(Corpus { texts, vectors })
}

fn print_hits(query: &str, hits: &[(usize, f32)], corpus: &Corpus, json: bool) {
    let texts = &corpus.texts;
    if json {
        let results: Vec<serde_json::Value> = hits
            .iter()
            .map(|(i, s)| serde_json::json!({"index": i, "score": s, "text": texts[*i]}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"query": query, "results": results})
        );
        return;
    }
    println!("query: {query}");
    for (rank, (i, s)) in hits.iter().enumerate() {
        println!(
            "{:>3}. {:.4}  [{}] {}",
            rank + 1,
            s,
            i,
            preview(&texts[*i], 160)
        );
    }
}

/// Refuses a file made with other weights (a file without a recorded model is trusted).
fn check_model(file: &Embeddings, model_sha: &str, path: &Path) -> Result<()> {
    match file.meta.as_ref().map(|m| m.model_sha256.as_str()) {
        Some(s) if s != model_sha => bail!(
            "{} was embedded with another model (weights sha256 {}…); embed it again with this one",
            path.display(),
            &s[..12.min(s.len())]
        ),
        _ => Ok(()),
    }
}

/// The text on one line, cut at `max` characters.
fn preview(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}
