//! Ingestors: each upstream source's raw dump into normalized pair/triplet Parquet datasets.
//!
//! One module per source under [`sources`], all behind the [`Source`] trait. Sources read through
//! [`Sink::open`] (plain or gzip, hashed as read) and write through [`Sink::emit`]; line-oriented
//! sources hand a [`LineParser`] to [`ingest_lines`], which parses on all cores and keeps the
//! output order fixed.

pub mod catalogue;
pub mod error;
pub mod input;
pub mod lines;
pub mod sink;
pub mod sources;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{IngestError, Location, Result};
pub use lines::{ingest_lines, LineParser, Outcome};
use schemas::{Arity, PairWriterOptions, Progress, Unit};
pub use sink::{IngestReport, Sink};

/// An upstream source: what it reads, what datasets it writes, and how.
pub trait Source: Sync {
    /// The name used on the command line (`prep ingest --source <name>`).
    fn name(&self) -> &'static str;
    /// The datasets written, with their column counts; rows go to them by index in this order.
    fn datasets(&self) -> &'static [(&'static str, Arity)];
    /// The datasets a run writes: [`Source::datasets`] unless the source names them from its
    /// inputs or options (the normalized `jsonl` source does).
    fn outputs(&self, _inputs: &[PathBuf], _opts: &IngestOptions) -> Result<Vec<(String, Arity)>> {
        Ok(self
            .datasets()
            .iter()
            .map(|(id, arity)| (id.to_string(), *arity))
            .collect())
    }
    /// One paragraph for `--help`: the files expected and how pairs are formed.
    fn about(&self) -> &'static str;
    /// Whether a file found inside an input folder belongs to this source.
    fn accept(&self, _path: &Path) -> bool {
        true
    }
    /// Reads every input into the sink.
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()>;
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Malformed records tolerated before the run fails.
    pub max_errors: u64,
    /// Threads for parsing (1 = everything on the calling thread).
    pub threads: usize,
    pub writer: PairWriterOptions,
    /// Memory budget in MiB for sources that join on disk (`paq`); `None` = their default.
    pub memory_mib: Option<u64>,
    /// Longest line (bytes, without its newline) line readers accept; longer ones are counted
    /// malformed and skipped without being buffered (`--max-line-bytes`).
    pub max_line_bytes: u64,
    /// Output dataset id for sources that take one (`jsonl`).
    pub dataset: Option<String>,
    /// The options as the user gave them, recorded in every manifest.
    pub record: BTreeMap<String, serde_json::Value>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_errors: 1000,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            writer: PairWriterOptions::default(),
            max_line_bytes: input::DEFAULT_MAX_LINE_BYTES,
            dataset: None,
            memory_mib: None,
            record: BTreeMap::new(),
        }
    }
}

/// Every source, in the order `--help` lists them.
pub fn sources() -> &'static [&'static dyn Source] {
    sources::ALL
}

/// Looks a source up by its command-line name.
pub fn source(name: &str) -> Result<&'static dyn Source> {
    sources()
        .iter()
        .copied()
        .find(|s| s.name() == name)
        .ok_or_else(|| IngestError::UnknownSource(name.to_owned()))
}

/// Ingests `inputs` (files or folders) with the named source into `out/<dataset>/`.
/// Each dataset folder appears only when complete, replacing any previous one whole.
pub fn run(
    source_name: &str,
    inputs: &[PathBuf],
    out: &Path,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    run_source(source(source_name)?, inputs, out, opts, progress)
}

/// [`run`] with the source itself (for sources built with non-default settings).
///
/// Each output dataset folder is locked ([`schemas::OutputLock`] on `out/<dataset>`) for the
/// whole run: a second run writing the same dataset fails at once naming the holder's pid, while
/// runs of other sources into the same `--out` go ahead. Taking the lock also removes the
/// `.<dataset>.tmp-<pid>` folders killed runs left ([`schemas::AtomicDir`]'s temp names).
pub fn run_source(
    source: &dyn Source,
    inputs: &[PathBuf],
    out: &Path,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    let expanded = input::expand_inputs(inputs, &|p| source.accept(p))?;
    let files = expanded.files;
    std::fs::create_dir_all(out).map_err(|e| IngestError::io(out, e))?;
    let outputs = source.outputs(&files, opts)?;
    let _locks = outputs
        .iter()
        .map(|(id, _)| schemas::OutputLock::acquire(out.join(id)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    progress.begin(
        &format!("ingest {}", source.name()),
        Some(input::total_size(&files)),
        Unit::Bytes,
    );
    let mut sink = Sink::new(source.name(), &outputs, out, opts, progress)?;
    for w in expanded.warnings {
        sink.warn(w);
    }
    source.ingest(&files, &mut sink, opts)?;
    sink.report();
    let report = sink.finish(&files)?;
    progress.finish();
    Ok(report)
}
