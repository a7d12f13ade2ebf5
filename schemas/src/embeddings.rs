//! Embedding files: the vectors `prep embed` writes and `prep search` reads back, and the text
//! files they are made from.
//!
//! Three formats, each with one writer and one reader (the symmetry polars-io keeps per format):
//! - **Parquet** ([`ParquetEmbeddingWriter`], [`read_parquet`]): columns `text` (Utf8) and
//!   `embedding` (`FixedSizeList<Float32, dim>`), zstd, 8192-row groups, and `prep.*` key-value
//!   metadata ([`EmbeddingMeta`]: the model, its weights' sha256, the input's sha256, ...), so a
//!   later search can trust or refuse the file without embedding the corpus again.
//! - **npy** ([`NpyEmbeddingWriter`], [`read_npy`]): a NumPy v1.0 C-order little-endian float32
//!   `[rows, dim]` array. The header comes first, so the row count is declared up front.
//! - **jsonl** ([`JsonlEmbeddingWriter`], [`read_jsonl`]): one JSON array of floats per line;
//!   f32 values are printed shortest-round-trip, so they read back bit-exact.
//!
//! Writers write under a temporary name and rename on `finish` ([`AtomicFile`]); a writer dropped
//! unfinished leaves nothing. Readers check what they trust (one dim for every row, the declared
//! row count, the dtype) and name the file and the row or line that breaks it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, ListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::atomic::AtomicFile;
use crate::error::SchemaError;

/// Rows per Parquet row group (and per batch `prep embed` streams).
pub const PARQUET_ROW_GROUP_ROWS: usize = 8192;

/// Why an embedding or text file could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// Opening, reading, writing or renaming (the path is in the message).
    #[error(transparent)]
    File(#[from] SchemaError),
    #[error("{path}: unknown embedding format `.{ext}` (use .parquet, .jsonl or .npy)")]
    UnknownFormat { path: PathBuf, ext: String },
    #[error("{path}: Parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: Arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: no column `{column}`{hint}")]
    MissingColumn {
        path: PathBuf,
        column: String,
        /// What the caller can choose instead (e.g. "; text columns: anchor, positive").
        hint: String,
    },
    #[error("{path}: column `{column}` is {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: row {row}: `{column}` is null")]
    Null {
        path: PathBuf,
        column: &'static str,
        row: u64,
    },
    /// A vector whose length is not the file's dim.
    #[error("{path}: {place} has {got} values, the file's dim is {dim}")]
    Dim {
        path: PathBuf,
        /// "row 3" (0-based, Parquet and writers) or "line 4" (1-based, jsonl).
        place: String,
        got: usize,
        dim: usize,
    },
    /// The `prep.dim` metadata disagrees with the vectors, or a key holds no valid value.
    #[error("{path}: metadata `{key}` = {value:?}: {reason}")]
    Metadata {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("{path}: {texts} texts for {vectors} vectors")]
    TextCount {
        path: PathBuf,
        texts: usize,
        vectors: usize,
    },
    /// An npy writer given more or fewer rows than its header declared.
    #[error("{path}: the npy header declares {declared} rows, {written} were written")]
    RowCount {
        path: PathBuf,
        declared: u64,
        written: u64,
    },
    #[error("{path}: not a NumPy .npy file (magic {found:?}, expected \"\\x93NUMPY\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("{path}: npy header: {reason}")]
    NpyHeader { path: PathBuf, reason: String },
    /// The data after the header is not `rows × dim` float32 values.
    #[error(
        "{path}: the npy header declares {rows} rows of {dim} float32 ({expected} bytes), the file holds {found} bytes of data"
    )]
    NpyLength {
        path: PathBuf,
        rows: u64,
        dim: usize,
        expected: u64,
        found: u64,
    },
    /// A line of a jsonl or text file (1-based).
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

pub type Result<T, E = EmbeddingError> = std::result::Result<T, E>;

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn parquet_err(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> EmbeddingError + '_ {
    move |source| EmbeddingError::Parquet {
        path: path.to_owned(),
        source,
    }
}

fn arrow_err(path: &Path) -> impl FnOnce(arrow_schema::ArrowError) -> EmbeddingError + '_ {
    move |source| EmbeddingError::Arrow {
        path: path.to_owned(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddingError + '_ {
    move |e| SchemaError::io(path, e).into()
}

/// The three embedding file formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    Parquet,
    Jsonl,
    Npy,
}

impl EmbeddingFormat {
    /// `.parquet`, `.jsonl`/`.ndjson` or `.npy` (any case).
    pub fn from_path(path: &Path) -> Result<Self> {
        match extension(path).as_str() {
            "parquet" => Ok(EmbeddingFormat::Parquet),
            "jsonl" | "ndjson" => Ok(EmbeddingFormat::Jsonl),
            "npy" => Ok(EmbeddingFormat::Npy),
            other => Err(EmbeddingError::UnknownFormat {
                path: path.to_owned(),
                ext: other.to_owned(),
            }),
        }
    }
}

/// What a Parquet embedding file records about how it was made (its `prep.*` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingMeta {
    /// The model folder, as given.
    pub model: String,
    /// sha256 of the model's weights: what makes two files' vectors comparable.
    pub model_sha256: String,
    /// sha256 of the text file embedded, when there was one.
    pub input_sha256: Option<String>,
    pub dim: usize,
    pub normalize: bool,
    /// "mean", "cls" or "max".
    pub pooling: String,
    pub max_seq_length: usize,
    /// The encoder's number format ("f32", "bf16", "int8", "tf32"): reduced-precision vectors
    /// differ from f32 ones. Files written before this key say nothing and were f32.
    pub precision: String,
}

const KEY_MODEL: &str = "prep.model";
const KEY_MODEL_SHA: &str = "prep.model_sha256";
const KEY_DIM: &str = "prep.dim";
const KEY_NORMALIZE: &str = "prep.normalize";
const KEY_POOLING: &str = "prep.pooling";
const KEY_MAX_SEQ: &str = "prep.max_seq_length";
const KEY_INPUT_SHA: &str = "prep.input_sha256";
const KEY_PRECISION: &str = "prep.precision";

impl EmbeddingMeta {
    fn key_values(&self) -> Vec<KeyValue> {
        let kv = |k: &str, v: String| KeyValue::new(k.to_owned(), v);
        let mut out = vec![
            kv(KEY_MODEL, self.model.clone()),
            kv(KEY_MODEL_SHA, self.model_sha256.clone()),
            kv(KEY_DIM, self.dim.to_string()),
            kv(KEY_NORMALIZE, self.normalize.to_string()),
            kv(KEY_POOLING, self.pooling.clone()),
            kv(KEY_MAX_SEQ, self.max_seq_length.to_string()),
            kv(KEY_PRECISION, self.precision.clone()),
        ];
        if let Some(s) = &self.input_sha256 {
            out.push(kv(KEY_INPUT_SHA, s.clone()));
        }
        out
    }

    /// The metadata of a file prep wrote; `None` for a file without `prep.model_sha256` (written
    /// by another tool). A present key with an unreadable value is an error.
    fn from_key_values(path: &Path, kv: &[KeyValue]) -> Result<Option<Self>> {
        let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
        let Some(model_sha256) = get(KEY_MODEL_SHA) else {
            return Ok(None);
        };
        let parse = |key: &'static str| -> Result<String> {
            get(key).ok_or_else(|| EmbeddingError::Metadata {
                path: path.to_owned(),
                key,
                value: String::new(),
                reason: format!("missing beside {KEY_MODEL_SHA}"),
            })
        };
        let number = |key: &'static str| -> Result<usize> {
            let v = parse(key)?;
            v.parse().map_err(|_| EmbeddingError::Metadata {
                path: path.to_owned(),
                key,
                value: v.clone(),
                reason: "not a whole number".to_owned(),
            })
        };
        let normalize = parse(KEY_NORMALIZE)?;
        Ok(Some(EmbeddingMeta {
            model: parse(KEY_MODEL)?,
            model_sha256,
            input_sha256: get(KEY_INPUT_SHA),
            dim: number(KEY_DIM)?,
            normalize: normalize.parse().map_err(|_| EmbeddingError::Metadata {
                path: path.to_owned(),
                key: KEY_NORMALIZE,
                value: normalize.clone(),
                reason: "not true or false".to_owned(),
            })?,
            pooling: parse(KEY_POOLING)?,
            max_seq_length: number(KEY_MAX_SEQ)?,
            precision: get(KEY_PRECISION).unwrap_or_else(|| "f32".to_owned()),
        }))
    }
}

/// An embedding file read back: vectors row-major, and what the file says about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Each row's text (Parquet's `text` column); `None` for npy, jsonl and Parquet files
    /// without one.
    pub texts: Option<Vec<String>>,
    /// `rows × dim` floats, row-major.
    pub vectors: Vec<f32>,
    /// Values per vector (from the file's schema or header; 0 for an empty jsonl file).
    pub dim: usize,
    /// The `prep.*` metadata of a Parquet file prep wrote.
    pub meta: Option<EmbeddingMeta>,
}

impl Embeddings {
    pub fn rows(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Row `i`'s vector.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// The Arrow schema of a Parquet embedding file of `dim` values per vector.
pub fn embedding_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item_field(), dim as i32),
            false,
        ),
    ]))
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// Every vector has `dim` values; `first` is the index of `vectors[0]` in the file.
fn check_dims(path: &Path, vectors: &[Vec<f32>], dim: usize, first: u64) -> Result<()> {
    match vectors.iter().position(|v| v.len() != dim) {
        None => Ok(()),
        Some(i) => Err(EmbeddingError::Dim {
            path: path.to_owned(),
            place: format!("row {}", first + i as u64),
            got: vectors[i].len(),
            dim,
        }),
    }
}

/// Writes a Parquet embedding file: texts beside their vectors, with [`EmbeddingMeta`].
pub struct ParquetEmbeddingWriter {
    path: PathBuf,
    writer: ArrowWriter<AtomicFile>,
    schema: SchemaRef,
    dim: usize,
    rows: u64,
}

impl ParquetEmbeddingWriter {
    pub fn create(path: &Path, dim: usize, meta: &EmbeddingMeta) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let schema = embedding_schema(dim);
        let zstd = ZstdLevel::try_new(1).map_err(parquet_err(path))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(meta.key_values()))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_err(path))?;
        Ok(ParquetEmbeddingWriter {
            path: path.to_owned(),
            writer,
            schema,
            dim,
            rows: 0,
        })
    }

    /// Appends rows: `texts[i]` beside `vectors[i]`.
    pub fn write(&mut self, texts: &[String], vectors: &[Vec<f32>]) -> Result<()> {
        if texts.len() != vectors.len() {
            return Err(EmbeddingError::TextCount {
                path: self.path.clone(),
                texts: texts.len(),
                vectors: vectors.len(),
            });
        }
        check_dims(&self.path, vectors, self.dim, self.rows)?;
        let mut t = StringBuilder::new();
        let mut e = FixedSizeListBuilder::new(Float32Builder::new(), self.dim as i32)
            .with_field(item_field());
        for (text, v) in texts.iter().zip(vectors) {
            t.append_value(text);
            e.values().append_slice(v);
            e.append(true);
        }
        let columns = vec![Arc::new(t.finish()) as ArrayRef, Arc::new(e.finish())];
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_err(&self.path))?;
        self.writer.write(&batch).map_err(parquet_err(&self.path))?;
        self.rows += vectors.len() as u64;
        Ok(())
    }

    /// Closes the file and renames it onto its name; returns the rows written.
    pub fn finish(self) -> Result<u64> {
        let file = self.writer.into_inner().map_err(parquet_err(&self.path))?;
        file.commit()?;
        Ok(self.rows)
    }
}

/// Writes one JSON array of floats per line.
pub struct JsonlEmbeddingWriter {
    path: PathBuf,
    file: AtomicFile,
    dim: usize,
    rows: u64,
}

impl JsonlEmbeddingWriter {
    pub fn create(path: &Path, dim: usize) -> Result<Self> {
        Ok(JsonlEmbeddingWriter {
            path: path.to_owned(),
            file: AtomicFile::create(path)?,
            dim,
            rows: 0,
        })
    }

    pub fn write(&mut self, vectors: &[Vec<f32>]) -> Result<()> {
        check_dims(&self.path, vectors, self.dim, self.rows)?;
        for v in vectors {
            serde_json::to_writer(&mut self.file, v)
                .map_err(|e| SchemaError::io(&self.path, e.into()))?;
            self.file.write_all(b"\n").map_err(io_err(&self.path))?;
        }
        self.rows += vectors.len() as u64;
        Ok(())
    }

    pub fn finish(self) -> Result<u64> {
        self.file.commit()?;
        Ok(self.rows)
    }
}

/// Writes a NumPy float32 `[rows, dim]` array; `rows` is declared in the header up front.
pub struct NpyEmbeddingWriter {
    path: PathBuf,
    file: AtomicFile,
    dim: usize,
    declared: u64,
    written: u64,
}

impl NpyEmbeddingWriter {
    pub fn create(path: &Path, dim: usize, rows: usize) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(&npy_header(rows, dim))
            .map_err(io_err(path))?;
        Ok(NpyEmbeddingWriter {
            path: path.to_owned(),
            file,
            dim,
            declared: rows as u64,
            written: 0,
        })
    }

    pub fn write(&mut self, vectors: &[Vec<f32>]) -> Result<()> {
        check_dims(&self.path, vectors, self.dim, self.written)?;
        let after = self.written + vectors.len() as u64;
        if after > self.declared {
            return Err(self.row_count(after));
        }
        for v in vectors {
            for x in v {
                self.file
                    .write_all(&x.to_le_bytes())
                    .map_err(io_err(&self.path))?;
            }
        }
        self.written = after;
        Ok(())
    }

    /// Renames the file onto its name, if exactly the declared rows were written.
    pub fn finish(self) -> Result<u64> {
        if self.written != self.declared {
            return Err(self.row_count(self.written));
        }
        self.file.commit()?;
        Ok(self.written)
    }

    fn row_count(&self, written: u64) -> EmbeddingError {
        EmbeddingError::RowCount {
            path: self.path.clone(),
            declared: self.declared,
            written,
        }
    }
}

/// A writer of any of the three formats: what `prep embed` streams its chunks into.
pub enum EmbeddingWriter {
    // Boxed: the Parquet writer is far larger than the others.
    Parquet(Box<ParquetEmbeddingWriter>),
    Jsonl(JsonlEmbeddingWriter),
    Npy(NpyEmbeddingWriter),
}

impl EmbeddingWriter {
    /// A writer of `format` at `path`; `rows` is what an npy header declares, `meta` what a
    /// Parquet file records (the others ignore what they cannot hold).
    pub fn create(
        path: &Path,
        format: EmbeddingFormat,
        dim: usize,
        rows: usize,
        meta: &EmbeddingMeta,
    ) -> Result<Self> {
        Ok(match format {
            EmbeddingFormat::Parquet => {
                EmbeddingWriter::Parquet(Box::new(ParquetEmbeddingWriter::create(path, dim, meta)?))
            }
            EmbeddingFormat::Jsonl => {
                EmbeddingWriter::Jsonl(JsonlEmbeddingWriter::create(path, dim)?)
            }
            EmbeddingFormat::Npy => {
                EmbeddingWriter::Npy(NpyEmbeddingWriter::create(path, dim, rows)?)
            }
        })
    }

    /// Appends rows (texts are kept by Parquet only).
    pub fn write(&mut self, texts: &[String], vectors: &[Vec<f32>]) -> Result<()> {
        match self {
            EmbeddingWriter::Parquet(w) => w.write(texts, vectors),
            EmbeddingWriter::Jsonl(w) => w.write(vectors),
            EmbeddingWriter::Npy(w) => w.write(vectors),
        }
    }

    pub fn finish(self) -> Result<u64> {
        match self {
            EmbeddingWriter::Parquet(w) => w.finish(),
            EmbeddingWriter::Jsonl(w) => w.finish(),
            EmbeddingWriter::Npy(w) => w.finish(),
        }
    }
}

/// Reads an embedding file of the format its extension names.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    match EmbeddingFormat::from_path(path)? {
        EmbeddingFormat::Parquet => read_parquet(path),
        EmbeddingFormat::Jsonl => read_jsonl(path),
        EmbeddingFormat::Npy => read_npy(path),
    }
}

/// Whether `path` is a Parquet file with an `embedding` column (else: a text corpus).
pub fn is_embedding_parquet(path: &Path) -> bool {
    if extension(path) != "parquet" {
        return false;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map(|b| b.schema().index_of("embedding").is_ok())
        .unwrap_or(false)
}

/// Reads a Parquet embedding file: the `embedding` column (fixed-size or variable lists of
/// float32, every row of one dim) and, when present, `text`.
pub fn read_parquet(path: &Path) -> Result<Embeddings> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let meta = EmbeddingMeta::from_key_values(path, &kv)?;
    let schema = builder.schema().clone();
    let Ok(emb_idx) = schema.index_of("embedding") else {
        return Err(EmbeddingError::MissingColumn {
            path: path.to_owned(),
            column: "embedding".to_owned(),
            hint: " (not an embedding file)".to_owned(),
        });
    };
    let text_idx = schema.index_of("text").ok();
    let mut dim = match schema.field(emb_idx).data_type() {
        DataType::FixedSizeList(_, d) => Some(*d as usize),
        _ => None,
    };
    let roots = [Some(emb_idx), text_idx].into_iter().flatten();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(parquet_err(path))?;
    let mut vectors = Vec::new();
    let mut texts = text_idx.map(|_| Vec::new());
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(arrow_err(path))?;
        let emb = batch
            .column_by_name("embedding")
            .expect("projected column present");
        let d = append_vectors(path, emb.as_ref(), rows, dim, &mut vectors)?;
        dim = dim.or(d);
        if let (Some(texts), Some(col)) = (texts.as_mut(), batch.column_by_name("text")) {
            append_texts(path, "text", col.as_ref(), texts)?;
        }
        rows += batch.num_rows() as u64;
    }
    let dim = dim.unwrap_or(0);
    if let Some(m) = &meta {
        if m.dim != dim && rows > 0 {
            return Err(EmbeddingError::Metadata {
                path: path.to_owned(),
                key: KEY_DIM,
                value: m.dim.to_string(),
                reason: format!("the vectors have {dim} values"),
            });
        }
    }
    Ok(Embeddings {
        texts,
        vectors,
        dim,
        meta,
    })
}

/// Appends a batch's `embedding` column to `out`; returns the dim its rows have. `first` is the
/// batch's first row in the file; `dim` the dim the file holds so far, if known.
fn append_vectors(
    path: &Path,
    column: &dyn Array,
    first: u64,
    dim: Option<usize>,
    out: &mut Vec<f32>,
) -> Result<Option<usize>> {
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(EmbeddingError::Null {
            path: path.to_owned(),
            column: "embedding",
            row: first + row as u64,
        });
    }
    let (values, offsets): (&ArrayRef, Vec<usize>) =
        if let Some(l) = column.as_any().downcast_ref::<FixedSizeListArray>() {
            let d = l.value_length() as usize;
            (l.values(), (0..=l.len()).map(|i| i * d).collect())
        } else if let Some(l) = column.as_any().downcast_ref::<ListArray>() {
            let offsets = l.value_offsets().iter().map(|&o| o as usize).collect();
            (l.values(), offsets)
        } else {
            return Err(column_type(path, "embedding", column, "a list of float32"));
        };
    let Some(floats) = values.as_any().downcast_ref::<Float32Array>() else {
        return Err(column_type(
            path,
            "embedding",
            values.as_ref(),
            "a list of float32",
        ));
    };
    let mut dim = dim;
    for (row, w) in offsets.windows(2).enumerate() {
        let len = w[1] - w[0];
        let d = *dim.get_or_insert(len);
        if len != d {
            return Err(EmbeddingError::Dim {
                path: path.to_owned(),
                place: format!("row {}", first + row as u64),
                got: len,
                dim: d,
            });
        }
    }
    if let (Some(&start), Some(&end)) = (offsets.first(), offsets.last()) {
        out.extend_from_slice(&floats.values()[start..end]);
    }
    Ok(dim)
}

fn column_type(
    path: &Path,
    column: &str,
    array: &dyn Array,
    expected: &'static str,
) -> EmbeddingError {
    EmbeddingError::ColumnType {
        path: path.to_owned(),
        column: column.to_owned(),
        found: array.data_type().to_string(),
        expected,
    }
}

/// Appends the text column `name` (Utf8 or LargeUtf8; a null text reads as empty).
fn append_texts(path: &Path, name: &str, column: &dyn Array, out: &mut Vec<String>) -> Result<()> {
    let value = |i: usize| -> Option<String> {
        if let Some(s) = column.as_string_opt::<i32>() {
            Some(s.value(i).to_owned())
        } else {
            column.as_string_opt::<i64>().map(|s| s.value(i).to_owned())
        }
    };
    for i in 0..column.len() {
        if column.is_null(i) {
            out.push(String::new());
            continue;
        }
        let Some(v) = value(i) else {
            return Err(column_type(path, name, column, "text (Utf8)"));
        };
        out.push(v);
    }
    Ok(())
}

/// Reads one JSON array of numbers per line (blank lines skipped); every line of one dim.
pub fn read_jsonl(path: &Path) -> Result<Embeddings> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut vectors = Vec::new();
    let mut dim = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i as u64 + 1;
        let bad = |reason: String| EmbeddingError::Line {
            path: path.to_owned(),
            line: line_no,
            reason,
        };
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Vec<f32> = serde_json::from_str(&line)
            .map_err(|e| bad(format!("expected a JSON array of numbers: {e}")))?;
        let d = *dim.get_or_insert(v.len());
        if v.len() != d {
            return Err(EmbeddingError::Dim {
                path: path.to_owned(),
                place: format!("line {line_no}"),
                got: v.len(),
                dim: d,
            });
        }
        vectors.extend_from_slice(&v);
    }
    Ok(Embeddings {
        texts: None,
        vectors,
        dim: dim.unwrap_or(0),
        meta: None,
    })
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// A NumPy v1.0 header for a C-order little-endian float32 `[rows, dim]` array.
fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is padded to a multiple of 64.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = NPY_MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Reads a NumPy float32 `[rows, dim]` array (format versions 1.0 to 3.0, little-endian,
/// C order): what [`NpyEmbeddingWriter`] writes and `numpy.save` writes for such an array.
pub fn read_npy(path: &Path) -> Result<Embeddings> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let header_err = |reason: String| EmbeddingError::NpyHeader {
        path: path.to_owned(),
        reason,
    };
    if !bytes.starts_with(NPY_MAGIC) {
        return Err(EmbeddingError::BadMagic {
            path: path.to_owned(),
            found: bytes[..bytes.len().min(NPY_MAGIC.len())].to_vec(),
        });
    }
    let (len_bytes, dict_start) = match bytes.get(6) {
        Some(1) => (2, 10),
        Some(2 | 3) => (4, 12),
        v => {
            return Err(header_err(format!(
                "format version {v:?} (1 to 3 are read)"
            )))
        }
    };
    let dict_len = bytes
        .get(8..8 + len_bytes)
        .map(|b| {
            b.iter()
                .rev()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        })
        .ok_or_else(|| header_err("truncated before the header length".to_owned()))?;
    let dict = bytes
        .get(dict_start..dict_start + dict_len)
        .ok_or_else(|| header_err(format!("header of {dict_len} bytes runs past the file")))?;
    let dict = std::str::from_utf8(dict).map_err(|_| header_err("not text".to_owned()))?;
    let (rows, dim) = parse_npy_dict(dict).map_err(header_err)?;
    let data = &bytes[dict_start + dict_len..];
    let expected = rows as u64 * dim as u64 * 4;
    if data.len() as u64 != expected {
        return Err(EmbeddingError::NpyLength {
            path: path.to_owned(),
            rows: rows as u64,
            dim,
            expected,
            found: data.len() as u64,
        });
    }
    let vectors = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Embeddings {
        texts: None,
        vectors,
        dim,
        meta: None,
    })
}

/// `(rows, dim)` from an npy header dict, which must say float32, little-endian, C order, 2-D.
fn parse_npy_dict(dict: &str) -> std::result::Result<(usize, usize), String> {
    let value_of = |key: &str| -> std::result::Result<&str, String> {
        let at = dict
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("no '{key}' in {dict:?}"))?;
        let rest = dict[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr = value_of("descr")?;
    let descr = descr
        .get(1..)
        .and_then(|d| d.split(['\'', '"']).next())
        .unwrap_or("");
    if descr != "<f4" {
        return Err(format!(
            "dtype {descr:?}; only little-endian float32 ('<f4') is read"
        ));
    }
    if !value_of("fortran_order")?.starts_with("False") {
        return Err("Fortran order; only C order is read".to_owned());
    }
    let shape = value_of("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("shape {shape:?} is not a tuple"))?;
    let dims: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let parsed: Vec<usize> = dims
        .iter()
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("shape ({inner}) is not whole numbers"))
        })
        .collect::<std::result::Result<_, _>>()?;
    match parsed[..] {
        [rows, dim] => Ok((rows, dim)),
        _ => Err(format!(
            "shape ({inner}) has {} dimensions; embeddings are [rows, dim]",
            parsed.len()
        )),
    }
}

/// Every text of a file to embed: `.parquet` (column `field`), `.jsonl`/`.json`/`.ndjson` (a JSON
/// string per line, or objects with a string `field`; blank lines skipped), else one text per
/// line (blank lines are texts too: one vector per line).
pub fn read_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    match extension(path).as_str() {
        "parquet" => read_parquet_texts(path, field),
        "jsonl" | "json" | "ndjson" => read_jsonl_texts(path, field),
        _ => {
            let file = File::open(path).map_err(io_err(path))?;
            let mut out = Vec::new();
            for (i, line) in BufReader::new(file).lines().enumerate() {
                out.push(line.map_err(|e| EmbeddingError::Line {
                    path: path.to_owned(),
                    line: i as u64 + 1,
                    reason: e.to_string(),
                })?);
            }
            Ok(out)
        }
    }
}

fn read_jsonl_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let bad = |reason: String| EmbeddingError::Line {
            path: path.to_owned(),
            line: i as u64 + 1,
            reason,
        };
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Object(mut o) => match o.remove(field) {
                Some(serde_json::Value::String(s)) => s,
                _ => {
                    return Err(bad(format!(
                        "no string field `{field}` (choose one with --field)"
                    )))
                }
            },
            _ => return Err(bad("expected a JSON string or object".to_owned())),
        };
        out.push(text);
    }
    Ok(out)
}

fn read_parquet_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let schema = builder.schema().clone();
    let Ok(idx) = schema.index_of(field) else {
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8))
            .map(|f| f.name().as_str())
            .collect();
        return Err(EmbeddingError::MissingColumn {
            path: path.to_owned(),
            column: field.to_owned(),
            hint: format!(
                "; text columns: {} (choose one with --field)",
                names.join(", ")
            ),
        });
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(parquet_err(path))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err(path))?;
        append_texts(path, field, batch.column(0).as_ref(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parseable() {
        let h = npy_header(3, 384);
        assert_eq!(h.len() % 64, 0);
        assert!(h.starts_with(b"\x93NUMPY\x01\x00"));
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.contains("'shape': (3, 384)"));
        assert!(text.ends_with('\n'));
        assert_eq!(parse_npy_dict(text), Ok((3, 384)));
    }
}
