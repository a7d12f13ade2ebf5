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

/// One training example: an anchor (query, title, question), its positive, and for triplet
/// datasets a hard negative.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairRecord {
    pub anchor: String,
    pub positive: String,
    pub negative: Option<String>,
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
            source_id: None,
        }
    }
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.source_id = Some(id.into());
        self
    }
    pub fn arity(&self) -> Arity {
        if self.negative.is_some() {
            Arity::Triplet
        } else {
            Arity::Pair
        }
    }
}

/// Column count of a dataset: fixed per dataset, recorded in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Arity {
    Pair = 2,
    Triplet = 3,
}

impl Arity {
    pub fn columns(self) -> usize {
        self as usize
    }
}

impl From<Arity> for u8 {
    fn from(a: Arity) -> u8 {
        a as u8
    }
}

impl TryFrom<u8> for Arity {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            2 => Ok(Arity::Pair),
            3 => Ok(Arity::Triplet),
            n => Err(format!("a dataset has 2 or 3 columns, not {n}")),
        }
    }
}

/// The Arrow schema of every pairs file.
pub fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("anchor", DataType::Utf8, false),
        Field::new("positive", DataType::Utf8, false),
        Field::new("negative", DataType::Utf8, true),
        Field::new("source_id", DataType::Utf8, true),
    ]))
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
        if record.arity() != self.arity {
            return Err(SchemaError::invalid(
                &self.dir,
                format!(
                    "record with {} columns written to a {}-column dataset",
                    record.arity().columns(),
                    self.arity.columns()
                ),
            ));
        }
        self.anchor.append_value(&record.anchor);
        self.positive.append_value(&record.positive);
        self.negative.append_option(record.negative.as_deref());
        self.source_id.append_option(record.source_id.as_deref());
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
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.anchor.finish()),
            Arc::new(self.positive.finish()),
            Arc::new(self.negative.finish()),
            Arc::new(self.source_id.finish()),
        ];
        let batch =
            RecordBatch::try_new(pairs_schema(), columns).map_err(|e| SchemaError::Arrow {
                path: self.dir.clone(),
                source: e,
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
        let writer = ArrowWriter::try_new(sink, pairs_schema(), Some(props))
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
        out.push(PairRecord {
            anchor: anchor.value(i).to_owned(),
            positive: positive.value(i).to_owned(),
            negative: opt(negative, i),
            source_id: opt(source_id, i),
        });
    }
    Ok(())
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
