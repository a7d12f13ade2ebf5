//! Model-based curation of pairs datasets, between ingest and mix: hard negatives with
//! sentence-transformers' `mine_hard_negatives` semantics ([`negatives`]), the consistency filter
//! and semantic dedup ([`filter`]). Texts are embedded once ([`embed`]), into memory or, past the
//! run's memory budget, a file read back a block at a time ([`store`]); nearest neighbours are
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
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
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
pub use store::{SpilledVectors, VectorStore, Vectors};

/// The rows a mode keeps or makes, and what it did. Rows are a plan over the input rows: an
/// output row is built from its input row (and its negatives' texts) only when read, so the
/// output's texts are never all in memory at once.
#[derive(Debug)]
pub struct Curated<'a> {
    pairs: &'a [PairRecord],
    /// Output rows, in order.
    rows: Vec<PlannedRow>,
    /// The texts negatives refer to (empty for the filters).
    texts: TextTable<'a>,
    /// Negative text ids, flat: a row's negatives are `negative_ids[row.negatives]`.
    negative_ids: Vec<u32>,
    pub arity: Arity,
    /// Input rows not written, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Everything else counted: texts, anchors, candidates, candidates skipped by reason.
    pub counts: BTreeMap<String, u64>,
    /// Vectors encoded and read from the cache (not part of the output: it varies by run).
    pub embedded: EmbedCounts,
}

/// One output row: input row `input`, with negatives `negative_ids[start..end]` (none: the
/// input row as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRow {
    pub input: u32,
    pub negatives: (u32, u32),
}

impl<'a> Curated<'a> {
    /// Input rows `keep`, unchanged (the filters).
    pub fn kept(pairs: &'a [PairRecord], keep: Vec<u32>, dropped: BTreeMap<String, u64>) -> Self {
        let rows = keep
            .into_iter()
            .map(|input| PlannedRow {
                input,
                negatives: (0, 0),
            })
            .collect();
        let arity = pairs.first().map_or(Arity::Pair, |p| p.arity());
        Curated::planned(pairs, rows, arity, dropped)
    }

    /// Rows with negatives (the texts `negative_ids` point into).
    pub(crate) fn with_negatives(
        pairs: &'a [PairRecord],
        rows: Vec<PlannedRow>,
        texts: TextTable<'a>,
        negative_ids: Vec<u32>,
        arity: Arity,
        dropped: BTreeMap<String, u64>,
    ) -> Self {
        Curated {
            texts,
            negative_ids,
            ..Curated::planned(pairs, rows, arity, dropped)
        }
    }

    fn planned(
        pairs: &'a [PairRecord],
        rows: Vec<PlannedRow>,
        arity: Arity,
        dropped: BTreeMap<String, u64>,
    ) -> Self {
        Curated {
            pairs,
            rows,
            texts: TextTable::new(),
            negative_ids: Vec::new(),
            arity,
            dropped,
            counts: BTreeMap::new(),
            embedded: EmbedCounts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Text `id` of the mined problem's table (what [`knn::Hit::index`] and the queries of
    /// [`Problem`] refer to); mode negatives only.
    pub fn text(&self, id: u32) -> &str {
        self.texts.text(id)
    }

    /// The output rows, in order, built one at a time.
    pub fn records(&self) -> impl Iterator<Item = PairRecord> + '_ {
        self.rows.iter().map(|r| self.record(r))
    }

    fn record(&self, row: &PlannedRow) -> PairRecord {
        let pair = &self.pairs[row.input as usize];
        let (start, end) = row.negatives;
        if start == end {
            return pair.clone();
        }
        let negatives = self.negative_ids[start as usize..end as usize]
            .iter()
            .map(|&id| self.texts.text(id).to_owned())
            .collect();
        let mut record = PairRecord::with_negatives(&*pair.anchor, &*pair.positive, negatives);
        record.source_id.clone_from(&pair.source_id);
        record
    }
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
    /// Where [`curate`] writes vectors past its memory budget (`None`: they stay in memory).
    pub spill_dir: Option<PathBuf>,
}

/// Where a run's vectors came from, and where they were kept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmbedCounts {
    pub encoded: u64,
    pub cached: u64,
    /// Written to a file in [`Embedder::spill_dir`] (past half of the memory budget).
    pub spilled: bool,
}

impl<'a> Embedder<'a> {
    pub fn new(encoder: &'a SentenceEncoder, options: EmbedOptions) -> Self {
        Embedder {
            encoder,
            options,
            cache: None,
            spill_dir: None,
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

    pub fn embed<T: AsRef<str> + Sync>(
        &self,
        texts: &[T],
        progress: &dyn Progress,
    ) -> Result<Embeddings> {
        Ok(self.embed_counted(texts, progress)?.0)
    }

    /// L2-normalised vectors of `texts` in order, in memory ([`Embedder::embed_stored`]).
    pub fn embed_counted<T: AsRef<str> + Sync>(
        &self,
        texts: &[T],
        progress: &dyn Progress,
    ) -> Result<(Embeddings, EmbedCounts)> {
        let out = VectorStore::Memory(Embeddings::zeros(texts.len(), self.encoder.dim()));
        match self.fill(texts, out, progress)? {
            (VectorStore::Memory(e), counts) => Ok((e, counts)),
            (VectorStore::Spilled(_), _) => unreachable!("filled in memory"),
        }
    }

    /// L2-normalised vectors of `texts` in order, in memory if they take at most half of
    /// `memory` bytes, else spilled to [`Embedder::spill_dir`] (see [`store`]).
    pub fn embed_stored<T: AsRef<str> + Sync>(
        &self,
        texts: &[T],
        memory: usize,
        progress: &dyn Progress,
    ) -> Result<(VectorStore, EmbedCounts)> {
        let dim = self.encoder.dim();
        let out = VectorStore::new(texts.len(), dim, memory, self.spill_dir.as_deref())?;
        self.fill(texts, out, progress)
    }

    /// Fills `out` with the vectors of `texts`: cached ones read, the others encoded (and
    /// cached, one segment per chunk, so a killed run keeps what it finished).
    fn fill<T: AsRef<str> + Sync>(
        &self,
        texts: &[T],
        mut out: VectorStore,
        progress: &dyn Progress,
    ) -> Result<(VectorStore, EmbedCounts)> {
        let mut cache = self.cache.as_ref().map(|c| c.lock().expect("cache lock"));
        let keys = cache.as_ref().map(|_| cache::keys(texts));
        let mut missing = Vec::new();
        match (&cache, &keys) {
            (Some(c), Some(keys)) => {
                let mut failed = None;
                let cached = c.lookup(keys, &mut |i, v| {
                    if let Err(e) = out.set_normalized(i, v) {
                        failed.get_or_insert(e);
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                missing.extend((0..texts.len()).filter(|&i| !cached[i]));
            }
            _ => missing.extend(0..texts.len()),
        }
        progress.begin("embedding", Some(missing.len() as u64), Unit::Items);
        for chunk in missing.chunks(embed::CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_ref()).collect();
            let vecs = embed::encode(self.encoder, &refs, self.options)?;
            for (&i, v) in chunk.iter().zip(&vecs) {
                out.set_normalized(i, v)?;
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
            spilled: out.is_spilled(),
        };
        Ok((out, counts))
    }
}

/// Runs `mode` over `pairs` (`corpus`: extra candidates for negatives and consistency).
pub fn curate<'p>(
    embedder: &Embedder<'_>,
    pairs: &'p [PairRecord],
    corpus: Option<&'p [String]>,
    mode: &Mode,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Curated<'p>> {
    if pairs.is_empty() {
        return Err(MineError::Options("no rows to curate".into()));
    }
    match mode {
        Mode::Negatives(opts) => {
            let problem = Problem::new(pairs, corpus);
            let texts = problem.table.texts();
            let (vectors, ec) = embedder.embed_stored(texts, search.memory, progress)?;
            let (chosen, skipped, range_max) =
                negatives::choose(&problem, &vectors, opts, search, progress)?;
            // Planning and writing need only the chosen ids: the vectors' memory goes now.
            drop(vectors);
            let found = chosen
                .iter()
                .filter(|c| c.len() == opts.num_negatives)
                .count();
            let mut counts = BTreeMap::new();
            problem_counts(&problem, ec, &mut counts);
            let mut out = negatives::plan(pairs, problem, &chosen, opts);
            out.embedded = ec;
            out.counts = counts;
            negatives::skipped_counts(&skipped, &mut out.counts);
            out.counts.insert("range_max".into(), range_max as u64);
            out.counts
                .insert("anchors with all num_negatives".into(), found as u64);
            Ok(out)
        }
        Mode::Consistency { top_k } => {
            if *top_k == 0 {
                return Err(MineError::Options("--top-k must be at least 1".into()));
            }
            let problem = Problem::new(pairs, corpus);
            let texts = problem.table.texts();
            let (vectors, ec) = embedder.embed_stored(texts, search.memory, progress)?;
            let ranks = filter::positive_ranks(&problem, &vectors, *top_k, search, progress)?;
            let mut out = filter::consistency(pairs, &ranks, *top_k);
            out.embedded = ec;
            problem_counts(&problem, ec, &mut out.counts);
            Ok(out)
        }
        Mode::Dedup { threshold, on } => {
            let (table, ids) = filter::dedup_texts(pairs, *on);
            let (vectors, ec) = embedder.embed_stored(table.texts(), search.memory, progress)?;
            let keep = filter::keep_distinct(&vectors, *threshold, search, progress)?;
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
