//! The shard files (`shard-NNNNN.parquet`): their Arrow schema ([`shard_schema`]), the one
//! writer ([`ShardWriter`]) and the one reader ([`ShardReader`]). The folder's `index.json` is
//! [`crate::index`].

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Result, SchemaError};
pub use crate::index::{ShardEntry, ShardIndex, SHARD_INDEX_FILE};
use crate::{AtomicFile, Sha256Writer};

/// File name of shard `index` in a shard folder.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.parquet")
}

fn id_list_field(name: &str, nullable: bool) -> Field {
    Field::new_list(
        name,
        Field::new_list_field(DataType::UInt32, false),
        nullable,
    )
}

/// The Arrow schema of a shard file. Rows are in batch order and a file holds whole batches
/// (one Parquet row group per batch).
///
/// - `batch` (UInt64): global batch index, `dataset` (Utf8): the dataset the row came from;
/// - `anchor_ids`, `positive_ids` (List<UInt32>, non-null): token ids including `[CLS]`/`[SEP]`,
///   already truncated; `negative_ids` (List<UInt32>): null in pair batches;
/// - with `keep_text`, also the raw `anchor`, `positive`, `negative` (Utf8, `negative` nullable).
pub fn shard_schema(keep_text: bool) -> SchemaRef {
    shard_schema_for(keep_text, 1)
}

/// Name of the id column of negative column `k` (0-based): `negative_ids`, `negative_2_ids`, ...
pub fn negative_ids_column(k: usize) -> String {
    format!("{}_ids", crate::negative_column(k))
}

/// [`shard_schema`] of a mix whose datasets have up to `negative_columns` negatives: after
/// `negative_ids`, the columns `negative_2_ids` .. `negative_N_ids` (and with `keep_text` the
/// texts `negative_2` .. `negative_N` after `negative`), all nullable: a batch of a dataset with
/// fewer negatives leaves the rest null. With at most one negative column the schema (and so
/// every byte of the file) is the one pair and triplet mixes have always had.
pub fn shard_schema_for(keep_text: bool, negative_columns: usize) -> SchemaRef {
    let extra = 1..negative_columns.max(1);
    let mut fields = vec![
        Field::new("batch", DataType::UInt64, false),
        Field::new("dataset", DataType::Utf8, false),
        id_list_field("anchor_ids", false),
        id_list_field("positive_ids", false),
        id_list_field("negative_ids", true),
    ];
    fields.extend(
        extra
            .clone()
            .map(|k| id_list_field(&negative_ids_column(k), true)),
    );
    if keep_text {
        fields.push(Field::new("anchor", DataType::Utf8, false));
        fields.push(Field::new("positive", DataType::Utf8, false));
        fields.push(Field::new("negative", DataType::Utf8, true));
        fields.extend(extra.map(|k| Field::new(crate::negative_column(k), DataType::Utf8, true)));
    }
    Arc::new(Schema::new(fields))
}

/// One row of a shard: one tokenized example of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardRow {
    pub batch: u64,
    pub dataset: String,
    pub anchor_ids: Vec<u32>,
    pub positive_ids: Vec<u32>,
    /// `None` in pair batches.
    pub negative_ids: Option<Vec<u32>>,
    /// Negative columns 2..N (`negative_2_ids`, ...): empty unless the dataset has more than one.
    pub extra_negative_ids: Vec<Vec<u32>>,
    /// The raw texts, present only in shards written with `--keep-text`.
    pub anchor: Option<String>,
    pub positive: Option<String>,
    pub negative: Option<String>,
    /// Texts of negatives 2..N, with `--keep-text`.
    pub extra_negatives: Vec<String>,
}

impl ShardRow {
    /// Negative columns this row has.
    pub fn negative_columns(&self) -> usize {
        usize::from(self.negative_ids.is_some()) + self.extra_negative_ids.len()
    }
}

/// One whole batch read back from a shard: every row has the same `batch` and `dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardBatch {
    pub batch: u64,
    pub dataset: String,
    pub anchor_ids: Vec<Vec<u32>>,
    pub positive_ids: Vec<Vec<u32>>,
    /// `Some` (one list per row) in batches with negatives.
    pub negative_ids: Option<Vec<Vec<u32>>>,
    /// Negative columns 2..N, each one list per row: empty unless the batch has several.
    pub extra_negative_ids: Vec<Vec<Vec<u32>>>,
}

impl ShardBatch {
    /// Every negative column (each one list per row), in column order: none in pair batches.
    pub fn into_negative_columns(self) -> Vec<Vec<Vec<u32>>> {
        self.negative_ids
            .into_iter()
            .chain(self.extra_negative_ids)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.anchor_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.anchor_ids.is_empty()
    }
}

fn push_ids(builder: &mut ListBuilder<UInt32Builder>, ids: Option<&[u32]>) {
    match ids {
        Some(ids) => {
            builder.values().append_slice(ids);
            builder.append(true);
        }
        None => builder.append(false),
    }
}

/// Builds the Arrow batch of `rows` with [`shard_schema`]`(keep_text)`. Texts missing from a row
/// are an error when `keep_text` is set.
pub fn shard_record_batch(rows: &[ShardRow], keep_text: bool) -> Result<RecordBatch> {
    shard_record_batch_for(rows, keep_text, 1)
}

/// [`shard_record_batch`] with [`shard_schema_for`]`(keep_text, negative_columns)`; a row with
/// more negatives than that is an error.
pub fn shard_record_batch_for(
    rows: &[ShardRow],
    keep_text: bool,
    negative_columns: usize,
) -> Result<RecordBatch> {
    let here = Path::new("<shard rows>");
    let extra = negative_columns.max(1) - 1;
    let item = || Arc::new(Field::new_list_field(DataType::UInt32, false));
    let ids_builder = || ListBuilder::new(UInt32Builder::new()).with_field(item());
    let mut batch = UInt64Builder::with_capacity(rows.len());
    let mut dataset = StringBuilder::new();
    let (mut a, mut p, mut n) = (ids_builder(), ids_builder(), ids_builder());
    let (mut ta, mut tp, mut tn) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut xn: Vec<_> = (0..extra).map(|_| ids_builder()).collect();
    let mut txn: Vec<_> = (0..extra).map(|_| StringBuilder::new()).collect();
    for (i, r) in rows.iter().enumerate() {
        if r.extra_negative_ids.len() > extra || (r.negative_ids.is_none() && extra_set(r)) {
            let msg = format!(
                "row {i} has {} negative columns (a first one: {}) in a shard of {}",
                r.negative_columns(),
                r.negative_ids.is_some(),
                negative_columns.max(1)
            );
            return Err(SchemaError::invalid(here, msg));
        }
        for (k, b) in xn.iter_mut().enumerate() {
            push_ids(b, r.extra_negative_ids.get(k).map(Vec::as_slice));
        }
        batch.append_value(r.batch);
        dataset.append_value(&r.dataset);
        push_ids(&mut a, Some(&r.anchor_ids));
        push_ids(&mut p, Some(&r.positive_ids));
        push_ids(&mut n, r.negative_ids.as_deref());
        if keep_text {
            let (Some(anchor), Some(positive)) = (&r.anchor, &r.positive) else {
                return Err(SchemaError::invalid(
                    here,
                    format!("row {i} has no text to keep"),
                ));
            };
            ta.append_value(anchor);
            tp.append_value(positive);
            tn.append_option(r.negative.as_deref());
            for (k, b) in txn.iter_mut().enumerate() {
                b.append_option(r.extra_negatives.get(k));
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(batch.finish()),
        Arc::new(dataset.finish()),
        Arc::new(a.finish()),
        Arc::new(p.finish()),
        Arc::new(n.finish()),
    ];
    columns.extend(xn.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    if keep_text {
        columns.push(Arc::new(ta.finish()));
        columns.push(Arc::new(tp.finish()));
        columns.push(Arc::new(tn.finish()));
        columns.extend(txn.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    }
    let schema = shard_schema_for(keep_text, negative_columns);
    RecordBatch::try_new(schema, columns).map_err(|e| SchemaError::Arrow {
        path: here.to_path_buf(),
        source: e,
    })
}

fn extra_set(r: &ShardRow) -> bool {
    !r.extra_negative_ids.is_empty() || !r.extra_negatives.is_empty()
}

fn column<'a, T: 'static>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<&'a T>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(col) => col.as_any().downcast_ref::<T>().map(Some).ok_or_else(|| {
            SchemaError::invalid(
                path,
                format!("shard column `{name}` has type {}", col.data_type()),
            )
        }),
    }
}

fn required<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    column(path, batch, name)?
        .ok_or_else(|| SchemaError::invalid(path, format!("not a shard: no `{name}` column")))
}

fn ids_at(path: &Path, list: &ListArray, name: &str, i: usize) -> Result<Option<Vec<u32>>> {
    if list.is_null(i) {
        return Ok(None);
    }
    let values = list
        .values()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| SchemaError::invalid(path, format!("`{name}` items are not UInt32")))?;
    let offsets = list.value_offsets();
    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
    Ok(Some(values.values()[start..end].to_vec()))
}

/// Appends the rows of a shard record batch to `out`.
pub fn shard_rows_from_batch(
    path: &Path,
    batch: &RecordBatch,
    out: &mut Vec<ShardRow>,
) -> Result<()> {
    let index = required::<UInt64Array>(path, batch, "batch")?;
    let dataset = required::<StringArray>(path, batch, "dataset")?;
    let a = required::<ListArray>(path, batch, "anchor_ids")?;
    let p = required::<ListArray>(path, batch, "positive_ids")?;
    let n = required::<ListArray>(path, batch, "negative_ids")?;
    let ta = column::<StringArray>(path, batch, "anchor")?;
    let tp = column::<StringArray>(path, batch, "positive")?;
    let tn = column::<StringArray>(path, batch, "negative")?;
    let xn = extra_id_columns(path, batch)?;
    let mut txn = Vec::new();
    while let Some(c) = column::<StringArray>(path, batch, &crate::negative_column(txn.len() + 1))?
    {
        txn.push(c);
    }
    let text = |col: Option<&StringArray>, i: usize| {
        col.filter(|c| c.is_valid(i)).map(|c| c.value(i).to_owned())
    };
    for i in 0..batch.num_rows() {
        let (Some(anchor_ids), Some(positive_ids)) = (
            ids_at(path, a, "anchor_ids", i)?,
            ids_at(path, p, "positive_ids", i)?,
        ) else {
            return Err(SchemaError::invalid(
                path,
                format!("row {i}: null anchor_ids or positive_ids"),
            ));
        };
        out.push(ShardRow {
            batch: index.value(i),
            dataset: dataset.value(i).to_owned(),
            anchor_ids,
            positive_ids,
            negative_ids: ids_at(path, n, "negative_ids", i)?,
            extra_negative_ids: extra_ids_at(path, &xn, i)?,
            anchor: text(ta, i),
            positive: text(tp, i),
            negative: text(tn, i),
            extra_negatives: txn.iter().map_while(|c| text(Some(c), i)).collect(),
        });
    }
    Ok(())
}

/// The columns `negative_2_ids` .. present in `batch`, in order.
fn extra_id_columns<'a>(path: &Path, batch: &'a RecordBatch) -> Result<Vec<&'a ListArray>> {
    let mut out = Vec::new();
    while let Some(c) = column::<ListArray>(path, batch, &negative_ids_column(out.len() + 1))? {
        out.push(c);
    }
    Ok(out)
}

/// Row `i` of the extra negative id columns: the leading non-null ones (a batch with fewer
/// negatives than the shard leaves the rest null); a set column after a null one is an error.
fn extra_ids_at(path: &Path, cols: &[&ListArray], i: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    for (k, c) in cols.iter().enumerate() {
        let name = negative_ids_column(k + 1);
        match ids_at(path, c, &name, i)? {
            Some(ids) if out.len() == k => out.push(ids),
            Some(_) => {
                let msg = format!("row {i}: `{name}` set after a null negative column");
                return Err(SchemaError::invalid(path, msg));
            }
            None => {}
        }
    }
    Ok(out)
}

/// How a [`ShardWriter`] lays out its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWriterOptions {
    /// Rows of one batch: the most rows a row group holds.
    pub batch_size: usize,
    /// Also write the raw texts (`--keep-text`).
    pub keep_text: bool,
}

/// Writes one shard file: under a temporary name until [`ShardWriter::finish`], one Parquet row
/// group per batch, sha256 computed while writing. The one writer of the shard contract.
pub struct ShardWriter {
    path: PathBuf,
    options: ShardWriterOptions,
    writer: ArrowWriter<Sha256Writer<AtomicFile>>,
    rows: u64,
    first_batch: Option<u64>,
    batches: u64,
    negative_columns: usize,
}

impl ShardWriter {
    /// A shard of pair and triplet batches: [`shard_schema`].
    pub fn create(path: impl Into<PathBuf>, options: ShardWriterOptions) -> Result<Self> {
        Self::create_for(path, options, 1)
    }

    /// A shard whose batches have up to `negative_columns` negatives: [`shard_schema_for`].
    pub fn create_for(
        path: impl Into<PathBuf>,
        options: ShardWriterOptions,
        negative_columns: usize,
    ) -> Result<Self> {
        let path = path.into();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_row_count(Some(options.batch_size.max(1)))
            .set_created_by(format!("prep {}", crate::PREP_VERSION))
            .build();
        let sink = Sha256Writer::new(AtomicFile::create(&path)?);
        let schema = shard_schema_for(options.keep_text, negative_columns);
        let writer =
            ArrowWriter::try_new(sink, schema, Some(props)).map_err(|e| SchemaError::Parquet {
                path: path.clone(),
                source: e,
            })?;
        Ok(ShardWriter {
            path,
            options,
            writer,
            rows: 0,
            first_batch: None,
            batches: 0,
            negative_columns,
        })
    }

    fn parquet_err(&self, e: parquet::errors::ParquetError) -> SchemaError {
        SchemaError::Parquet {
            path: self.path.clone(),
            source: e,
        }
    }

    /// Appends one whole batch as its own row group.
    pub fn write_batch(&mut self, rows: &[ShardRow]) -> Result<()> {
        let batch = shard_record_batch_for(rows, self.options.keep_text, self.negative_columns)
            .map_err(|e| match e {
                SchemaError::Invalid { message, .. } => SchemaError::invalid(&self.path, message),
                e => e,
            })?;
        self.writer.write(&batch).map_err(|e| self.parquet_err(e))?;
        self.writer.flush().map_err(|e| self.parquet_err(e))?;
        if let Some(first) = rows.first() {
            self.first_batch.get_or_insert(first.batch);
        }
        self.rows += rows.len() as u64;
        self.batches += 1;
        Ok(())
    }

    /// Closes the file, renames it into place and returns its index entry.
    pub fn finish(self) -> Result<ShardEntry> {
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (rows, first_batch, batches, path) =
            (self.rows, self.first_batch, self.batches, self.path.clone());
        let sink = self.writer.into_inner().map_err(|e| SchemaError::Parquet {
            path: path.clone(),
            source: e,
        })?;
        let (atomic, sha256, _bytes) = sink.finish();
        atomic.commit()?;
        Ok(ShardEntry {
            file,
            rows,
            first_batch: first_batch.unwrap_or(0),
            batches,
            sha256,
        })
    }
}

/// The columns every shard has; [`ShardReader::batches`] reads only these (never the texts
/// of `--keep-text` shards).
const ID_COLUMNS: [&str; 5] = [
    "batch",
    "dataset",
    "anchor_ids",
    "positive_ids",
    "negative_ids",
];

/// `negative_2_ids`, `negative_3_ids`, ...: the id columns of negatives beyond the first.
fn is_extra_ids(name: &str) -> bool {
    name.strip_prefix("negative_")
        .and_then(|r| r.strip_suffix("_ids"))
        .and_then(|k| k.parse::<usize>().ok())
        .is_some_and(|k| k >= 2)
}

/// Reads one shard file: every row, or whole batches in order (one row group per batch in
/// prep's shards; a batch spread over several row groups reads back whole too). The footer is
/// parsed once, in [`ShardReader::open`]. The one reader of the shard contract.
pub struct ShardReader {
    path: PathBuf,
    file: File,
    metadata: ArrowReaderMetadata,
    row_groups: Vec<u64>,
    /// The root columns in [`ID_COLUMNS`].
    ids: ProjectionMask,
}

impl ShardReader {
    /// Opens a shard, reading its footer: fails, naming the file, when it is not Parquet or
    /// lacks a shard column.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = File::open(&path).map_err(|e| SchemaError::io(&path, e))?;
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).map_err(|e| {
                SchemaError::Parquet {
                    path: path.clone(),
                    source: e,
                }
            })?;
        for col in ID_COLUMNS {
            if metadata.schema().field_with_name(col).is_err() {
                return Err(SchemaError::invalid(
                    &path,
                    format!("not a shard: no `{col}` column"),
                ));
            }
        }
        let roots = metadata
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| ID_COLUMNS.contains(&f.name().as_str()) || is_extra_ids(f.name()))
            .map(|(i, _)| i);
        let ids = ProjectionMask::roots(metadata.parquet_schema(), roots);
        let row_groups = metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows() as u64)
            .collect();
        Ok(ShardReader {
            path,
            file,
            metadata,
            row_groups,
            ids,
        })
    }

    /// Opens the shard `entry` of the folder `dir` after checking its sha256 against the index.
    pub fn open_verified(dir: &Path, entry: &ShardEntry) -> Result<Self> {
        let path = dir.join(&entry.file);
        let actual = crate::sha256_file(&path)?;
        if actual != entry.sha256 {
            return Err(SchemaError::invalid(
                &path,
                format!(
                    "sha256 is {actual}, {SHARD_INDEX_FILE} says {} (shard changed after mixing)",
                    entry.sha256
                ),
            ));
        }
        Self::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows per row group (each row group is one batch in shards written by prep).
    pub fn row_groups(&self) -> &[u64] {
        &self.row_groups
    }

    pub fn rows(&self) -> u64 {
        self.row_groups.iter().sum()
    }

    /// The record batches of row groups `groups` (all when `None`), only the `ids` columns
    /// when set, handed to `each` in order.
    fn read(
        &self,
        groups: Option<Vec<usize>>,
        ids_only: bool,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| SchemaError::io(&self.path, e))?;
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone());
        if let Some(groups) = groups {
            builder = builder.with_row_groups(groups);
        }
        if ids_only {
            builder = builder.with_projection(self.ids.clone());
        }
        let reader = builder.build().map_err(|e| SchemaError::Parquet {
            path: self.path.clone(),
            source: e,
        })?;
        for batch in reader {
            let batch = batch.map_err(|e| SchemaError::Arrow {
                path: self.path.clone(),
                source: e,
            })?;
            each(&batch)?;
        }
        Ok(())
    }

    /// Every row of the file, in order, texts included.
    pub fn read_rows(&self) -> Result<Vec<ShardRow>> {
        let mut out = Vec::new();
        self.read(None, false, |b| {
            shard_rows_from_batch(&self.path, b, &mut out)
        })?;
        Ok(out)
    }

    /// The rows of one row group, texts included.
    pub fn read_row_group(&self, index: usize) -> Result<Vec<ShardRow>> {
        let mut out = Vec::new();
        self.read(Some(vec![index]), false, |b| {
            shard_rows_from_batch(&self.path, b, &mut out)
        })?;
        Ok(out)
    }

    /// The file's batches in order, read one row group at a time and only the id columns (the
    /// texts of `--keep-text` shards are never decoded). Rows are grouped by their `batch`
    /// value, so a batch spanning row groups comes back whole; a batch mixing datasets, or
    /// pair and triplet rows, is an error naming the file. Nothing follows an error.
    pub fn batches(&self) -> impl Iterator<Item = Result<ShardBatch>> + '_ {
        batch_iter(self)
    }

    /// [`ShardReader::batches`], owning the reader (to hand to another thread).
    pub fn into_batches(self) -> impl Iterator<Item = Result<ShardBatch>> + Send + 'static {
        batch_iter(Box::new(self))
    }
}

fn batch_iter<R>(reader: R) -> impl Iterator<Item = Result<ShardBatch>>
where
    R: std::ops::Deref<Target = ShardReader>,
{
    let mut pending: VecDeque<ShardBatch> = VecDeque::new();
    let mut group = 0usize;
    let mut failed = false;
    let groups = reader.row_groups.len();
    std::iter::from_fn(move || loop {
        if failed {
            return None;
        }
        // A batch is whole once the next one has begun, or the file has ended.
        if pending.len() > 1 || (group >= groups && !pending.is_empty()) {
            return pending.pop_front().map(Ok);
        }
        if group >= groups {
            return None;
        }
        let read = reader.read(Some(vec![group]), true, |b| {
            absorb_ids(&reader.path, b, &mut pending)
        });
        group += 1;
        if let Err(e) = read {
            failed = true;
            return Some(Err(e));
        }
    })
}

/// Appends the rows of an id-column record batch to the batches in `pending`, starting a new
/// batch whenever the `batch` value changes.
fn absorb_ids(path: &Path, rb: &RecordBatch, pending: &mut VecDeque<ShardBatch>) -> Result<()> {
    let index = required::<UInt64Array>(path, rb, "batch")?;
    let dataset = required::<StringArray>(path, rb, "dataset")?;
    let a = required::<ListArray>(path, rb, "anchor_ids")?;
    let p = required::<ListArray>(path, rb, "positive_ids")?;
    let n = required::<ListArray>(path, rb, "negative_ids")?;
    let xn = extra_id_columns(path, rb)?;
    for i in 0..rb.num_rows() {
        let (b, ds) = (index.value(i), dataset.value(i));
        let (Some(anchor), Some(positive)) = (
            ids_at(path, a, "anchor_ids", i)?,
            ids_at(path, p, "positive_ids", i)?,
        ) else {
            return Err(SchemaError::invalid(
                path,
                format!("batch {b}: null anchor_ids or positive_ids"),
            ));
        };
        let negative = ids_at(path, n, "negative_ids", i)?;
        let extra = extra_ids_at(path, &xn, i)?;
        if negative.is_none() && !extra.is_empty() {
            let msg = format!("batch {b}: `negative_2_ids` set without `negative_ids`");
            return Err(SchemaError::invalid(path, msg));
        }
        if pending.back().is_none_or(|last| last.batch != b) {
            pending.push_back(ShardBatch {
                batch: b,
                dataset: ds.to_owned(),
                negative_ids: negative.as_ref().map(|_| Vec::new()),
                extra_negative_ids: vec![Vec::new(); extra.len()],
                ..Default::default()
            });
        }
        let cur = pending.back_mut().expect("pushed above");
        if cur.dataset != ds {
            let msg = format!("batch {b} mixes datasets `{}` and `{ds}`", cur.dataset);
            return Err(SchemaError::invalid(path, msg));
        }
        match (cur.negative_ids.as_mut(), negative) {
            (Some(list), Some(ids)) => list.push(ids),
            (None, None) => {}
            _ => {
                let msg = format!("batch {b} mixes pairs and triplets");
                return Err(SchemaError::invalid(path, msg));
            }
        }
        if cur.extra_negative_ids.len() != extra.len() {
            let msg = format!(
                "batch {b} mixes rows of {} and {} negative columns",
                1 + cur.extra_negative_ids.len(),
                1 + extra.len()
            );
            return Err(SchemaError::invalid(path, msg));
        }
        for (col, ids) in cur.extra_negative_ids.iter_mut().zip(extra) {
            col.push(ids);
        }
        cur.anchor_ids.push(anchor);
        cur.positive_ids.push(positive);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    fn row(batch: u64, i: u32, triplet: bool) -> ShardRow {
        ShardRow {
            batch,
            dataset: if triplet { "t".into() } else { "p".into() },
            anchor_ids: vec![101, i, 102],
            positive_ids: vec![101, i + 1, i + 2, 102],
            negative_ids: triplet.then(|| vec![101, 102]),
            anchor: Some(format!("a{i}")),
            positive: Some(format!("p{i}")),
            negative: triplet.then(|| format!("n{i}")),
            ..Default::default()
        }
    }

    #[test]
    fn shard_rows_and_batches_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(shard_file_name(3));
        assert!(path.ends_with("shard-00003.parquet"));
        let batches = [
            vec![row(6, 1, false), row(6, 2, false)],
            vec![row(7, 3, true), row(7, 4, true)],
        ];
        let options = ShardWriterOptions {
            batch_size: 2,
            keep_text: true,
        };
        let mut w = ShardWriter::create(&path, options).unwrap();
        for b in &batches {
            w.write_batch(b).unwrap();
        }
        let entry = w.finish().unwrap();
        assert_eq!(
            (
                entry.file.as_str(),
                entry.rows,
                entry.first_batch,
                entry.batches
            ),
            ("shard-00003.parquet", 4, 6, 2)
        );
        assert_eq!(entry.sha256, crate::sha256_file(&path).unwrap());
        ShardReader::open_verified(dir.path(), &entry).unwrap();

        let r = ShardReader::open(&path).unwrap();
        assert_eq!(r.row_groups(), &[2, 2]);
        let all: Vec<ShardRow> = batches.concat();
        assert_eq!(r.read_rows().unwrap(), all);
        let back: Vec<ShardBatch> = r.batches().collect::<Result<_>>().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].batch, back[0].dataset.as_str()), (6, "p"));
        assert_eq!(back[0].positive_ids[1], vec![101, 3, 4, 102]);
        assert!(back[0].negative_ids.is_none());
        assert_eq!(back[1].negative_ids.as_ref().unwrap().len(), 2);

        // Without texts the text columns are absent and rows read back with None.
        let plain: Vec<ShardRow> = all
            .iter()
            .map(|r| ShardRow {
                anchor: None,
                positive: None,
                negative: None,
                ..r.clone()
            })
            .collect();
        let rb = shard_record_batch(&plain, false).unwrap();
        assert_eq!(rb.num_columns(), 5);
        let mut out = Vec::new();
        shard_rows_from_batch(&path, &rb, &mut out).unwrap();
        assert_eq!(out, plain);
        assert!(
            shard_record_batch(&plain, true).is_err(),
            "keep_text needs texts"
        );
    }

    #[test]
    fn tampered_shard_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(shard_file_name(0));
        let options = ShardWriterOptions {
            batch_size: 2,
            keep_text: false,
        };
        let mut w = ShardWriter::create(&path, options).unwrap();
        w.write_batch(&[row(0, 1, false), row(0, 2, false)])
            .unwrap();
        let entry = w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = ShardReader::open_verified(dir.path(), &entry)
            .err()
            .expect("a changed shard must be rejected")
            .to_string();
        assert!(err.contains("shard-00000.parquet"), "{err}");
        assert!(err.contains("sha256"), "{err}");
    }
}
