//! Streams the mixer's tokenized shards (`shard-NNNNN.parquet` + `index.json`) as padded candle
//! tensors, one whole training batch at a time.
//!
//! - Batches come out in index order; a background thread reads and pads ahead of the trainer
//!   through a bounded channel, so memory stays at `prefetch` batches however big the shards are.
//! - The position is a [`LoaderState`] (shard, batch): a trainer saves it in its checkpoint and
//!   [`Loader::open`] resumes exactly there.
//! - Shards are read through `schemas::ShardReader`, the shard contract's one reader, and only
//!   their id columns (the texts of `--keep-text` shards are never decoded).
//! - Shards are checked against `index.json` before the first batch ([`Verify`]): by default
//!   every shard the stream will read is hashed in [`Loader::open`], so a damaged shard fails the
//!   run before any work rather than when it is reached.
//! - `rank`/`world_size` give each data-parallel process the same contiguous slice of every global
//!   batch (rows `rank*B/W .. (rank+1)*B/W`): slices are disjoint, cover the batch, and every process
//!   stays on the same step and dataset.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use schemas::{
    NoProgress, Progress, SchemaError, ShardBatch, ShardEntry, ShardIndex, ShardReader, Unit,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{index}: {} shard(s) do not match it (changed or damaged after mixing; rerun the same \
         `prep mix` to remake them):\n  {}",
        details.len(),
        details.join("\n  ")
    )]
    Damaged {
        index: PathBuf,
        /// One line per shard: its file and what is wrong.
        details: Vec<String>,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("building tensors: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl LoaderError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        LoaderError::Invalid {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = LoaderError> = std::result::Result<T, E>;

/// Where the stream stands: the next batch to yield is global batch `batch`, which lives in
/// `shards[shard]` of the index. Saved in trainer checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LoaderState {
    pub shard: usize,
    pub batch: u64,
}

/// How shards are checked against `index.json` before they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Every shard the stream will read is hashed in [`Loader::open`], before the first batch.
    #[default]
    Full,
    /// In [`Loader::open`]: every shard's Parquet footer (it opens, its row count is the
    /// index's) and the first and last shards' sha256; every other shard is hashed just before
    /// it is read, so damaged data is still never yielded, only found later.
    Fast,
    /// No checks (benchmarks of the reader itself).
    Off,
}

impl std::str::FromStr for Verify {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(Verify::Full),
            "fast" => Ok(Verify::Fast),
            "off" => Ok(Verify::Off),
            _ => Err(format!("verify is `full`, `fast` or `off`, not `{s}`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub rank: usize,
    pub world_size: usize,
    /// Batches read ahead of the consumer (the channel bound).
    pub prefetch: usize,
    /// How shards are checked against the index.
    pub verify: Verify,
    /// Stop before this global batch (`None`: the end of the index). Verification covers only
    /// the shards holding batches `start..end_batch`.
    pub end_batch: Option<u64>,
    pub device: Device,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            rank: 0,
            world_size: 1,
            prefetch: 4,
            verify: Verify::Full,
            end_batch: None,
            device: Device::Cpu,
        }
    }
}

/// One text column of a batch, padded to its longest row.
#[derive(Debug, Clone)]
pub struct Column {
    /// `[rows, longest]` u32 token ids, padded with the index's `pad_token_id`.
    pub ids: Tensor,
    /// `[rows, longest]` u32, 1 for real tokens and 0 for padding.
    pub mask: Tensor,
}

/// A batch as token id lists, before padding (what the shard holds for this rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    /// Global batch index (the training step it belongs to, counted from 0).
    pub index: u64,
    pub dataset: String,
    pub anchor: Vec<Vec<u32>>,
    pub positive: Vec<Vec<u32>>,
    /// One list per negative column (`negative_ids`, `negative_2_ids`, ...): empty in pair
    /// batches, one in triplet batches.
    pub negatives: Vec<Vec<Vec<u32>>>,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub index: u64,
    pub dataset: String,
    pub anchor: Column,
    pub positive: Column,
    /// One column per negative, each padded to its own longest row.
    pub negatives: Vec<Column>,
    /// The loader position after this batch: save it with the step that consumed the batch.
    pub next: LoaderState,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.anchor.ids.dims()[0]
    }
}

/// Pads `rows` to the longest one: flat row-major ids and mask, and the padded length.
pub fn pad(rows: &[Vec<u32>], pad_id: u32) -> (Vec<u32>, Vec<u32>, usize) {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(rows.len() * longest);
    let mut mask = Vec::with_capacity(rows.len() * longest);
    for row in rows {
        ids.extend_from_slice(row);
        ids.resize(ids.len() + longest - row.len(), pad_id);
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
    }
    (ids, mask, longest)
}

fn column(rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Column> {
    let (ids, mask, longest) = pad(rows, pad_id);
    let shape = (rows.len(), longest);
    Ok(Column {
        ids: Tensor::from_vec(ids, shape, device)?,
        mask: Tensor::from_vec(mask, shape, device)?,
    })
}

impl RawBatch {
    pub fn to_tensors(&self, pad_id: u32, next: LoaderState, device: &Device) -> Result<Batch> {
        Ok(Batch {
            index: self.index,
            dataset: self.dataset.clone(),
            anchor: column(&self.anchor, pad_id, device)?,
            positive: column(&self.positive, pad_id, device)?,
            negatives: self
                .negatives
                .iter()
                .map(|n| column(n, pad_id, device))
                .collect::<Result<_>>()?,
            next,
        })
    }
}

/// The shard holding global batch `batch`, as a resumable position.
pub fn locate(index: &ShardIndex, batch: u64) -> Option<LoaderState> {
    index
        .shards
        .iter()
        .position(|s| batch >= s.first_batch && batch < s.first_batch + s.batches)
        .map(|shard| LoaderState { shard, batch })
}

/// Rows of a global batch of `rows` rows that belong to `rank` of `world_size`.
pub fn rank_range(rows: usize, rank: usize, world_size: usize) -> std::ops::Range<usize> {
    rows * rank / world_size..rows * (rank + 1) / world_size
}

impl From<ShardBatch> for RawBatch {
    fn from(mut b: ShardBatch) -> Self {
        RawBatch {
            index: b.batch,
            dataset: std::mem::take(&mut b.dataset),
            anchor: std::mem::take(&mut b.anchor_ids),
            positive: std::mem::take(&mut b.positive_ids),
            negatives: b.into_negative_columns(),
        }
    }
}

/// The shards (indices into `index.shards`) holding batches `start..end`.
fn shards_between(index: &ShardIndex, start: LoaderState, end: u64) -> std::ops::Range<usize> {
    let last = index
        .shards
        .iter()
        .rposition(|s| s.first_batch < end)
        .map_or(0, |i| i + 1);
    start.shard.min(last)..last
}

/// Hashes shard `i` and says what is wrong with it, if anything.
fn hash_problem(dir: &Path, entry: &ShardEntry) -> Option<String> {
    let path = dir.join(&entry.file);
    match schemas::sha256_file(&path) {
        Ok(actual) if actual == entry.sha256 => None,
        Ok(actual) => Some(format!(
            "{}: sha256 is {actual}, index.json says {}",
            entry.file, entry.sha256
        )),
        Err(e) => Some(format!("{}: {e}", entry.file)),
    }
}

/// Opens the shard's Parquet footer (cheap: a few KB at the end) and checks its row count.
fn footer_problem(dir: &Path, entry: &ShardEntry) -> Option<String> {
    match ShardReader::open(dir.join(&entry.file)) {
        Ok(r) if r.rows() == entry.rows => None,
        Ok(r) => Some(format!(
            "{}: holds {} rows, index.json says {}",
            entry.file,
            r.rows(),
            entry.rows
        )),
        Err(e) => Some(format!("{}: not a readable shard: {e}", entry.file)),
    }
}

/// Checks the shards holding batches `start..end` against `index` (see [`Verify`]), reporting
/// bytes hashed to `progress`; every damaged shard is named in one error.
pub fn verify_shards(
    dir: &Path,
    index: &ShardIndex,
    start: LoaderState,
    end: u64,
    mode: Verify,
    progress: &dyn Progress,
) -> Result<()> {
    let range = shards_between(index, start, end);
    let shards = &index.shards[range];
    let (Some(first), Some(last)) = (shards.first(), shards.last()) else {
        return Ok(());
    };
    let hashed: Vec<&ShardEntry> = match mode {
        Verify::Off => return Ok(()),
        Verify::Full => shards.iter().collect(),
        Verify::Fast if shards.len() == 1 => vec![first],
        Verify::Fast => vec![first, last],
    };
    let bytes = |e: &ShardEntry| std::fs::metadata(dir.join(&e.file)).map_or(0, |m| m.len());
    progress.begin(
        "verify shards",
        Some(hashed.iter().map(|e| bytes(e)).sum()),
        Unit::Bytes,
    );
    let mut details = Vec::new();
    if mode == Verify::Fast {
        details.extend(shards.iter().filter_map(|e| footer_problem(dir, e)));
    }
    for entry in hashed {
        details.extend(hash_problem(dir, entry));
        progress.advance(bytes(entry));
    }
    progress.finish();
    if details.is_empty() {
        return Ok(());
    }
    Err(LoaderError::Damaged {
        index: dir.join(schemas::SHARD_INDEX_FILE),
        details,
    })
}

/// The batches of shard `entry` from global batch `first` on, each checked against what the
/// index promises; its sha256 is checked first when `verify`.
fn shard_batches(
    dir: &Path,
    entry: &ShardEntry,
    first: u64,
    verify: bool,
) -> Box<dyn Iterator<Item = Result<RawBatch>> + Send> {
    let opened = if verify {
        ShardReader::open_verified(dir, entry)
    } else {
        ShardReader::open(dir.join(&entry.file))
    };
    let reader = match opened {
        Ok(reader) => reader,
        Err(e) => return Box::new(std::iter::once(Err(e.into()))),
    };
    let path = reader.path().to_owned();
    let expected = first..entry.first_batch + entry.batches;
    let mut next_expected = expected.start;
    let batches = reader
        .into_batches()
        .filter(move |b| b.as_ref().map_or(true, |b| b.batch >= first))
        .map(move |b| {
            let b = RawBatch::from(b?);
            if b.index != next_expected || !expected.contains(&b.index) {
                return Err(LoaderError::invalid(
                    &path,
                    format!(
                        "holds batch {} where index.json promises batch {next_expected}",
                        b.index
                    ),
                ));
            }
            next_expected += 1;
            Ok(b)
        });
    Box::new(batches)
}

/// Keeps `rank`'s rows of every column of a global batch.
fn slice_for_rank(b: &mut RawBatch, rank: usize, world_size: usize) {
    let slice = |rows: &mut Vec<Vec<u32>>| {
        let r = rank_range(rows.len(), rank, world_size);
        *rows = rows.drain(r).collect();
    };
    slice(&mut b.anchor);
    slice(&mut b.positive);
    for n in &mut b.negatives {
        slice(n);
    }
}

/// Yields [`RawBatch`]es for one rank from `start` to the end of the index, on the calling thread.
pub fn raw_batches(
    dir: &Path,
    index: &ShardIndex,
    start: LoaderState,
    rank: usize,
    world_size: usize,
    verify: bool,
) -> impl Iterator<Item = Result<RawBatch>> + Send + 'static {
    rank_batches(dir, index, start, rank, world_size, verify, None)
}

/// [`raw_batches`], each shard opened only once `fetched` says it arrived (remote shard sets:
/// fetched, in order, and already verified by sha256).
fn rank_batches(
    dir: &Path,
    index: &ShardIndex,
    start: LoaderState,
    rank: usize,
    world_size: usize,
    verify: bool,
    fetched: Option<Receiver<Result<()>>>,
) -> impl Iterator<Item = Result<RawBatch>> + Send + 'static {
    let dir = dir.to_owned();
    let shards: Vec<_> = index.shards.iter().skip(start.shard).cloned().collect();
    let mut from = start.batch;
    shards
        .into_iter()
        .flat_map(move |entry| {
            let first = from.max(entry.first_batch);
            from = entry.first_batch + entry.batches;
            if let Some(rx) = &fetched {
                match rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Box::new(std::iter::once(Err(e)))
                            as Box<dyn Iterator<Item = _> + Send>
                    }
                    Err(_) => return Box::new(std::iter::empty()),
                }
            }
            shard_batches(&dir, &entry, first, verify)
        })
        .map(move |b| {
            let mut b = b?;
            if world_size > 1 {
                slice_for_rank(&mut b, rank, world_size);
            }
            Ok(b)
        })
}

/// Fetches the remote shards of `index` from `start.shard` on into the mirror, in order, on a
/// thread of its own, at most `read_ahead` shards ahead of the reader (the channel bound); each
/// is verified by its sha256 before the reader is told it arrived. Stops when the reader hangs up.
fn fetch_ahead(
    mirror: store::Mirror,
    dir: &Path,
    index: &ShardIndex,
    start: LoaderState,
) -> Result<Receiver<Result<()>>> {
    let read_ahead = store::settings().read_ahead.max(1);
    let (tx, rx) = sync_channel(read_ahead - 1);
    let shards: Vec<ShardEntry> = index.shards.iter().skip(start.shard).cloned().collect();
    std::thread::Builder::new()
        .name("prep-fetch".into())
        .spawn(move || {
            for entry in shards {
                let got = mirror.fetch(&entry.file, &entry.sha256).map(|_| ());
                let failed = got.is_err();
                if tx.send(got.map_err(LoaderError::from)).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| LoaderError::Io {
            path: dir.to_owned(),
            source: e,
        })?;
    Ok(rx)
}

/// The prefetching stream of padded tensor batches.
pub struct Loader {
    index: ShardIndex,
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
    state: LoaderState,
    /// The global batch the stream stops before.
    end: u64,
}

impl Loader {
    /// Opens `dir/index.json` and starts reading at `start` (use `LoaderState::default()` for the
    /// beginning, or the `next` of the last consumed batch to resume). Shards are verified
    /// first, as `opts.verify` says.
    pub fn open(dir: &Path, start: LoaderState, opts: &LoaderOptions) -> Result<Self> {
        Loader::open_with_progress(dir, start, opts, &NoProgress)
    }

    /// [`Loader::open`], reporting the up-front verification (bytes hashed) to `progress`.
    pub fn open_with_progress(
        dir: &Path,
        start: LoaderState,
        opts: &LoaderOptions,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let index = ShardIndex::read(dir)?;
        let index_path = dir.join(schemas::SHARD_INDEX_FILE);
        if opts.world_size == 0 || opts.rank >= opts.world_size {
            return Err(LoaderError::invalid(
                &index_path,
                format!(
                    "rank {} is not below world size {}",
                    opts.rank, opts.world_size
                ),
            ));
        }
        if opts.world_size as u64 > index.batch_size {
            return Err(LoaderError::invalid(
                &index_path,
                format!(
                    "world size {} exceeds the batch size {}: some ranks would get empty batches",
                    opts.world_size, index.batch_size
                ),
            ));
        }
        let total = index.total_batches();
        if start.batch < total && locate(&index, start.batch).map(|s| s.shard) != Some(start.shard)
        {
            return Err(LoaderError::invalid(
                &index_path,
                format!("resume position {start:?} does not match the shard list"),
            ));
        }
        let end = opts.end_batch.unwrap_or(total).min(total);
        // A mirror of a remote shard set: its shards arrive verified (sha256) as they are fetched.
        let mirror = store::Mirror::detect(dir)?;
        if mirror.is_none() {
            verify_shards(dir, &index, start, end, opts.verify, progress)?;
        }
        let pad_id = index.tokenizer.pad_token_id;
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        // Fast mode hashes the shards it did not hash up front just before reading them.
        let lazy = opts.verify == Verify::Fast && mirror.is_none();
        // Only the shards up to `end` are opened (and, in fast mode, hashed).
        let mut limited = index.clone();
        limited
            .shards
            .truncate(shards_between(&index, start, end).end);
        let fetched = match mirror {
            Some(m) => Some(fetch_ahead(m, dir, &limited, start)?),
            None => None,
        };
        let raw = rank_batches(
            dir,
            &limited,
            start,
            opts.rank,
            opts.world_size,
            lazy,
            fetched,
        )
        .take_while(move |b| b.as_ref().map_or(true, |b| b.index < end));
        let device = opts.device.clone();
        let shards = index.clone();
        let handle = std::thread::Builder::new()
            .name("prep-loader".into())
            .spawn(move || {
                for b in raw {
                    let item = b.and_then(|b| {
                        let next = locate(&shards, b.index + 1).unwrap_or(LoaderState {
                            shard: shards.shards.len(),
                            batch: b.index + 1,
                        });
                        b.to_tensors(pad_id, next, &device)
                    });
                    let failed = item.is_err();
                    // The consumer hung up (dropped the loader): stop reading.
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| LoaderError::Io {
                path: dir.to_owned(),
                source: e,
            })?;
        Ok(Loader {
            index,
            rx,
            handle: Some(handle),
            state: start,
            end,
        })
    }

    pub fn index(&self) -> &ShardIndex {
        &self.index
    }

    /// The position of the next batch this loader yields.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Batches left from the current position to the end of the stream.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.state.batch)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rx.recv().ok()?;
        if let Ok(b) = &item {
            self.state = b.next;
        }
        Some(item)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the reader (its send fails once the receiver is gone), then wait for it.
        let (_tx, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
