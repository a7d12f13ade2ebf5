//! `prep embed`: texts (txt, jsonl, parquet) into vectors (parquet, jsonl, npy).
//!
//! Also the text and embedding file handling that `prep search` reuses: the Parquet output keeps
//! each text beside its vector and records the model's hash and the input's hash in the file's
//! metadata, so a later search can trust (or refuse) it without embedding the corpus again.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow_array::{
    builder::{FixedSizeListBuilder, Float32Builder, StringBuilder},
    Array, ArrayRef, FixedSizeListArray, Float32Array, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use encoder::candle_core::Device;
use encoder::SentenceEncoder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use schemas::{AtomicFile, Progress, Unit};

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (sentence-transformers or plain HF BERT).
    #[arg(long)]
    pub model: String,
    /// Texts: .txt (one per line), .jsonl (a JSON string per line, or objects with --field), or
    /// .parquet (column --field).
    #[arg(long)]
    pub input: PathBuf,
    /// Output: .parquet (text + embedding columns, reusable by `prep search`), .jsonl (one JSON
    /// array per line), or .npy (float32 [n, dim]).
    #[arg(long)]
    pub out: PathBuf,
    /// Field (jsonl objects) or column (parquet) holding the text.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Sequences per forward pass (formed after sorting by length).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation length in tokens (default: the model's max_seq_length).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

fn run_inner(args: &Args) -> Result<()> {
    let format = OutFormat::from_path(&args.out)?;
    let encoder = load_encoder(&args.model, args.max_seq_length)?;
    let texts = read_texts(&args.input, &args.field)?;
    let started = Instant::now();
    let bar = Bar::new();
    let meta = EmbeddingMeta::new(&encoder, Some(&args.input))?;
    let mut sink = EmbeddingSink::create(&args.out, format, encoder.dim(), texts.len(), &meta)?;
    embed_into(&encoder, &texts, args.batch_size, &bar, &mut sink)?;
    sink.finish()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "embedded {} texts ({} dims) into {} in {:.1}s ({:.0} texts/s)",
        texts.len(),
        encoder.dim(),
        args.out.display(),
        secs,
        texts.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Resolves `--model` and loads it on the CPU (or a GPU with the `cuda` feature and
/// `PREP_DEVICE=cuda`).
pub fn load_encoder(spec: &str, max_seq_length: Option<usize>) -> Result<SentenceEncoder> {
    let dir = crate::model::resolve(spec)?;
    let device = device()?;
    let mut enc = SentenceEncoder::load(&dir, &device)
        .with_context(|| format!("loading model from {}", dir.display()))?;
    if let Some(m) = max_seq_length {
        enc.set_max_seq_length(m)?;
    }
    Ok(enc)
}

fn device() -> Result<Device> {
    match std::env::var("PREP_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0).context("opening CUDA device 0 (PREP_DEVICE=cuda)"),
        _ => Ok(Device::Cpu),
    }
}

/// Embeds `texts` in chunks (so vectors stream to `sink` instead of piling up in memory).
pub fn embed_into(
    encoder: &SentenceEncoder,
    texts: &[String],
    batch_size: usize,
    progress: &dyn Progress,
    sink: &mut EmbeddingSink,
) -> Result<()> {
    // Sorting by length happens within a chunk; a chunk this size already groups lengths well.
    const CHUNK: usize = 8192;
    progress.begin("embedding", Some(texts.len() as u64), Unit::Items);
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let ids = encoder.tokenize(&refs)?;
        let vecs = encoder.encode_ids(&ids, batch_size, &schemas::NoProgress)?;
        sink.write(chunk, &vecs)?;
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(())
}

/// Every text of a .txt, .jsonl or .parquet file.
pub fn read_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    let ext = extension(path);
    match ext.as_str() {
        "parquet" => read_parquet_texts(path, field),
        "jsonl" | "json" | "ndjson" => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut out = Vec::new();
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
                let text = match &v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Object(o) => match o.get(field) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        _ => bail!(
                            "{}:{}: no string field `{field}` (choose one with --field)",
                            path.display(),
                            i + 1
                        ),
                    },
                    _ => bail!(
                        "{}:{}: expected a JSON string or object",
                        path.display(),
                        i + 1
                    ),
                };
                out.push(text);
            }
            Ok(out)
        }
        _ => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut out = Vec::new();
            for (i, line) in BufReader::new(file).lines().enumerate() {
                out.push(line.with_context(|| format!("{}:{}", path.display(), i + 1))?);
            }
            Ok(out)
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn read_parquet_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    let schema = builder.schema().clone();
    let Ok(idx) = schema.index_of(field) else {
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| f.data_type() == &DataType::Utf8 || f.data_type() == &DataType::LargeUtf8)
            .map(|f| f.name().as_str())
            .collect();
        bail!(
            "{}: no column `{field}`; text columns: {} (choose one with --field)",
            path.display(),
            names.join(", ")
        );
    };
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder.with_projection(mask).build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let col = batch.column(0);
        let strings = arrow_array::cast::AsArray::as_string_opt::<i32>(col.as_ref())
            .with_context(|| format!("{}: column `{field}` is not text", path.display()))?;
        for i in 0..strings.len() {
            out.push(if strings.is_null(i) {
                String::new()
            } else {
                strings.value(i).to_owned()
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Parquet,
    Jsonl,
    Npy,
}

impl OutFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        match extension(path).as_str() {
            "parquet" => Ok(OutFormat::Parquet),
            "jsonl" | "ndjson" => Ok(OutFormat::Jsonl),
            "npy" => Ok(OutFormat::Npy),
            other => bail!(
                "{}: unknown output format `.{other}` (use .parquet, .jsonl or .npy)",
                path.display()
            ),
        }
    }
}

/// What an embedding file records about how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingMeta {
    pub model: String,
    pub model_sha256: String,
    pub input_sha256: Option<String>,
    pub dim: usize,
    pub normalize: bool,
    pub pooling: String,
    pub max_seq_length: usize,
}

impl EmbeddingMeta {
    pub fn new(encoder: &SentenceEncoder, input: Option<&Path>) -> Result<Self> {
        Ok(EmbeddingMeta {
            model: encoder.dir().display().to_string(),
            model_sha256: model_sha256(encoder.dir())?,
            input_sha256: match input {
                Some(p) => Some(schemas::sha256_file(p)?),
                None => None,
            },
            dim: encoder.dim(),
            normalize: encoder.normalize(),
            pooling: format!("{:?}", encoder.pooling()).to_lowercase(),
            max_seq_length: encoder.max_seq_length(),
        })
    }

    fn key_values(&self) -> Vec<KeyValue> {
        let mut kv = vec![
            KeyValue::new("prep.model".to_owned(), self.model.clone()),
            KeyValue::new("prep.model_sha256".to_owned(), self.model_sha256.clone()),
            KeyValue::new("prep.dim".to_owned(), self.dim.to_string()),
            KeyValue::new("prep.normalize".to_owned(), self.normalize.to_string()),
            KeyValue::new("prep.pooling".to_owned(), self.pooling.clone()),
            KeyValue::new(
                "prep.max_seq_length".to_owned(),
                self.max_seq_length.to_string(),
            ),
        ];
        if let Some(s) = &self.input_sha256 {
            kv.push(KeyValue::new("prep.input_sha256".to_owned(), s.clone()));
        }
        kv
    }
}

/// sha256 of the model's weights (what makes two vectors comparable).
pub fn model_sha256(dir: &Path) -> Result<String> {
    let weights = dir.join("model.safetensors");
    Ok(schemas::sha256_file(&weights)?)
}

/// Streams embeddings into one of the output formats, atomically.
pub enum EmbeddingSink {
    Parquet {
        // Boxed: the writer is far larger than the other variants.
        writer: Box<ArrowWriter<AtomicFile>>,
        schema: Arc<Schema>,
        dim: usize,
    },
    Jsonl(AtomicFile),
    Npy {
        file: AtomicFile,
        expected: usize,
        written: usize,
    },
}

pub fn embedding_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ]))
}

impl EmbeddingSink {
    pub fn create(
        path: &Path,
        format: OutFormat,
        dim: usize,
        rows: usize,
        meta: &EmbeddingMeta,
    ) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        Ok(match format {
            OutFormat::Parquet => {
                let schema = embedding_schema(dim);
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                    .set_max_row_group_row_count(Some(8192))
                    .set_key_value_metadata(Some(meta.key_values()))
                    .build();
                let writer = Box::new(ArrowWriter::try_new(file, schema.clone(), Some(props))?);
                EmbeddingSink::Parquet {
                    writer,
                    schema,
                    dim,
                }
            }
            OutFormat::Jsonl => EmbeddingSink::Jsonl(file),
            OutFormat::Npy => {
                let mut file = file;
                file.write_all(&npy_header(rows, dim))?;
                EmbeddingSink::Npy {
                    file,
                    expected: rows,
                    written: 0,
                }
            }
        })
    }

    pub fn write(&mut self, texts: &[String], vecs: &[Vec<f32>]) -> Result<()> {
        match self {
            EmbeddingSink::Parquet {
                writer,
                schema,
                dim,
            } => {
                let mut t = StringBuilder::new();
                let mut e = FixedSizeListBuilder::new(Float32Builder::new(), *dim as i32)
                    .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
                for (text, v) in texts.iter().zip(vecs) {
                    t.append_value(text);
                    e.values().append_slice(v);
                    e.append(true);
                }
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(t.finish()) as ArrayRef, Arc::new(e.finish())],
                )?;
                writer.write(&batch)?;
            }
            EmbeddingSink::Jsonl(file) => {
                for v in vecs {
                    serde_json::to_writer(&mut *file, v)?;
                    file.write_all(b"\n")?;
                }
            }
            EmbeddingSink::Npy { file, written, .. } => {
                for v in vecs {
                    for x in v {
                        file.write_all(&x.to_le_bytes())?;
                    }
                }
                *written += vecs.len();
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        match self {
            EmbeddingSink::Parquet { writer, .. } => writer.into_inner()?.commit()?,
            EmbeddingSink::Jsonl(file) => file.commit()?,
            EmbeddingSink::Npy {
                file,
                expected,
                written,
            } => {
                if expected != written {
                    bail!("npy: header says {expected} rows, {written} written");
                }
                file.commit()?
            }
        }
        Ok(())
    }
}

/// A NumPy v1.0 header for a C-order little-endian float32 `[rows, dim]` array.
fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is padded to a multiple of 64.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A Parquet embedding file read back: texts, flat vectors, and its metadata.
pub struct EmbeddingFile {
    pub texts: Vec<String>,
    pub vectors: Vec<f32>,
    pub dim: usize,
    pub model_sha256: Option<String>,
    pub input_sha256: Option<String>,
}

/// Whether `path` is a Parquet file with an `embedding` column.
pub fn is_embedding_file(path: &Path) -> bool {
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

pub fn read_embedding_file(path: &Path) -> Result<EmbeddingFile> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    let reader = builder.build()?;
    let mut texts = Vec::new();
    let mut vectors = Vec::new();
    let mut dim = 0;
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let emb = batch
            .column_by_name("embedding")
            .with_context(|| format!("{}: no `embedding` column", path.display()))?;
        let (values, d) = if let Some(l) = emb.as_any().downcast_ref::<FixedSizeListArray>() {
            (l.values().clone(), l.value_length() as usize)
        } else if let Some(l) = emb.as_any().downcast_ref::<ListArray>() {
            let d = if l.is_empty() {
                0
            } else {
                l.value_length(0) as usize
            };
            (l.values().clone(), d)
        } else {
            bail!("{}: `embedding` is not a list of floats", path.display());
        };
        let floats = values
            .as_any()
            .downcast_ref::<Float32Array>()
            .with_context(|| format!("{}: `embedding` items are not float32", path.display()))?;
        if d > 0 {
            dim = d;
        }
        if floats.len() != d * batch.num_rows() {
            bail!("{}: embeddings of uneven length", path.display());
        }
        vectors.extend_from_slice(floats.values());
        match batch.column_by_name("text") {
            Some(t) => {
                let t = t
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .with_context(|| format!("{}: `text` is not Utf8", path.display()))?;
                texts.extend((0..t.len()).map(|i| t.value(i).to_owned()));
            }
            None => {
                let base = texts.len();
                texts.extend((0..batch.num_rows()).map(|i| format!("#{}", base + i)));
            }
        }
    }
    Ok(EmbeddingFile {
        texts,
        vectors,
        dim,
        model_sha256: get("prep.model_sha256"),
        input_sha256: get("prep.input_sha256"),
    })
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
    }

    #[test]
    fn texts_from_txt_jsonl_and_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, "one\ntwo\n").unwrap();
        assert_eq!(read_texts(&txt, "text").unwrap(), vec!["one", "two"]);
        let jsonl = dir.path().join("a.jsonl");
        std::fs::write(&jsonl, "\"x\"\n{\"text\": \"y\", \"id\": 1}\n\n").unwrap();
        assert_eq!(read_texts(&jsonl, "text").unwrap(), vec!["x", "y"]);
        assert!(read_texts(&jsonl, "body").is_err());
        // A pairs file: text columns by name.
        let pq = dir.path().join("p");
        let mut w = schemas::PairWriter::new(&pq, schemas::Arity::Pair, Default::default());
        w.push(&schemas::PairRecord::pair("q1", "a1")).unwrap();
        w.finish().unwrap();
        let part = &schemas::part_files(&pq).unwrap()[0];
        assert_eq!(read_texts(part, "anchor").unwrap(), vec!["q1"]);
        let err = read_texts(part, "text").unwrap_err().to_string();
        assert!(err.contains("anchor"), "{err}");
    }

    #[test]
    fn parquet_jsonl_npy_outputs_hold_the_same_vectors() {
        let Some(model) = testdata::test_model_dir() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "How do I bake bread?\nCanberra is the capital.\n\n").unwrap();
        let texts = read_texts(&input, "text").unwrap();
        assert_eq!(
            texts.len(),
            3,
            "blank lines are texts too (one vector per line)"
        );
        let enc = load_encoder(model.to_str().unwrap(), None).unwrap();
        let meta = EmbeddingMeta::new(&enc, Some(&input)).unwrap();
        let want = enc
            .encode(&texts.iter().map(|s| s.as_str()).collect::<Vec<_>>(), 8)
            .unwrap();
        for name in ["out.parquet", "out.jsonl", "out.npy"] {
            let out = dir.path().join(name);
            let fmt = OutFormat::from_path(&out).unwrap();
            let mut sink = EmbeddingSink::create(&out, fmt, enc.dim(), texts.len(), &meta).unwrap();
            // Two chunks, as embed_into writes them.
            sink.write(&texts[..1], &want[..1]).unwrap();
            sink.write(&texts[1..], &want[1..]).unwrap();
            sink.finish().unwrap();
        }
        let pq = read_embedding_file(&dir.path().join("out.parquet")).unwrap();
        assert_eq!(pq.texts, texts);
        assert_eq!(pq.dim, 384);
        assert_eq!(pq.vectors, want.concat());
        assert_eq!(pq.model_sha256.as_deref(), Some(meta.model_sha256.as_str()));
        assert_eq!(pq.input_sha256, meta.input_sha256);
        assert!(is_embedding_file(&dir.path().join("out.parquet")));

        let jsonl = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
        let rows: Vec<Vec<f32>> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows, want,
            "one JSON array per line, floats round-trip exactly"
        );

        let npy = std::fs::read(dir.path().join("out.npy")).unwrap();
        let header = npy_header(3, 384).len();
        assert_eq!(npy.len(), header + 3 * 384 * 4);
        let floats: Vec<f32> = npy[header..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(floats, want.concat());
    }
}
