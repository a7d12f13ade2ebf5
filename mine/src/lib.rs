//! Model-based curation of pairs datasets, between ingest and mix: hard negatives with
//! sentence-transformers' `mine_hard_negatives` semantics ([`negatives`]), the consistency filter
//! and semantic dedup ([`filter`]). Texts are embedded once ([`embed`]), into memory or, past the
//! run's memory budget, a file read back a block at a time ([`store`]); nearest neighbours are
//! exact, by blocked matrix products in bounded memory ([`knn`]). The rows are read again rather
//! than kept ([`source`]); their distinct texts are kept once, in memory or spilled ([`texts`]).
//!
//! [`curate`] runs one mode; [`io`] reads the corpus and writes the curated dataset.

pub mod cache;
pub mod embed;
pub mod error;
pub mod filter;
pub mod io;
pub mod knn;
pub mod negatives;
pub mod problem;
pub mod source;
pub mod store;
pub mod texts;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use encoder::SentenceEncoder;
use schemas::{Arity, PairRecord, Progress, Unit};
use serde::Serialize;

pub use cache::EmbeddingCache;
pub use embed::{EmbedOptions, Embeddings, TextList};
pub use error::{MineError, Result};
pub use filter::DedupOn;
pub use knn::{Hit, SearchOptions};
pub use negatives::{NegativeOptions, OutputFormat, Sampling};
pub use problem::Problem;
pub use source::{PairSource, TextSource};
pub use store::{SpilledVectors, VectorStore, Vectors};
pub use texts::TextStore;

/// The rows a mode keeps or makes, and what it did. Rows are a plan over the input rows: an
/// output row is built from its input row (read again, see [`source`]) and its negatives'
/// texts only when written, so neither the input's nor the output's texts are all in memory.
#[derive(Debug)]
pub struct Curated {
    /// Output rows, in order.
    rows: Vec<PlannedRow>,
    /// Rows the input had (the write pass checks it reads as many).
    input_rows: u64,
    /// The texts negatives refer to (empty for the filters).
    texts: TextStore,
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

impl Curated {
    /// Input rows `keep` of `input_rows`, unchanged (the filters).
    pub fn kept(
        input_rows: usize,
        keep: Vec<u32>,
        arity: Arity,
        dropped: BTreeMap<String, u64>,
    ) -> Self {
        let rows = keep
            .into_iter()
            .map(|input| PlannedRow {
                input,
                negatives: (0, 0),
            })
            .collect();
        Curated::with_negatives(
            input_rows,
            rows,
            TextStore::in_memory(),
            Vec::new(),
            arity,
            dropped,
        )
    }

    /// Rows with negatives (the texts `negative_ids` point into).
    pub(crate) fn with_negatives(
        input_rows: usize,
        rows: Vec<PlannedRow>,
        texts: TextStore,
        negative_ids: Vec<u32>,
        arity: Arity,
        dropped: BTreeMap<String, u64>,
    ) -> Self {
        Curated {
            rows,
            input_rows: input_rows as u64,
            texts,
            negative_ids,
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

    /// Text `id` of the mined problem's store (what [`knn::Hit::index`] and the queries of
    /// [`Problem`] refer to); mode negatives only.
    pub fn text(&self, id: u32) -> Result<String> {
        self.texts.text(id)
    }

    /// Hands `f` the output rows in order, built from `pairs` (the rows this was curated from,
    /// read again) one at a time.
    pub fn for_each_record(
        &self,
        pairs: &dyn PairSource,
        f: &mut dyn FnMut(PairRecord) -> Result<()>,
    ) -> Result<()> {
        let mut next = self.rows.iter().peekable();
        let mut input = 0u32;
        pairs.for_each_pair(&mut |pair| {
            while let Some(row) = next.next_if(|r| r.input == input) {
                f(self.record(pair, row)?)?;
            }
            input += 1;
            Ok(())
        })?;
        if u64::from(input) != self.input_rows {
            return Err(problem::changed());
        }
        Ok(())
    }

    /// The output rows, in memory (for small datasets and tests).
    pub fn records(&self, pairs: &dyn PairSource) -> Result<Vec<PairRecord>> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each_record(pairs, &mut |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    fn record(&self, pair: &PairRecord, row: &PlannedRow) -> Result<PairRecord> {
        let (start, end) = row.negatives;
        if start == end {
            return Ok(pair.clone());
        }
        let negatives = self.negative_ids[start as usize..end as usize]
            .iter()
            .map(|&id| self.texts.text(id))
            .collect::<Result<_>>()?;
        let mut record = PairRecord::with_negatives(&*pair.anchor, &*pair.positive, negatives);
        record.source_id.clone_from(&pair.source_id);
        Ok(record)
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
    /// The distinct texts were past a quarter of the memory budget and went to a file as well.
    pub texts_spilled: bool,
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

    pub fn embed(&self, texts: &dyn TextList, progress: &dyn Progress) -> Result<Embeddings> {
        Ok(self.embed_counted(texts, progress)?.0)
    }

    /// L2-normalised vectors of `texts` in order, in memory ([`Embedder::embed_stored`]).
    pub fn embed_counted(
        &self,
        texts: &dyn TextList,
        progress: &dyn Progress,
    ) -> Result<(Embeddings, EmbedCounts)> {
        let out = VectorStore::Memory(Embeddings::zeros(texts.len(), self.encoder.dim()));
        match self.fill(texts, out, progress)? {
            (VectorStore::Memory(e), counts) => Ok((e, counts)),
            (VectorStore::Spilled(_), _) => unreachable!("filled in memory"),
        }
    }

    /// L2-normalised vectors of `texts` in order, in memory if they take at most `room` bytes,
    /// else spilled to [`Embedder::spill_dir`] (see [`store`]).
    pub fn embed_stored(
        &self,
        texts: &dyn TextList,
        room: usize,
        progress: &dyn Progress,
    ) -> Result<(VectorStore, EmbedCounts)> {
        let dim = self.encoder.dim();
        let out = VectorStore::new(texts.len(), dim, room, self.spill_dir.as_deref())?;
        self.fill(texts, out, progress)
    }

    /// Fills `out` with the vectors of `texts`, a chunk of texts at a time: cached ones read,
    /// the others encoded (and cached, one segment per chunk, so a killed run keeps what it
    /// finished).
    fn fill(
        &self,
        texts: &dyn TextList,
        mut out: VectorStore,
        progress: &dyn Progress,
    ) -> Result<(VectorStore, EmbedCounts)> {
        let mut cache = self.cache.as_ref().map(|c| c.lock().expect("cache lock"));
        let mut counts = EmbedCounts::default();
        let mut chunk = Vec::new();
        progress.begin("embedding", Some(texts.len() as u64), Unit::Items);
        for start in (0..texts.len()).step_by(embed::CHUNK) {
            texts.read(start..(start + embed::CHUNK).min(texts.len()), &mut chunk)?;
            let keys = cache.as_ref().map(|_| cache::keys(&chunk));
            let mut missing = Vec::with_capacity(chunk.len());
            match (&cache, &keys) {
                (Some(c), Some(keys)) => {
                    let mut failed = None;
                    let cached = c.lookup(keys, &mut |i, v| {
                        if let Err(e) = out.set_normalized(start + i, v) {
                            failed.get_or_insert(e);
                        }
                    })?;
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    missing.extend((0..chunk.len()).filter(|&i| !cached[i]));
                }
                _ => missing.extend(0..chunk.len()),
            }
            if !missing.is_empty() {
                let refs: Vec<&str> = missing.iter().map(|&i| chunk[i].as_str()).collect();
                let vecs = embed::encode(self.encoder, &refs, self.options)?;
                for (&i, v) in missing.iter().zip(&vecs) {
                    out.set_normalized(start + i, v)?;
                }
                if let (Some(c), Some(keys)) = (cache.as_mut(), &keys) {
                    let chunk_keys: Vec<cache::Key> = missing.iter().map(|&i| keys[i]).collect();
                    c.store(&chunk_keys, &vecs)?;
                }
            }
            counts.encoded += missing.len() as u64;
            counts.cached += (chunk.len() - missing.len()) as u64;
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        counts.spilled = out.is_spilled();
        Ok((out, counts))
    }
}

/// Runs `mode` over `pairs` (`corpus`: extra candidates for negatives and consistency), reading
/// them twice; the result is written with [`io::write_dataset`] from `pairs` read once more.
/// Texts and vectors stay within `search.memory`: the texts held take at most a quarter of it,
/// the vectors what is left of the first half, the search the second half.
pub fn curate(
    embedder: &Embedder<'_>,
    pairs: &dyn PairSource,
    corpus: Option<&dyn TextSource>,
    mode: &Mode,
    search: SearchOptions,
    progress: &dyn Progress,
) -> Result<Curated> {
    let texts = TextStore::with_budget(search.memory / 4, embedder.spill_dir.as_deref());
    let room = |t: &TextStore| (search.memory / 2).saturating_sub(t.held_bytes());
    match mode {
        Mode::Negatives(opts) => {
            let problem = Problem::build(pairs, corpus, texts)?;
            let (vectors, ec) =
                embedder.embed_stored(&problem.texts, room(&problem.texts), progress)?;
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
            let texts_spilled = problem.texts.is_spilled();
            let mut out = negatives::plan(problem, &chosen, opts);
            out.embedded = EmbedCounts {
                texts_spilled,
                ..ec
            };
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
            let problem = Problem::build(pairs, corpus, texts)?;
            let (vectors, ec) =
                embedder.embed_stored(&problem.texts, room(&problem.texts), progress)?;
            let ranks = filter::positive_ranks(&problem, &vectors, *top_k, search, progress)?;
            let mut out = filter::consistency(&ranks, *top_k, problem.arity);
            out.embedded = EmbedCounts {
                texts_spilled: problem.texts.is_spilled(),
                ..ec
            };
            problem_counts(&problem, ec, &mut out.counts);
            Ok(out)
        }
        Mode::Dedup { threshold, on } => {
            let d = filter::dedup_texts(pairs, *on, texts)?;
            let (vectors, ec) = embedder.embed_stored(&d.texts, room(&d.texts), progress)?;
            let keep = filter::keep_distinct(&vectors, *threshold, search, progress)?;
            let mut out = filter::dedup(&d, &keep, *on);
            out.embedded = EmbedCounts {
                texts_spilled: d.texts.is_spilled(),
                ..ec
            };
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
