//! `mix`: sources -> sampler -> tokenizer -> shard files + `index.json`, in three overlapping
//! stages (sampling thread, parallel tokenization on the current rayon pool, writing thread).
//!
//! Shards are written atomically and listed in the index only once complete; the index is
//! rewritten atomically after each shard. The stream is a pure function of the inputs and
//! options, so a rerun checks the options match and every listed shard's sha256, then replays
//! the sampling (no tokenization, no writing) over the shards it keeps and makes only the
//! missing or damaged ones. A rerun with nothing to do writes nothing. The run holds the output
//! folder's lock throughout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};

use rayon::prelude::*;
use schemas::shards::{shard_file_name, ShardRow, ShardWriter, ShardWriterOptions};
use schemas::{
    part_files, AtomicFile, DatasetEntry, IndexConfig, Manifest, MixSettings, MixingDeviation,
    OutputLock, Progress, ShardEntry, ShardIndex, TokenizerInfo, Unit, PREP_VERSION,
};
use serde_json::{json, Value};

use crate::config::{resolve, MixConfig, ResolvedSource, SourceKind};
use crate::error::{MixError, Result};
use crate::sampler::{DatasetStats, Deviation, Mixing, PlannedBatch, Sampler, Schedule};
use crate::stream::DatasetStream;
use crate::tokenize::MixTokenizer;

/// Where upstream normalized jsonl files are ingested to datasets, inside the output folder.
pub const SOURCES_DIR: &str = ".sources";

/// The most batches a mix makes (keeps the exact schedule's integer arithmetic exact).
pub const MAX_STEPS: u64 = 1 << 62;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixOptions {
    /// Batches to produce.
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    pub max_length_a: usize,
    pub max_length_b: usize,
    pub datasets_per_batch: usize,
    /// Consecutive batches one draw fills (upstream: 4 at global batch 1024).
    pub batches_per_draw: usize,
    pub mixing: Mixing,
    pub keep_text: bool,
    pub batches_per_shard: usize,
    /// Shuffle buffer per dataset, in rows.
    pub shuffle_buffer: usize,
}

use serde::{Deserialize, Serialize};

impl Default for MixOptions {
    fn default() -> Self {
        MixOptions {
            steps: 1000,
            batch_size: 1024,
            seed: 0,
            max_length_a: 64,
            max_length_b: 250,
            datasets_per_batch: 2,
            batches_per_draw: 4,
            mixing: Mixing::Random,
            keep_text: false,
            batches_per_shard: 64,
            shuffle_buffer: 8192,
        }
    }
}

impl MixOptions {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(MixError::Options(m.to_owned()));
        if self.steps == 0 {
            return bad("--steps must be at least 1");
        }
        if self.steps > MAX_STEPS {
            return bad("--steps must be below 2^62");
        }
        if self.batch_size == 0 || self.batches_per_shard == 0 {
            return bad("batch size and batches per shard must be at least 1");
        }
        if self.datasets_per_batch == 0 || self.batches_per_draw == 0 {
            return bad("datasets per batch and batches per draw must be at least 1");
        }
        if self.max_length_a < 2 || self.max_length_b < 2 {
            return bad("max lengths must leave room for [CLS] and [SEP]");
        }
        Ok(())
    }

    /// The batch range `[first, first + batches)` of shard `i`, or None past the end.
    pub fn shard_range(&self, i: usize) -> Option<(u64, u64)> {
        let first = i as u64 * self.batches_per_shard as u64;
        (first < self.steps).then(|| {
            (
                first,
                (self.steps - first).min(self.batches_per_shard as u64),
            )
        })
    }

    pub fn shard_count(&self) -> usize {
        self.steps.div_ceil(self.batches_per_shard as u64) as usize
    }
}

/// A resolved source with its rows in Parquet.
#[derive(Debug, Clone)]
pub struct PreparedSource {
    pub source: ResolvedSource,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Resolves the config; upstream jsonl files resolve to their ingest under `<out>/.sources/`
/// (see [`crate::upstream`]).
pub fn prepare_sources(
    config: &MixConfig,
    pairs: &Path,
    out: &Path,
) -> Result<Vec<PreparedSource>> {
    let mut prepared = Vec::new();
    for source in resolve(config, pairs)? {
        let (dir, manifest) = match &source.kind {
            SourceKind::Dataset { dir } => (dir.clone(), Manifest::read(dir)?),
            SourceKind::Jsonl { file } => {
                let dir = crate::upstream::dataset_dir(out, &source.id);
                let manifest = crate::upstream::require_converted(file, &dir)?;
                (dir, manifest)
            }
        };
        prepared.push(PreparedSource {
            source,
            dir,
            manifest,
        });
    }
    Ok(prepared)
}

fn fingerprint(
    config: &MixConfig,
    sources: &[PreparedSource],
    tokenizer: &MixTokenizer,
    opts: &MixOptions,
) -> Value {
    let mut o = serde_json::to_value(opts).expect("options serialise");
    // Steps may change between runs: the stream is prefix-stable, so shards stay valid.
    o.as_object_mut().expect("object").remove("steps");
    json!({
        "prep_version": PREP_VERSION,
        "options": o,
        "config": config.entries,
        "tokenizer_sha256": tokenizer.sha256(),
        "sources": sources.iter().map(|s| json!({
            "id": s.source.id,
            "weight": s.source.weight,
            "rows": s.manifest.rows,
            "files": s.manifest.files.iter().map(|f| &f.sha256).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn is_ours(name: &str) -> bool {
    (name.starts_with("shard-") && name.ends_with(".parquet"))
        || name.starts_with(".shard-")
        || name.starts_with(".index.json.")
}

/// Removes shard files (and their temporaries) other than those named in `keep`.
fn remove_shards(out: &Path, keep: &[&str]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| MixError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ours(&name) && !keep.contains(&name.as_str()) {
            std::fs::remove_file(entry.path()).map_err(|e| MixError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Removes what killed conversions left in `<out>/.sources/` (hidden `.<id>.tmp-<pid>` folders
/// of any pid). The output lock only sweeps the output folder's own top level.
fn remove_stale_source_temps(out: &Path) -> Result<()> {
    let dir = out.join(SOURCES_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| MixError::io(&dir, e))?;
        if schemas::lock::is_temp_name(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| MixError::io(&path, e))?;
        }
    }
    Ok(())
}

/// What a rerun can keep of the mix already in the output folder.
struct Resume {
    /// Per shard of this run: the listed entry when its file is there, laid out as this run
    /// would write it, and matches its sha256; `None` when the shard must be (re)written.
    reuse: Vec<Option<ShardEntry>>,
    /// The existing index, when it was made from the same inputs and options.
    old: Option<ShardIndex>,
    /// An index was there but made from other inputs or options (or unreadable).
    restarted: bool,
    /// Listed shards that are missing or whose bytes no longer match their sha256.
    damaged: Vec<String>,
}

impl Resume {
    /// The existing index, when the mix is exactly what this run would make: nothing to
    /// write, nothing to rewrite (a no-op rerun leaves `index.json` byte-identical).
    fn noop_index(&self, opts: &MixOptions) -> Option<&ShardIndex> {
        self.old.as_ref().filter(|old| {
            old.steps == opts.steps
                && old.complete
                && old.shards.len() == self.reuse.len()
                && self.reuse.iter().all(Option::is_some)
        })
    }

    fn first_to_write(&self, opts: &MixOptions) -> u64 {
        self.reuse
            .iter()
            .position(Option::is_none)
            .and_then(|i| opts.shard_range(i))
            .map_or(opts.steps, |(first, _)| first)
    }
}

/// Checks an existing mix against this run: same fingerprint, then every listed shard's layout
/// and sha256 (all of them, hashed in parallel: a shard damaged anywhere, or overwritten by
/// another run, is found and remade, not only the last one).
fn resumable(out: &Path, fp: &Value, opts: &MixOptions) -> Result<Resume> {
    let n = opts.shard_count();
    let fresh = |restarted| Resume {
        reuse: vec![None; n],
        old: None,
        restarted,
        damaged: Vec::new(),
    };
    let Ok(index) = ShardIndex::read(out) else {
        return Ok(fresh(out.join(schemas::SHARD_INDEX_FILE).exists()));
    };
    if index.fingerprint != *fp {
        return Ok(fresh(true));
    }
    let checked: Vec<(usize, bool)> = index
        .shards
        .par_iter()
        .enumerate()
        .filter(|(i, s)| {
            // Not laid out as this run's shard i (the short last shard of a shorter run, or
            // past this run's end): remade or removed, no need to hash it.
            opts.shard_range(*i).is_some_and(|(first, batches)| {
                s.file == shard_file_name(*i)
                    && s.first_batch == first
                    && s.batches == batches
                    && s.rows == batches * opts.batch_size as u64
            })
        })
        .map(|(i, s)| {
            let path = out.join(&s.file);
            let ok = path.is_file() && schemas::sha256_file(&path)? == s.sha256;
            Ok((i, ok))
        })
        .collect::<Result<_>>()?;
    let mut resume = fresh(false);
    for (i, ok) in checked {
        let entry = &index.shards[i];
        if ok {
            resume.reuse[i] = Some(entry.clone());
        } else {
            resume.damaged.push(entry.file.clone());
        }
    }
    resume.old = Some(index);
    Ok(resume)
}

/// Writes `index` unless `index.json` already holds exactly these bytes.
fn write_index_if_changed(out: &Path, index: &ShardIndex) -> Result<()> {
    let path = out.join(schemas::SHARD_INDEX_FILE);
    let bytes = index.to_json_bytes(out)?;
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    AtomicFile::write_all(path, &bytes)?;
    Ok(())
}

/// One shard's worth of the stream. `reuse`: the shard is already on disk and verified, so its
/// batches were replayed (for the counters) and nothing is tokenized or written.
struct Chunk {
    shard: usize,
    reuse: Option<ShardEntry>,
    batches: Vec<PlannedBatch>,
    stats: Vec<DatasetStats>,
    deviation: Deviation,
}

struct Tokenized {
    shard: usize,
    reuse: Option<ShardEntry>,
    batches: Vec<Vec<ShardRow>>,
    stats: Vec<DatasetStats>,
    deviation: Deviation,
}

#[derive(Default)]
struct Counts {
    tokens: u64,
    texts: u64,
    truncated: u64,
}

fn tokenize_chunk(
    chunk: Chunk,
    ids: &[String],
    tok: &MixTokenizer,
    opts: &MixOptions,
) -> Result<(Tokenized, Counts)> {
    let mut counts = Counts::default();
    let mut batches = Vec::with_capacity(chunk.batches.len());
    for b in chunk.batches {
        let rows: Vec<ShardRow> = b
            .records
            .into_par_iter()
            .map(|r| -> Result<ShardRow> {
                let negative_ids = r.negative.as_deref().map(|n| tok.encode_b(n)).transpose()?;
                let extra_negative_ids = r
                    .extra_negatives
                    .iter()
                    .map(|n| tok.encode_b(n))
                    .collect::<Result<_>>()?;
                let keep = opts.keep_text;
                Ok(ShardRow {
                    batch: b.index,
                    dataset: ids[b.dataset].clone(),
                    anchor_ids: tok.encode_a(&r.anchor)?,
                    positive_ids: tok.encode_b(&r.positive)?,
                    negative_ids,
                    extra_negative_ids,
                    anchor: keep.then_some(r.anchor),
                    positive: keep.then_some(r.positive),
                    negative: if keep { r.negative } else { None },
                    extra_negatives: if keep { r.extra_negatives } else { Vec::new() },
                })
            })
            .collect::<Result<_>>()?;
        for r in &rows {
            let cols = [
                (Some(&r.anchor_ids), opts.max_length_a),
                (Some(&r.positive_ids), opts.max_length_b),
                (r.negative_ids.as_ref(), opts.max_length_b),
            ];
            let extra = r
                .extra_negative_ids
                .iter()
                .map(|n| (Some(n), opts.max_length_b));
            for (ids, max) in cols.into_iter().chain(extra) {
                if let Some(ids) = ids {
                    counts.texts += 1;
                    counts.tokens += ids.len() as u64;
                    counts.truncated += (ids.len() >= max) as u64;
                }
            }
        }
        batches.push(rows);
    }
    Ok((
        Tokenized {
            shard: chunk.shard,
            reuse: chunk.reuse,
            batches,
            stats: chunk.stats,
            deviation: chunk.deviation,
        },
        counts,
    ))
}

/// Negative columns of the shards: the most any dataset of the mix has, and at least the one
/// `negative_ids` every shard has had.
fn negative_columns(sources: &[PreparedSource]) -> usize {
    let most = sources.iter().map(|s| s.manifest.columns.negatives());
    most.max().unwrap_or(0).max(1)
}

/// Writes one shard file through the contract's one writer: one schema for every shard of a
/// mix (`negative_columns` id columns), so the folder scans as one table.
fn write_shard(
    path: &Path,
    batches: &[Vec<ShardRow>],
    opts: &MixOptions,
    negative_columns: usize,
) -> Result<ShardEntry> {
    let options = ShardWriterOptions {
        batch_size: opts.batch_size,
        keep_text: opts.keep_text,
    };
    let mut writer = ShardWriter::create_for(path, options, negative_columns)?;
    for rows in batches {
        writer.write_batch(rows)?;
    }
    Ok(writer.finish()?)
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The deviation of realised batch counts from the weights, per dataset id.
fn deviation_report(ids: &[String], d: &Deviation) -> MixingDeviation {
    MixingDeviation {
        max_abs: round6(d.max_abs_batches),
        per_dataset: ids
            .iter()
            .cloned()
            .zip(d.per_dataset.iter().map(|v| round6(*v)))
            .collect(),
        unit: "batches".into(),
        what: "max over every prefix of the stream of |batches(dataset) - share * batches|".into(),
        within_one_batch: d.max_abs_batches < 1.0,
    }
}

/// Each dataset's index entry after `batches` batches, the sampler's counters at `stats`.
fn dataset_entries(
    sources: &[PreparedSource],
    stats: &[DatasetStats],
    total_weight: u64,
    batches: u64,
) -> BTreeMap<String, DatasetEntry> {
    let share = |n: f64, of: f64| if of == 0.0 { 0.0 } else { round6(n / of) };
    sources
        .iter()
        .zip(stats)
        .map(|(s, st)| {
            let entry = DatasetEntry {
                batches: st.batches,
                columns: s.manifest.columns,
                epoch: st.epoch,
                epochs: round6(st.epochs),
                names: s.source.names.clone(),
                realised_share: share(st.batches as f64, batches as f64),
                rows: s.manifest.rows,
                rows_drawn: st.rows_drawn,
                rows_skipped_duplicate: st.rows_skipped_duplicate,
                share: round6(s.source.weight as f64 / total_weight as f64),
                source: s.source.kind.clone(),
                weight: s.source.weight,
                other: BTreeMap::new(),
            };
            (s.source.id.clone(), entry)
        })
        .collect()
}

/// What a run did, for the command line and benchmarks.
#[derive(Debug, Clone)]
pub struct MixReport {
    pub index: ShardIndex,
    /// First batch this run produced (0 unless it resumed; `steps` when nothing was written).
    pub resumed_at_batch: u64,
    /// An existing index was found but did not match, so its shards were removed.
    pub restarted: bool,
    /// Shards the existing index listed that were missing or no longer matched their sha256,
    /// and were made again.
    pub shards_remade: Vec<String>,
    pub batches_written: u64,
    pub rows_written: u64,
    /// Token ids written, all columns.
    pub tokens_written: u64,
    /// Texts cut at their max length.
    pub texts_truncated: u64,
    pub texts_written: u64,
}

fn open_sampler(sources: &[PreparedSource], opts: &MixOptions) -> Result<Sampler> {
    let weights: Vec<u64> = sources.iter().map(|s| s.source.weight).collect();
    let mut streams = Vec::with_capacity(sources.len());
    for s in sources {
        let files = part_files(&s.dir)?;
        let stream = DatasetStream::open(
            &s.source.id,
            files,
            s.manifest.columns,
            opts.seed,
            opts.shuffle_buffer,
        )?;
        if stream.rows() != s.manifest.rows {
            return Err(MixError::dataset(
                &s.source.id,
                format!(
                    "manifest says {} rows, its part files hold {}",
                    s.manifest.rows,
                    stream.rows()
                ),
            ));
        }
        streams.push(stream);
    }
    let arities = sources.iter().map(|s| s.manifest.columns).collect();
    let schedule = Schedule::new(
        weights.clone(),
        arities,
        opts.mixing,
        opts.datasets_per_batch,
        opts.batches_per_draw,
        opts.seed,
    )?;
    Ok(Sampler::new(streams, schedule, &weights, opts.batch_size))
}

/// The index of a run before any shard: settings, tokenizer, fingerprint, zeroed counters.
fn new_index(
    config: &MixConfig,
    sources: &[PreparedSource],
    tokenizer: &MixTokenizer,
    opts: &MixOptions,
    fp: Value,
    datasets: BTreeMap<String, DatasetEntry>,
) -> ShardIndex {
    ShardIndex {
        prep_version: PREP_VERSION.into(),
        batch_size: opts.batch_size as u64,
        steps: opts.steps,
        seed: opts.seed,
        shards: Vec::new(),
        datasets,
        mix: MixSettings {
            config: IndexConfig {
                entries: config.entries.clone(),
                path: config.path.display().to_string(),
            },
            max_length_a: opts.max_length_a,
            max_length_b: opts.max_length_b,
            datasets_per_batch: opts.datasets_per_batch,
            batches_per_draw: opts.batches_per_draw,
            batches_per_shard: opts.batches_per_shard,
            shuffle_buffer: opts.shuffle_buffer,
            mixing: opts.mixing,
            keep_text: opts.keep_text,
            negative_columns: negative_columns(sources),
        },
        tokenizer: TokenizerInfo {
            path: tokenizer.path().display().to_string(),
            sha256: tokenizer.sha256().to_owned(),
            engine: tokenizer.engine().to_owned(),
            pad_token_id: tokenizer.pad_id(),
        },
        complete: false,
        fingerprint: fp,
        mixing_deviation: None,
        other: BTreeMap::new(),
    }
}

/// The output folder made and swept, the config resolved to Parquet sources.
fn resolve_inputs(config: &MixConfig, pairs: &Path, out: &Path) -> Result<Vec<PreparedSource>> {
    std::fs::create_dir_all(out).map_err(|e| MixError::io(out, e))?;
    remove_stale_source_temps(out)?;
    prepare_sources(config, pairs, out)
}

/// What of the existing mix this run keeps; every other shard file is removed.
fn check_resume(out: &Path, fp: &Value, opts: &MixOptions) -> Result<Resume> {
    let resume = resumable(out, fp, opts)?;
    let keep: Vec<&str> = resume
        .reuse
        .iter()
        .flatten()
        .map(|e| e.file.as_str())
        .collect();
    remove_shards(out, &keep)?;
    Ok(resume)
}

/// The stream to write: the sampler over the sources, and the index it starts from.
struct Plan {
    sampler: Sampler,
    index: ShardIndex,
    total_weight: u64,
}

fn plan(
    config: &MixConfig,
    sources: &[PreparedSource],
    tokenizer: &MixTokenizer,
    opts: &MixOptions,
    fp: Value,
) -> Result<Plan> {
    let total_weight: u64 = sources.iter().map(|s| s.source.weight).sum();
    let sampler = open_sampler(sources, opts)?;
    let datasets = dataset_entries(sources, sampler.stats(), total_weight, 0);
    Ok(Plan {
        index: new_index(config, sources, tokenizer, opts, fp, datasets),
        sampler,
        total_weight,
    })
}

/// The index once every shard is listed: complete if it holds all `steps` batches.
fn finish_index(out: &Path, index: &mut ShardIndex, opts: &MixOptions) -> Result<()> {
    index.complete = index.total_batches() == opts.steps;
    write_index_if_changed(out, index)
}

impl MixReport {
    fn new(resume: &Resume, opts: &MixOptions, index: ShardIndex, written: u64, c: Counts) -> Self {
        MixReport {
            index,
            resumed_at_batch: resume.first_to_write(opts),
            restarted: resume.restarted,
            shards_remade: resume.damaged.clone(),
            batches_written: written,
            rows_written: written * opts.batch_size as u64,
            tokens_written: c.tokens,
            texts_truncated: c.truncated,
            texts_written: c.texts,
        }
    }
}

/// Runs the mix: writes `steps` batches as shards into `out`, resuming what a previous run with
/// the same inputs and options left there.
///
/// Holds `out`'s [`OutputLock`] for the whole run: a second mix into the same folder fails at
/// once, and temporary files killed runs left there are removed, whatever their pid.
pub fn mix(
    config: &MixConfig,
    pairs: &Path,
    tokenizer: &MixTokenizer,
    out: &Path,
    opts: &MixOptions,
    progress: &dyn Progress,
) -> Result<MixReport> {
    opts.check()?;
    let _lock = OutputLock::acquire(out)?;
    let sources = resolve_inputs(config, pairs, out)?;
    let fp = fingerprint(config, &sources, tokenizer, opts);
    let resume = check_resume(out, &fp, opts)?;
    if let Some(old) = resume.noop_index(opts) {
        return Ok(MixReport::new(
            &resume,
            opts,
            old.clone(),
            0,
            Counts::default(),
        ));
    }
    let Plan {
        sampler,
        mut index,
        total_weight,
    } = plan(config, &sources, tokenizer, opts, fp)?;
    if resume.restarted {
        // The old index lists shards just removed: replace it at once.
        index.write(out)?;
    }
    let pipeline = Pipeline {
        out,
        opts,
        tokenizer,
        sources: &sources,
        total_weight,
        progress,
    };
    let (written, counts) = pipeline.run(sampler, &resume.reuse, &mut index)?;
    finish_index(out, &mut index, opts)?;
    Ok(MixReport::new(&resume, opts, index, written, counts))
}

/// The three overlapping stages of a mix run.
struct Pipeline<'a> {
    out: &'a Path,
    opts: &'a MixOptions,
    tokenizer: &'a MixTokenizer,
    sources: &'a [PreparedSource],
    total_weight: u64,
    progress: &'a dyn Progress,
}

/// The sampling stage: every shard's batches in order, as chunks (a reused shard's batches are
/// replayed for the counters and dropped). Stops when the receiver hangs up.
fn sample_shards(
    mut sampler: Sampler,
    reuse: &[Option<ShardEntry>],
    opts: &MixOptions,
    tx: &SyncSender<Result<Chunk>>,
) -> Result<()> {
    for (shard, reuse) in reuse.iter().enumerate() {
        let (_, n) = opts.shard_range(shard).expect("shard in range");
        let mut batches = Vec::new();
        for _ in 0..n {
            let b = sampler.next_batch()?;
            // A verified shard on disk: replay its batches, keep nothing.
            if reuse.is_none() {
                batches.push(b);
            }
        }
        let chunk = Chunk {
            shard,
            reuse: reuse.clone(),
            batches,
            stats: sampler.stats().to_vec(),
            deviation: sampler.deviation().clone(),
        };
        if tx.send(Ok(chunk)).is_err() {
            break;
        }
    }
    Ok(())
}

impl Pipeline<'_> {
    /// Samples every shard of the run (replaying the ones in `reuse`), tokenizes and writes
    /// the others, and lists all of them in `index`. Returns the batches written.
    fn run(
        &self,
        sampler: Sampler,
        reuse: &[Option<ShardEntry>],
        index: &mut ShardIndex,
    ) -> Result<(u64, Counts)> {
        let opts = self.opts;
        let ids: Vec<String> = self.sources.iter().map(|s| s.source.id.clone()).collect();
        self.progress.begin("mix", Some(opts.steps), Unit::Items);
        let (chunk_tx, chunk_rx) = sync_channel::<Result<Chunk>>(1);
        let (tok_tx, tok_rx) = sync_channel::<Tokenized>(1);
        let result = std::thread::scope(|scope| -> Result<(u64, Counts)> {
            scope.spawn(move || {
                if let Err(e) = sample_shards(sampler, reuse, opts, &chunk_tx) {
                    let _ = chunk_tx.send(Err(e));
                }
            });
            let ids = &ids;
            let writer = scope.spawn(move || self.write_all(tok_rx, ids, index));
            let mut counts = Counts::default();
            let mut failure = None;
            for chunk in chunk_rx {
                match chunk.and_then(|c| tokenize_chunk(c, ids, self.tokenizer, opts)) {
                    Ok((t, c)) => {
                        counts.tokens += c.tokens;
                        counts.texts += c.texts;
                        counts.truncated += c.truncated;
                        if tok_tx.send(t).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            drop(tok_tx);
            let written = writer.join().expect("writer thread panicked");
            if let Some(e) = failure {
                return Err(e);
            }
            Ok((written?, counts))
        });
        self.progress.finish();
        result
    }

    /// The writing stage: shards in order, the index rewritten atomically after each one
    /// written. Reused shards are only listed (the index is written with the next shard written,
    /// or at the end).
    fn write_all(
        &self,
        rx: std::sync::mpsc::Receiver<Tokenized>,
        ids: &[String],
        index: &mut ShardIndex,
    ) -> Result<u64> {
        let (out, opts) = (self.out, self.opts);
        let mut written = 0;
        let mut first_write = true;
        for t in rx {
            let (first_batch, batches) = opts.shard_range(t.shard).expect("in range");
            let reused = t.reuse.is_some();
            let entry = match t.reuse {
                Some(entry) => entry,
                None => {
                    if first_write {
                        // Before replacing any file, the index lists only what is verified.
                        index.write(out)?;
                        first_write = false;
                    }
                    let file = shard_file_name(t.shard);
                    let negatives = index.mix.negative_columns;
                    let entry = write_shard(&out.join(&file), &t.batches, opts, negatives)?;
                    debug_assert_eq!((entry.first_batch, entry.batches), (first_batch, batches));
                    entry
                }
            };
            index.shards.push(entry);
            let done = first_batch + batches;
            index.datasets = dataset_entries(self.sources, &t.stats, self.total_weight, done);
            index.mixing_deviation = Some(deviation_report(ids, &t.deviation));
            index.complete = done == opts.steps;
            if !reused {
                index.write(out)?;
                written += batches;
            }
            self.progress.advance(batches);
        }
        Ok(written)
    }
}
