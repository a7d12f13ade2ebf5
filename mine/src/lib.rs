//! Model-based curation of pairs datasets, between ingest and mix: hard negatives with
//! sentence-transformers' `mine_hard_negatives` semantics ([`negatives`]), the consistency filter
//! and semantic dedup ([`filter`]). Texts are embedded once ([`embed`]); nearest neighbours are
//! exact, by blocked matrix products in bounded memory ([`knn`]).
//!
//! [`curate`] runs one mode over rows in memory; [`io`] reads and writes the datasets.

pub mod cache;
pub mod embed;
pub mod error;
pub mod filter;
pub mod io;
pub mod knn;
pub mod negatives;
pub mod problem;

use std::collections::BTreeMap;
use std::sync::Mutex;

use encoder::SentenceEncoder;
use schemas::{Arity, PairRecord, Progress, Unit};
use serde::Serialize;

pub use cache::EmbeddingCache;
pub use embed::{EmbedOptions, Embeddings, TextTable};
pub use error::{MineError, Result};
pub use filter::DedupOn;
pub use knn::{Hit, SearchOptions};
pub use negatives::{NegativeOptions, OutputFormat, Sampling};
pub use problem::Problem;

/// The rows a mode keeps or makes, and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Curated {
    pub records: Vec<PairRecord>,
    pub arity: Arity,
    /// Input rows not written, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Everything else counted: texts, anchors, candidates, candidates skipped by reason.
    pub counts: BTreeMap<String, u64>,
    /// Vectors encoded and read from the cache (not part of the output: it varies by run).
    pub embedded: EmbedCounts,
}

/// What `prep mine` does to a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// Adds mined negatives (n-tuples: one column per negative; or triplets, one row per
    /// negative).
    Negatives(NegativeOptions),
    /// Keeps a row only if its positive ranks in its anchor's top `top_k`.
    Consistency { top_k: usize },
    /// Drops rows whose `on` text has cosine ≥ `threshold` to an earlier kept one.
    Dedup { threshold: f32, on: DedupOn },
}

/// Embeds texts with one model, through an optional on-disk [`cache::EmbeddingCache`].
pub struct Embedder<'a> {
    pub encoder: &'a SentenceEncoder,
    pub options: EmbedOptions,
    pub cache: Option<Mutex<EmbeddingCache>>,
}

/// Where a run's vectors came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmbedCounts {
    pub encoded: u64,
    pub cached: u64,
}

impl<'a> Embedder<'a> {
    pub fn new(encoder: &'a SentenceEncoder, options: EmbedOptions) -> Self {
        Embedder {
            encoder,
            options,
            cache: None,
        }
    }

    /// With the cache under `root` for this model (weights `model_sha256`).
    pub fn with_cache(mut self, root: &std::path::Path, model_sha256: &str) -> Result<Self> {
        let c = EmbeddingCache::open(
            root,
            model_sha256,
            self.encoder.max_seq_length(),
            self.encoder.precision(),
            self.encoder.dim(),
        )?;
        self.cache = Some(Mutex::new(c));
        Ok(self)
    }

    pub fn embed(&self, texts: &[String], progress: &dyn Progress) -> Result<Embeddings> {
        Ok(self.embed_counted(texts, progress)?.0)
    }

    /// L2-normalised vectors of `texts` in order: cached ones read, the others encoded (and
    /// cached, one segment per chunk, so a killed run keeps what it finished).
    pub fn embed_counted(
        &self,
        texts: &[String],
        progress: &dyn Progress,
    ) -> Result<(Embeddings, EmbedCounts)> {
        let mut out = Embeddings::zeros(texts.len(), self.encoder.dim());
        let mut cache = self.cache.as_ref().map(|c| c.lock().expect("cache lock"));
        let keys = cache.as_ref().map(|_| cache::keys(texts));
        let mut missing = Vec::new();
        match (&cache, &keys) {
            (Some(c), Some(keys)) => {
                for (i, v) in c.lookup(keys)?.into_iter().enumerate() {
                    match v {
                        Some(v) => out.set_normalized(i, &v),
                        None => missing.push(i),
                    }
                }
            }
            _ => missing.extend(0..texts.len()),
        }
        progress.begin("embedding", Some(missing.len() as u64), Unit::Items);
        for chunk in missing.chunks(embed::CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let vecs = embed::encode(self.encoder, &refs, self.options)?;
            for (&i, v) in chunk.iter().zip(&vecs) {
                out.set_normalized(i, v);
            }
            if let (Some(c), Some(keys)) = (cache.as_mut(), &keys) {
                let chunk_keys: Vec<cache::Key> = chunk.iter().map(|&i| keys[i]).collect();
                c.store(&chunk_keys, &vecs)?;
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        let counts = EmbedCounts {
            encoded: missing.len() as u64,
            cached: (texts.len() - missing.len()) as u64,
        };
        Ok((out, counts))
    }
}

/// Runs `mode` over `pairs` (`corpus`: extra candidates for negatives and consistency).
pub fn curate(
    embedder: &Embedder<'_>,
    pairs: &[PairRecord],
    corpus: Option<&[String]>,
    mode: &Mode,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Curated> {
    if pairs.is_empty() {
        return Err(MineError::Options("no rows to curate".into()));
    }
    match mode {
        Mode::Negatives(opts) => {
            let problem = Problem::new(pairs, corpus);
            let (emb, ec) = embedder.embed_counted(problem.table.texts(), progress)?;
            let (chosen, skipped, range_max) =
                negatives::choose(&problem, &emb, opts, search, progress)?;
            let mut out = match opts.output_format {
                OutputFormat::Triplet => negatives::triplets(pairs, &problem, &chosen),
                OutputFormat::NTuple => {
                    negatives::ntuples(pairs, &problem, &chosen, opts.num_negatives)
                }
            };
            out.embedded = ec;
            problem_counts(&problem, ec, &mut out.counts);
            negatives::skipped_counts(&skipped, &mut out.counts);
            out.counts.insert("range_max".into(), range_max as u64);
            let found = chosen
                .iter()
                .filter(|c| c.len() == opts.num_negatives)
                .count();
            out.counts
                .insert("anchors with all num_negatives".into(), found as u64);
            Ok(out)
        }
        Mode::Consistency { top_k } => {
            if *top_k == 0 {
                return Err(MineError::Options("--top-k must be at least 1".into()));
            }
            let problem = Problem::new(pairs, corpus);
            let (emb, ec) = embedder.embed_counted(problem.table.texts(), progress)?;
            let ranks = filter::positive_ranks(&problem, &emb, *top_k, search, progress);
            let mut out = filter::consistency(pairs, &ranks, *top_k);
            out.embedded = ec;
            problem_counts(&problem, ec, &mut out.counts);
            Ok(out)
        }
        Mode::Dedup { threshold, on } => {
            let (table, ids) = filter::dedup_texts(pairs, *on);
            let (emb, ec) = embedder.embed_counted(table.texts(), progress)?;
            let keep = filter::keep_distinct(&emb, *threshold, search, progress)?;
            let mut out = filter::dedup(pairs, &ids, &keep, *on);
            out.embedded = ec;
            embed_counts(ec, &mut out.counts);
            out.counts.insert(
                "distinct texts kept".into(),
                keep.iter().filter(|&&k| k).count() as u64,
            );
            Ok(out)
        }
    }
}

fn embed_counts(ec: EmbedCounts, counts: &mut BTreeMap<String, u64>) {
    // The total only: how many came from the cache differs between runs, the output does not.
    counts.insert("distinct texts".into(), ec.encoded + ec.cached);
}

fn problem_counts(p: &Problem, ec: EmbedCounts, counts: &mut BTreeMap<String, u64>) {
    embed_counts(ec, counts);
    counts.insert("anchors".into(), p.queries.len() as u64);
    counts.insert("candidates".into(), p.corpus_len as u64);
    counts.insert("max rows per anchor".into(), p.max_positives() as u64);
}
