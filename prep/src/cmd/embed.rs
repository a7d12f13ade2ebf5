//! `prep embed`: texts (txt, jsonl, parquet) into vectors (parquet, jsonl, npy).
//!
//! The file formats are `schemas::embeddings`' (one writer and one reader each); this command
//! wires the model to them. The Parquet output keeps each text beside its vector and records the
//! model's hash and the input's hash in the file's metadata, so a later `prep search` can trust
//! (or refuse) it without embedding the corpus again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use encoder::SentenceEncoder;
use schemas::embeddings::{read_texts, EmbeddingFormat, EmbeddingMeta, EmbeddingWriter};
use schemas::{Progress, Unit};

use crate::compute::ComputeArgs;
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
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(num_cpus);
    crate::bench::with_threads(threads, || run_inner(&args))
}

fn run_inner(args: &Args) -> Result<()> {
    let format = EmbeddingFormat::from_path(&args.out)?;
    let encoder = load_encoder(&args.model, args.max_seq_length, &args.compute)?;
    let texts = read_texts(&args.input, &args.field)?;
    let started = Instant::now();
    let bar = Bar::new();
    let meta = embedding_meta(&encoder, Some(&args.input))?;
    let mut sink = EmbeddingWriter::create(&args.out, format, encoder.dim(), texts.len(), &meta)?;
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

/// Resolves `--model` and loads it on `compute`'s device at its precision (the device is
/// opened first, so a missing GPU fails before any download).
pub fn load_encoder(
    spec: &str,
    max_seq_length: Option<usize>,
    compute: &ComputeArgs,
) -> Result<SentenceEncoder> {
    let device = compute.open_for_encoding()?;
    let dir = crate::model::resolve(spec)?;
    let mut enc = SentenceEncoder::load(&dir, &device)
        .with_context(|| format!("loading model from {}", dir.display()))?;
    enc.set_precision(compute.precision)?;
    if device.is_cpu() {
        if let Some(kernels) = compute.precision.cpu_kernels() {
            eprintln!("{kernels}");
        }
    }
    if let Some(m) = max_seq_length {
        enc.set_max_seq_length(m)?;
    }
    Ok(enc)
}

/// What an embedding file records about `encoder` (and the text file `input` it embeds).
pub fn embedding_meta(encoder: &SentenceEncoder, input: Option<&Path>) -> Result<EmbeddingMeta> {
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
        precision: encoder.precision().to_string(),
    })
}

/// sha256 of the model's weights (what makes two vectors comparable).
pub fn model_sha256(dir: &Path) -> Result<String> {
    let weights = dir.join("model.safetensors");
    Ok(schemas::sha256_file(&weights)?)
}

/// Embeds `texts` in chunks (so vectors stream to `sink` instead of piling up in memory).
pub fn embed_into(
    encoder: &SentenceEncoder,
    texts: &[String],
    batch_size: usize,
    progress: &dyn Progress,
    sink: &mut EmbeddingWriter,
) -> Result<()> {
    // Sorting by length happens within a chunk; a chunk this size already groups lengths well.
    const CHUNK: usize = schemas::embeddings::PARQUET_ROW_GROUP_ROWS;
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

#[cfg(test)]
mod tests {
    use schemas::embeddings::{read_jsonl, read_npy, read_parquet};

    use super::*;

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
        let enc = load_encoder(model.to_str().unwrap(), None, &ComputeArgs::default()).unwrap();
        let meta = embedding_meta(&enc, Some(&input)).unwrap();
        let want = enc
            .encode(&texts.iter().map(|s| s.as_str()).collect::<Vec<_>>(), 8)
            .unwrap();
        for name in ["out.parquet", "out.jsonl", "out.npy"] {
            let out = dir.path().join(name);
            let fmt = EmbeddingFormat::from_path(&out).unwrap();
            let mut sink =
                EmbeddingWriter::create(&out, fmt, enc.dim(), texts.len(), &meta).unwrap();
            // Two chunks, as embed_into writes them.
            sink.write(&texts[..1], &want[..1]).unwrap();
            sink.write(&texts[1..], &want[1..]).unwrap();
            assert_eq!(sink.finish().unwrap(), 3);
        }
        let pq = read_parquet(&dir.path().join("out.parquet")).unwrap();
        assert_eq!(pq.texts.as_deref(), Some(&texts[..]));
        assert_eq!(pq.dim, 384);
        assert_eq!(pq.vectors, want.concat());
        assert_eq!(pq.meta.as_ref(), Some(&meta));
        assert!(schemas::embeddings::is_embedding_parquet(
            &dir.path().join("out.parquet")
        ));
        let jsonl = read_jsonl(&dir.path().join("out.jsonl")).unwrap();
        assert_eq!(jsonl.vectors, want.concat(), "floats round-trip exactly");
        let npy = read_npy(&dir.path().join("out.npy")).unwrap();
        assert_eq!((npy.rows(), npy.dim), (3, 384));
        assert_eq!(npy.vectors, want.concat());
    }
}
