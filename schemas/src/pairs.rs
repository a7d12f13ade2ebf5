//! Normalized pair/triplet records and their Parquet files.
//!
//! A dataset is a folder of `part-NNNNN.parquet` files plus `manifest.json`. Columns:
//! `anchor`, `positive` (Utf8, non-null), `negative` (Utf8, null in pair datasets) and
//! `source_id` (Utf8, nullable: the id of the raw record the row came from).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SchemaError};
use crate::hash::Sha256Writer;

/// One training example: an anchor (query, title, question), its positive, and for datasets
/// with negative columns its hard negatives.
///
/// The first negative lives in `negative` and any further ones in `extra_negatives` (columns
/// `negative_2`, `negative_3`, ...): the 2- and 3-column records every source builds stay as
/// they were, and `extra_negatives` is non-empty only when `negative` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairRecord {
    pub anchor: String,
    pub positive: String,
    pub negative: Option<String>,
    /// Negatives 2..N (column `negative_{k}` holds `extra_negatives[k - 2]`).
    pub extra_negatives: Vec<String>,
    /// Id of the raw record this row came from, when the source has one.
    pub source_id: Option<String>,
}

impl PairRecord {
    pub fn pair(anchor: impl Into<String>, positive: impl Into<String>) -> Self {
        PairRecord {
            anchor: anchor.into(),
            positive: positive.into(),
            ..Default::default()
        }
    }
    pub fn triplet(
        anchor: impl Into<String>,
        positive: impl Into<String>,
        negative: impl Into<String>,
    ) -> Self {
        PairRecord {
            anchor: anchor.into(),
            positive: positive.into(),
            negative: Some(negative.into()),
            ..Default::default()
        }
    }
    /// A row with `negatives.len()` negative columns (a pair when empty).
    pub fn with_negatives(
        anchor: impl Into<String>,
        positive: impl Into<String>,
        negatives: Vec<String>,
    ) -> Self {
        let mut negatives = negatives.into_iter();
        PairRecord {
            anchor: anchor.into(),
            positive: positive.into(),
            negative: negatives.next(),
            extra_negatives: negatives.collect(),
            source_id: None,
        }
    }
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.source_id = Some(id.into());
        self
    }
    /// Every negative, in column order.
    pub fn negatives(&self) -> impl Iterator<Item = &String> + '_ {
        self.negative.iter().chain(&self.extra_negatives)
    }
    /// Every text of the row: anchor, positive, negatives.
    pub fn texts(&self) -> impl Iterator<Item = &String> + '_ {
        [&self.anchor, &self.positive]
            .into_iter()
            .chain(self.negatives())
    }
    pub fn arity(&self) -> Arity {
        Arity::with_negatives(self.negatives().count())
    }
}

/// Column count of a dataset: anchor, positive and 0..=[`Arity::MAX_NEGATIVES`] negatives;
/// fixed per dataset, recorded in its manifest (and per dataset in a shard index) as the number
/// of columns (2 for pairs, 3 for triplets, 2 + N for N negatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub struct Arity(u8);

// `Pair` and `Triplet` keep the names of the enum this type was while a dataset had 2 or 3
// columns, so the code that builds and matches those (every ingest source) reads as before.
#[allow(non_upper_case_globals)]
impl Arity {
    pub const Pair: Arity = Arity(2);
    pub const Triplet: Arity = Arity(3);
    /// The most negative columns a dataset may have (the count is stored as a `u8` of columns).
    pub const MAX_NEGATIVES: usize = 64;

    /// Anchor, positive and `negatives` negative columns. Panics above [`Arity::MAX_NEGATIVES`]
    /// (callers check user input with [`Arity::try_from`] first).
    pub fn with_negatives(negatives: usize) -> Arity {
        assert!(
            negatives <= Self::MAX_NEGATIVES,
            "{negatives} negative columns: at most {}",
            Self::MAX_NEGATIVES
        );
        Arity(2 + negatives as u8)
    }
    pub fn columns(self) -> usize {
        self.0 as usize
    }
    /// Negative columns: 0 for pairs, 1 for triplets.
    pub fn negatives(self) -> usize {
        self.0 as usize - 2
    }
}

impl From<Arity> for u8 {
    fn from(a: Arity) -> u8 {
        a.0
    }
}

impl TryFrom<u8> for Arity {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        if (2..=2 + Arity::MAX_NEGATIVES as u8).contains(&v) {
            Ok(Arity(v))
        } else {
            Err(format!(
                "a dataset has 2 to {} columns (anchor, positive, up to {} negatives), not {v}",
                2 + Arity::MAX_NEGATIVES,
                Arity::MAX_NEGATIVES
            ))
        }
    }
}

/// The name of negative column `k` (0-based): `negative`, then `negative_2`, `negative_3`, ...
/// The first keeps its 3-column name so a reader of triplets finds it whatever the count.
pub fn negative_column(k: usize) -> String {
    if k == 0 {
        "negative".to_owned()
    } else {
        format!("negative_{}", k + 1)
    }
}

/// The Arrow schema of pair and triplet files (`negative` null in pairs).
pub fn pairs_schema() -> SchemaRef {
    pairs_schema_for(Arity::Triplet)
}

/// The Arrow schema of a dataset of `arity`: `anchor`, `positive`, `negative`, `source_id` as
/// pairs and triplets have always had, then `negative_2` .. `negative_N` (non-null) when there
/// are more negatives, so 2- and 3-column files stay byte-identical.
pub fn pairs_schema_for(arity: Arity) -> SchemaRef {
    let mut fields = vec![
        Field::new("anchor", DataType::Utf8, false),
        Field::new("positive", DataType::Utf8, false),
        Field::new("negative", DataType::Utf8, true),
        Field::new("source_id", DataType::Utf8, true),
    ];
    for k in 1..arity.negatives() {
        fields.push(Field::new(negative_column(k), DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

/// Sizing of written files: row groups small enough to stream and to shuffle by, files large
/// enough to keep the count of files sane.
#[derive(Debug, Clone, Copy)]
pub struct PairWriterOptions {
    pub row_group_rows: usize,
    pub rows_per_file: usize,
    pub zstd_level: i32,
}

impl Default for PairWriterOptions {
    fn default() -> Self {
        PairWriterOptions {
            row_group_rows: 50_000,
            rows_per_file: 2_000_000,
            zstd_level: 3,
        }
    }
}

/// A finished part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

struct OpenPart {
    name: String,
    rows: u64,
    writer: ArrowWriter<Sha256Writer<BufWriter<File>>>,
}

/// Streams records into `part-NNNNN.parquet` files in one folder, holding at most one row group
/// in memory.
pub struct PairWriter {
    dir: PathBuf,
    arity: Arity,
    options: PairWriterOptions,
    anchor: StringBuilder,
    positive: StringBuilder,
    negative: StringBuilder,
    source_id: StringBuilder,
    /// Columns `negative_2` .. `negative_N`.
    extra_negatives: Vec<StringBuilder>,
    buffered: usize,
    current: Option<OpenPart>,
    parts: Vec<PartFile>,
}

impl PairWriter {
    pub fn new(dir: impl Into<PathBuf>, arity: Arity, options: PairWriterOptions) -> Self {
        PairWriter {
            dir: dir.into(),
            arity,
            options,
            anchor: StringBuilder::new(),
            positive: StringBuilder::new(),
            negative: StringBuilder::new(),
            source_id: StringBuilder::new(),
            extra_negatives: (1..arity.negatives())
                .map(|_| StringBuilder::new())
                .collect(),
            buffered: 0,
            current: None,
            parts: Vec::new(),
        }
    }

    pub fn arity(&self) -> Arity {
        self.arity
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum::<u64>()
            + self.current.as_ref().map_or(0, |c| c.rows)
            + self.buffered as u64
    }

    /// Appends one record. Its arity must match the writer's: a dataset never mixes them.
    pub fn push(&mut self, record: &PairRecord) -> Result<()> {
        // Counted, not `record.arity()`: a record with too many negatives is an error here.
        let columns = 2 + record.negatives().count();
        if columns != self.arity.columns() {
            return Err(SchemaError::invalid(
                &self.dir,
                format!(
                    "record with {columns} columns written to a {}-column dataset",
                    self.arity.columns()
                ),
            ));
        }
        self.anchor.append_value(&record.anchor);
        self.positive.append_value(&record.positive);
        self.negative.append_option(record.negative.as_deref());
        self.source_id.append_option(record.source_id.as_deref());
        for (b, n) in self.extra_negatives.iter_mut().zip(&record.extra_negatives) {
            b.append_value(n);
        }
        self.buffered += 1;
        if self.buffered >= self.options.row_group_rows {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> Result<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.anchor.finish()),
            Arc::new(self.positive.finish()),
            Arc::new(self.negative.finish()),
            Arc::new(self.source_id.finish()),
        ];
        for b in &mut self.extra_negatives {
            columns.push(Arc::new(b.finish()));
        }
        let batch = RecordBatch::try_new(pairs_schema_for(self.arity), columns).map_err(|e| {
            SchemaError::Arrow {
                path: self.dir.clone(),
                source: e,
            }
        })?;
        let rows = self.buffered as u64;
        self.buffered = 0;
        if self.current.is_none() {
            self.open_part()?;
        }
        let part = self.current.as_mut().expect("opened above");
        let path = self.dir.join(&part.name);
        part.writer
            .write(&batch)
            .map_err(|e| SchemaError::Parquet {
                path: path.clone(),
                source: e,
            })?;
        // One record batch per row group keeps row groups the unit the mixer shuffles by.
        part.writer
            .flush()
            .map_err(|e| SchemaError::Parquet { path, source: e })?;
        part.rows += rows;
        if part.rows >= self.options.rows_per_file as u64 {
            self.close_part()?;
        }
        Ok(())
    }

    fn open_part(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| SchemaError::io(&self.dir, e))?;
        let name = format!("part-{:05}.parquet", self.parts.len());
        let path = self.dir.join(&name);
        let file = File::create(&path).map_err(|e| SchemaError::io(&path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.options.zstd_level).unwrap_or_default(),
            ))
            .set_max_row_group_row_count(Some(self.options.row_group_rows))
            // Texts are nearly all distinct: dictionary encoding only costs time before falling back.
            .set_dictionary_enabled(false)
            .set_created_by(format!("prep {}", crate::PREP_VERSION))
            .build();
        let sink = Sha256Writer::new(BufWriter::with_capacity(1 << 20, file));
        let writer = ArrowWriter::try_new(sink, pairs_schema_for(self.arity), Some(props))
            .map_err(|e| SchemaError::Parquet { path, source: e })?;
        self.current = Some(OpenPart {
            name,
            rows: 0,
            writer,
        });
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let path = self.dir.join(&part.name);
        let sink = part.writer.into_inner().map_err(|e| SchemaError::Parquet {
            path: path.clone(),
            source: e,
        })?;
        let (buf, sha256, bytes) = sink.finish();
        let file = buf
            .into_inner()
            .map_err(|e| SchemaError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| SchemaError::io(&path, e))?;
        self.parts.push(PartFile {
            file: part.name,
            rows: part.rows,
            bytes,
            sha256,
        });
        Ok(())
    }

    /// Flushes and closes everything, returning the part files written (none for an empty dataset).
    pub fn finish(mut self) -> Result<Vec<PartFile>> {
        self.flush_group()?;
        self.close_part()?;
        Ok(self.parts)
    }
}

/// The part files of a dataset folder (sorted), or the file itself.
pub fn part_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| SchemaError::io(path, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SchemaError::io(path, e))?;
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".parquet") && !name.starts_with('.') {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Opens a Parquet file prep wrote, checks it has `required` columns (else "not {what}") and
/// returns it with its row-group sizes: what every typed reader needs before reading.
pub(crate) fn open_parquet(path: &Path, required: &[&str], what: &str) -> Result<(File, Vec<u64>)> {
    let file = File::open(path).map_err(|e| SchemaError::io(path, e))?;
    let clone = file.try_clone().map_err(|e| SchemaError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(clone).map_err(|e| SchemaError::Parquet {
            path: path.to_path_buf(),
            source: e,
        })?;
    for col in required {
        if builder.schema().field_with_name(col).is_err() {
            return Err(SchemaError::invalid(
                path,
                format!("not {what}: no `{col}` column"),
            ));
        }
    }
    let row_groups = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as u64)
        .collect();
    Ok((file, row_groups))
}

/// Reads one pairs Parquet file, whole or one row group at a time.
pub struct PairReader {
    path: PathBuf,
    builder_bytes: File,
    row_groups: Vec<u64>,
}

impl PairReader {
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (file, row_groups) = open_parquet(&path, &["anchor", "positive"], "a pairs file")?;
        Ok(PairReader {
            path,
            builder_bytes: file,
            row_groups,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in each row group.
    pub fn row_groups(&self) -> &[u64] {
        &self.row_groups
    }

    pub fn rows(&self) -> u64 {
        self.row_groups.iter().sum()
    }

    fn reader(&self, groups: Option<Vec<usize>>) -> Result<ParquetRecordBatchReader> {
        let file = self
            .builder_bytes
            .try_clone()
            .map_err(|e| SchemaError::io(&self.path, e))?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| SchemaError::Parquet {
                path: self.path.clone(),
                source: e,
            })?
            .with_batch_size(8192);
        if let Some(groups) = groups {
            builder = builder.with_row_groups(groups);
        }
        builder.build().map_err(|e| SchemaError::Parquet {
            path: self.path.clone(),
            source: e,
        })
    }

    /// The records of one row group.
    pub fn read_row_group(&self, index: usize) -> Result<Vec<PairRecord>> {
        let mut out = Vec::with_capacity(self.row_groups.get(index).copied().unwrap_or(0) as usize);
        for batch in self.reader(Some(vec![index]))? {
            let batch = batch.map_err(|e| SchemaError::Arrow {
                path: self.path.clone(),
                source: e,
            })?;
            records_from_batch(&self.path, &batch, &mut out)?;
        }
        Ok(out)
    }

    /// Every record, streamed batch by batch.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<PairRecord>> + '_> {
        let reader = self.reader(None)?;
        let path = self.path.clone();
        Ok(reader.flat_map(move |batch| {
            let mut out = Vec::new();
            let res = batch
                .map_err(|e| SchemaError::Arrow {
                    path: path.clone(),
                    source: e,
                })
                .and_then(|b| records_from_batch(&path, &b, &mut out));
            match res {
                Ok(()) => out.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        }))
    }
}

fn string_column<'a>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<&'a StringArray>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(col) => col
            .as_any()
            .downcast_ref::<StringArray>()
            .map(Some)
            .ok_or_else(|| SchemaError::invalid(path, format!("column `{name}` is not Utf8"))),
    }
}

/// Appends the rows of a pairs record batch to `out`.
pub fn records_from_batch(
    path: &Path,
    batch: &RecordBatch,
    out: &mut Vec<PairRecord>,
) -> Result<()> {
    let anchor = string_column(path, batch, "anchor")?
        .ok_or_else(|| SchemaError::invalid(path, "no `anchor` column"))?;
    let positive = string_column(path, batch, "positive")?
        .ok_or_else(|| SchemaError::invalid(path, "no `positive` column"))?;
    let negative = string_column(path, batch, "negative")?;
    let source_id = string_column(path, batch, "source_id")?;
    let mut extra = Vec::new();
    while let Some(col) = string_column(path, batch, &negative_column(extra.len() + 1))? {
        extra.push(col);
        if extra.len() >= Arity::MAX_NEGATIVES {
            let msg = format!(
                "more than {} negative columns (`{}` and beyond)",
                Arity::MAX_NEGATIVES,
                negative_column(extra.len())
            );
            return Err(SchemaError::invalid(path, msg));
        }
    }
    let opt = |col: Option<&StringArray>, i: usize| {
        col.filter(|c| c.is_valid(i)).map(|c| c.value(i).to_owned())
    };
    for i in 0..batch.num_rows() {
        if anchor.is_null(i) || positive.is_null(i) {
            return Err(SchemaError::invalid(
                path,
                format!("row {i} of a batch has a null anchor or positive"),
            ));
        }
        let negative = opt(negative, i);
        let extra_negatives = extra_negatives_at(path, &extra, i, negative.is_some())?;
        out.push(PairRecord {
            anchor: anchor.value(i).to_owned(),
            positive: positive.value(i).to_owned(),
            negative,
            extra_negatives,
            source_id: opt(source_id, i),
        });
    }
    Ok(())
}

/// Row `i` of the columns `negative_2` .. `negative_N`: every one set, and only after a first
/// negative (an n-tuple row never has a gap).
fn extra_negatives_at(
    path: &Path,
    extra: &[&StringArray],
    i: usize,
    has_first: bool,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(extra.len());
    for (k, col) in extra.iter().enumerate() {
        if col.is_null(i) || !has_first {
            let missing = if has_first {
                negative_column(k + 1)
            } else {
                negative_column(0)
            };
            return Err(SchemaError::invalid(
                path,
                format!(
                    "row {i} of a batch has a null `{missing}` in a dataset of {} negative columns",
                    extra.len() + 1
                ),
            ));
        }
        out.push(col.value(i).to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_across_row_groups_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PairWriterOptions {
            row_group_rows: 3,
            rows_per_file: 6,
            zstd_level: 1,
        };
        let mut w = PairWriter::new(dir.path(), Arity::Triplet, opts);
        let recs: Vec<_> = (0..14)
            .map(|i| {
                PairRecord::triplet(format!("q{i}"), format!("p{i}"), format!("n{i}"))
                    .with_id(i.to_string())
            })
            .collect();
        for r in &recs {
            w.push(r).unwrap();
        }
        assert!(
            w.push(&PairRecord::pair("a", "b")).is_err(),
            "arity is enforced"
        );
        let parts = w.finish().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
            vec![6, 6, 2]
        );
        let files = part_files(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let mut back = Vec::new();
        for f in &files {
            let r = PairReader::open(f).unwrap();
            assert_eq!(crate::sha256_file(f).unwrap(), parts[back.len() / 6].sha256);
            for rec in r.records().unwrap() {
                back.push(rec.unwrap());
            }
        }
        assert_eq!(back, recs);
        let first = PairReader::open(&files[0]).unwrap();
        assert_eq!(first.row_groups(), &[3, 3]);
        assert_eq!(first.read_row_group(1).unwrap(), recs[3..6].to_vec());
    }
}
