//! `prep search`: the corpus texts closest to a query, by dot product of embeddings.
//!
//! A corpus is embedded once: either pass the Parquet file `prep embed` wrote as `--corpus`, or
//! pass `--embeddings FILE` with a text corpus: the first search writes FILE, later ones reuse it
//! while the model's and the corpus's sha256 (kept in FILE's metadata) still match.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use encoder::retrieval::top_k;

use super::embed::{
    embed_into, is_embedding_file, load_encoder, model_sha256, read_embedding_file, read_texts,
    EmbeddingMeta, EmbeddingSink, OutFormat,
};
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
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(super::embed::num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

fn run_inner(args: &Args) -> Result<()> {
    let encoder = load_encoder(&args.model, None)?;
    let model_sha = model_sha256(encoder.dir())?;

    let (texts, vectors) = if is_embedding_file(&args.corpus) {
        let f = read_embedding_file(&args.corpus)?;
        check_model(&f.model_sha256, &model_sha, &args.corpus)?;
        if f.dim != encoder.dim() && !f.texts.is_empty() {
            bail!(
                "{}: vectors of dim {}, the model makes {}",
                args.corpus.display(),
                f.dim,
                encoder.dim()
            );
        }
        (f.texts, f.vectors)
    } else {
        let cached = match &args.embeddings {
            Some(p) if p.is_file() => {
                let f = read_embedding_file(p)?;
                check_model(&f.model_sha256, &model_sha, p)?;
                let corpus_sha = schemas::sha256_file(&args.corpus)?;
                if f.input_sha256.as_deref() == Some(corpus_sha.as_str()) {
                    eprintln!("using embeddings from {}", p.display());
                    Some((f.texts, f.vectors))
                } else {
                    eprintln!(
                        "{} was made from another version of {}: embedding again",
                        p.display(),
                        args.corpus.display()
                    );
                    None
                }
            }
            _ => None,
        };
        match cached {
            Some(c) => c,
            None => {
                let texts = read_texts(&args.corpus, &args.field)?;
                let started = Instant::now();
                let vectors = match &args.embeddings {
                    Some(p) => {
                        let meta = EmbeddingMeta::new(&encoder, Some(&args.corpus))?;
                        let mut sink = EmbeddingSink::create(
                            p,
                            OutFormat::Parquet,
                            encoder.dim(),
                            texts.len(),
                            &meta,
                        )?;
                        embed_into(&encoder, &texts, args.batch_size, &Bar::new(), &mut sink)?;
                        sink.finish()?;
                        read_embedding_file(p)?.vectors
                    }
                    None => {
                        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                        let v =
                            encoder.encode_with_progress(&refs, args.batch_size, &Bar::new())?;
                        v.concat()
                    }
                };
                eprintln!(
                    "embedded {} corpus texts in {:.1}s{}",
                    texts.len(),
                    started.elapsed().as_secs_f64(),
                    if args.embeddings.is_none() {
                        " (pass --embeddings FILE to keep them for the next search)"
                    } else {
                        ""
                    }
                );
                (texts, vectors)
            }
        }
    };
    let dim = encoder.dim();
    if vectors.len() != texts.len() * dim {
        bail!(
            "corpus vectors have {} floats for {} texts of dim {dim}",
            vectors.len(),
            texts.len()
        );
    }

    let queries: Vec<&str> = args.query.iter().map(|s| s.as_str()).collect();
    let qvecs = encoder.encode(&queries, args.batch_size)?;
    for (q, qv) in queries.iter().zip(&qvecs) {
        let hits = top_k(qv, &vectors, dim, args.k);
        if args.json {
            let results: Vec<serde_json::Value> = hits
                .iter()
                .map(|(i, s)| serde_json::json!({"index": i, "score": s, "text": texts[*i]}))
                .collect();
            println!("{}", serde_json::json!({"query": q, "results": results}));
        } else {
            println!("query: {q}");
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
    }
    Ok(())
}

fn check_model(file_sha: &Option<String>, model_sha: &str, path: &std::path::Path) -> Result<()> {
    match file_sha {
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
