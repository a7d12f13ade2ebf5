//! One dataset as an endless, shuffled stream of records, in memory that does not grow with the
//! dataset: each epoch visits the row groups of all part files in a fresh random order, reads up
//! to [`INTERLEAVE`] of them at once in small batches, and draws rows at random from a bounded
//! shuffle buffer fed from a random open row group. Each epoch has its own named random stream.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;

use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use schemas::{records_from_batch, Arity, PairReader, PairRecord, SchemaError};

use crate::error::{MixError, Result};
use crate::rng::named_rng;

/// Row groups read at the same time: rows of neighbouring source records (one site, one
/// document) spread over this many places in the stream.
pub const INTERLEAVE: usize = 4;
/// Rows decoded at a time from one row group.
const READ_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Unit {
    file: usize,
    group: usize,
}

struct Cursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    pending: VecDeque<PairRecord>,
}

impl Cursor {
    fn next(&mut self) -> Result<Option<PairRecord>> {
        while self.pending.is_empty() {
            let Some(batch) = self.reader.next() else {
                return Ok(None);
            };
            let batch = batch.map_err(|e| SchemaError::Arrow {
                path: self.path.clone(),
                source: e,
            })?;
            let mut rows = Vec::with_capacity(batch.num_rows());
            records_from_batch(&self.path, &batch, &mut rows)?;
            self.pending.extend(rows);
        }
        Ok(self.pending.pop_front())
    }
}

/// Counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Records handed out, in all epochs.
    pub consumed: u64,
    /// The current epoch, 0 for the first pass.
    pub epoch: u64,
}

pub struct DatasetStream {
    id: String,
    seed: u64,
    files: Vec<PathBuf>,
    units: Vec<Unit>,
    rows: u64,
    arity: Arity,
    buffer_cap: usize,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    next_unit: usize,
    cursors: Vec<Cursor>,
    buffer: Vec<PairRecord>,
    stats: StreamStats,
}

impl DatasetStream {
    /// Opens the part files of dataset `id`. `buffer_cap` is the shuffle buffer in rows.
    pub fn open(
        id: &str,
        files: Vec<PathBuf>,
        arity: Arity,
        seed: u64,
        buffer_cap: usize,
    ) -> Result<Self> {
        let mut units = Vec::new();
        let mut rows = 0;
        for (f, path) in files.iter().enumerate() {
            let reader = PairReader::open(path)?;
            for (g, n) in reader.row_groups().iter().enumerate() {
                if *n > 0 {
                    units.push(Unit { file: f, group: g });
                    rows += n;
                }
            }
        }
        if rows == 0 {
            return Err(MixError::dataset(id, "has no rows"));
        }
        let mut s = DatasetStream {
            id: id.to_owned(),
            seed,
            files,
            units,
            rows,
            arity,
            buffer_cap: buffer_cap.max(1),
            rng: named_rng(seed, &["dataset", id, "epoch", "0"]),
            order: Vec::new(),
            next_unit: 0,
            cursors: Vec::new(),
            buffer: Vec::new(),
            stats: StreamStats::default(),
        };
        s.start_epoch(0);
        Ok(s)
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.stats.epoch = epoch;
        self.rng = named_rng(
            self.seed,
            &["dataset", &self.id, "epoch", &epoch.to_string()],
        );
        self.order = (0..self.units.len()).collect();
        self.order.shuffle(&mut self.rng);
        self.next_unit = 0;
        self.cursors.clear();
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn rows(&self) -> u64 {
        self.rows
    }
    pub fn arity(&self) -> Arity {
        self.arity
    }
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    fn open_cursor(&mut self, unit: Unit) -> Result<Cursor> {
        let path = self.files[unit.file].clone();
        let file = File::open(&path).map_err(|e| MixError::io(&path, e))?;
        let perr = |e| SchemaError::Parquet {
            path: path.clone(),
            source: e,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(perr)?
            .with_row_groups(vec![unit.group])
            .with_batch_size(READ_BATCH)
            .build()
            .map_err(perr)?;
        Ok(Cursor {
            path,
            reader,
            pending: VecDeque::new(),
        })
    }

    /// Tops the buffer up from the open row groups; false when this epoch has nothing left.
    fn fill(&mut self) -> Result<()> {
        while self.buffer.len() < self.buffer_cap {
            while self.cursors.len() < INTERLEAVE && self.next_unit < self.order.len() {
                let unit = self.units[self.order[self.next_unit]];
                self.next_unit += 1;
                let c = self.open_cursor(unit)?;
                self.cursors.push(c);
            }
            if self.cursors.is_empty() {
                break;
            }
            let c = self.rng.random_range(0..self.cursors.len());
            match self.cursors[c].next()? {
                Some(r) => {
                    // Counted, not `r.arity()`: any count is reported, never a panic.
                    let columns = 2 + r.negatives().count();
                    if columns != self.arity.columns() {
                        return Err(MixError::dataset(
                            &self.id,
                            format!(
                                "{}: a {columns}-column row in a {}-column dataset",
                                self.cursors[c].path.display(),
                                self.arity.columns()
                            ),
                        ));
                    }
                    self.buffer.push(r)
                }
                None => {
                    self.cursors.swap_remove(c);
                }
            }
        }
        Ok(())
    }

    /// The next record; a new epoch (reshuffled) starts when the current one is spent.
    pub fn next_record(&mut self) -> Result<PairRecord> {
        loop {
            self.fill()?;
            if !self.buffer.is_empty() {
                let i = self.rng.random_range(0..self.buffer.len());
                self.stats.consumed += 1;
                return Ok(self.buffer.swap_remove(i));
            }
            self.start_epoch(self.stats.epoch + 1);
        }
    }
}
