//! Where sources put what they read: one [`DatasetWriter`] per dataset (parts + manifest,
//! atomic), skip counters by reason, the malformed-record budget, input hashing and progress.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use schemas::{DatasetWriter, InputFile, Manifest, PairRecord, Progress};
use sha2::{Digest, Sha256};

use crate::error::{IngestError, Location, Result};
use crate::input::InputReader;
use crate::IngestOptions;

/// Digests of inputs read to the end, keyed by path: hashing while reading saves a second pass.
type Digests = Arc<Mutex<HashMap<PathBuf, (u64, String)>>>;

struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    bytes: u64,
    path: PathBuf,
    digests: Digests,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            if n == 0 {
                let digest = hex::encode(self.hasher.take().expect("present").finalize());
                self.digests
                    .lock()
                    .unwrap()
                    .insert(self.path.clone(), (self.bytes, digest));
            } else {
                h.update(&buf[..n]);
                self.bytes += n as u64;
            }
        }
        Ok(n)
    }
}

pub struct Sink<'p> {
    source: &'static str,
    datasets: Vec<DatasetWriter>,
    max_errors: u64,
    malformed: u64,
    examples: Vec<String>,
    digests: Digests,
    progress: &'p dyn Progress,
    rows: u64,
    bytes_reported: u64,
    readers: Vec<Arc<AtomicU64>>,
    max_line_bytes: u64,
    warnings: Vec<String>,
}

/// How many malformed-record messages a run keeps to show the user.
const KEEP_EXAMPLES: usize = 5;

impl<'p> Sink<'p> {
    pub(crate) fn new(
        source: &'static str,
        datasets: &[(String, schemas::Arity)],
        out: &Path,
        opts: &IngestOptions,
        progress: &'p dyn Progress,
    ) -> Result<Self> {
        let mut outs = Vec::new();
        for (id, arity) in datasets {
            let writer = DatasetWriter::create(out.join(id), id, source, *arity, opts.writer)?
                .with_options(opts.record.clone());
            outs.push(writer);
        }
        Ok(Sink {
            source,
            datasets: outs,
            max_errors: opts.max_errors,
            malformed: 0,
            examples: Vec::new(),
            digests: Arc::default(),
            progress,
            rows: 0,
            bytes_reported: 0,
            readers: Vec::new(),
            max_line_bytes: opts.max_line_bytes,
            warnings: Vec::new(),
        })
    }

    /// Opens an input through [`crate::input::open`], hashing it as it is read and counting its
    /// raw bytes into the progress bar.
    pub fn open(&mut self, path: &Path) -> Result<InputReader> {
        let file = std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
        let hashing = Hashing {
            inner: file,
            hasher: Some(Sha256::new()),
            bytes: 0,
            path: path.to_path_buf(),
            digests: self.digests.clone(),
        };
        let input = crate::input::open_reader(path, hashing)?;
        self.readers.push(input.raw_bytes_read.clone());
        Ok(input)
    }

    /// Reads a whole input, decompressed, through [`Sink::open`]: only for sources whose files are
    /// single JSON documents of bounded size (SQuAD, SearchQA records).
    pub fn read_document(&mut self, path: &Path) -> Result<Vec<u8>> {
        let mut input = self.open(path)?;
        let mut bytes = Vec::new();
        input
            .reader
            .read_to_end(&mut bytes)
            .map_err(|e| crate::input::read_error(path, e))?;
        Ok(bytes)
    }

    /// The `--max-line-bytes` cap, for sources that read lines themselves.
    pub fn max_line_bytes(&self) -> u64 {
        self.max_line_bytes
    }

    /// Counts a line over `--max-line-bytes` as malformed, naming it.
    pub fn line_too_long(&mut self, path: &Path, line_no: u64, message: String) -> Result<()> {
        let location = Location {
            path: path.to_path_buf(),
            record: line_no,
            unit: "line",
        };
        self.malformed(location, "line too long", message)
    }

    /// Records something the user should know that is not a malformed record (a skipped
    /// duplicate input, an unreadable site, files a folder holds that this source does not read).
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Calls `f(sink, line_no, line)` for every non-blank line of `path`, read serially through
    /// [`Sink::open`]; a line that is not UTF-8 is counted as malformed with its number.
    pub fn for_each_line(
        &mut self,
        path: &Path,
        f: &mut dyn FnMut(&mut Sink<'p>, u64, &str) -> Result<()>,
    ) -> Result<()> {
        let input = self.open(path)?;
        let mut lines = crate::input::Lines::new(input.reader, path, self.max_line_bytes);
        while let Some((line_no, bytes)) = lines.next_line()? {
            let Some(bytes) = bytes else {
                self.line_too_long(path, line_no, lines.too_long_message())?;
                continue;
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(bytes) {
                Ok(line) => f(self, line_no, line)?,
                Err(e) => {
                    let location = Location {
                        path: path.to_path_buf(),
                        record: line_no,
                        unit: "line",
                    };
                    self.malformed(location, "invalid UTF-8", e.to_string())?
                }
            }
        }
        Ok(())
    }

    fn dataset(&mut self, index: usize) -> &mut DatasetWriter {
        let source = self.source;
        let count = self.datasets.len();
        self.datasets
            .get_mut(index)
            .unwrap_or_else(|| panic!("source `{source}` wrote to dataset {index} of {count}"))
    }

    /// Writes one row to the dataset at `index` (in the order the source declared them).
    pub fn emit(&mut self, dataset: usize, record: PairRecord) -> Result<()> {
        self.dataset(dataset).push(&record)?;
        self.rows += 1;
        if self.rows.is_multiple_of(65_536) {
            self.report();
        }
        Ok(())
    }

    /// Counts a record the source's recipe leaves out on purpose (empty answer, low score, ...).
    pub fn skip(&mut self, dataset: usize, reason: &str) {
        self.dataset(dataset).skip(reason, 1);
    }

    /// Counts a record left out of every dataset of this source.
    pub fn skip_all(&mut self, reason: &str) {
        for d in &mut self.datasets {
            d.skip(reason, 1);
        }
    }

    /// Counts a record that could not be read (bad JSON, invalid UTF-8, missing field) in every
    /// dataset of the source, and fails once more than `--max-errors` have been seen.
    pub fn malformed(
        &mut self,
        location: Location,
        kind: &str,
        message: impl Into<String>,
    ) -> Result<()> {
        let message = message.into();
        self.malformed += 1;
        self.skip_all(kind);
        if self.examples.len() < KEEP_EXAMPLES {
            self.examples.push(format!("{location}: {kind}: {message}"));
        }
        if self.malformed > self.max_errors {
            return Err(IngestError::TooManyErrors {
                location,
                message: format!("{kind}: {message}"),
                limit: self.max_errors,
                count: self.malformed,
            });
        }
        Ok(())
    }

    /// Refreshes the progress bar from the bytes the inputs have consumed.
    pub fn report(&mut self) {
        let bytes: u64 = self.readers.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        if bytes > self.bytes_reported {
            self.progress.advance(bytes - self.bytes_reported);
            self.bytes_reported = bytes;
        }
        self.progress
            .message(&format!("{} rows, {} malformed", self.rows, self.malformed));
    }

    /// Size and sha256 of each input: hashed while read, or now for inputs a source did not
    /// read to the end.
    fn input_files(&self, inputs: &[PathBuf]) -> Result<Vec<InputFile>> {
        let digests = self.digests.lock().unwrap().clone();
        let mut files = Vec::new();
        for path in inputs {
            files.push(match digests.get(path) {
                Some((bytes, sha256)) => InputFile {
                    path: path.display().to_string(),
                    bytes: *bytes,
                    sha256: sha256.clone(),
                },
                // A source that stopped before EOF (or never opened the file): hash it now.
                None => InputFile::of(path)?,
            });
        }
        Ok(files)
    }

    pub(crate) fn finish(self, inputs: &[PathBuf]) -> Result<IngestReport> {
        let inputs_meta = self.input_files(inputs)?;
        let total: u64 = self.datasets.iter().map(DatasetWriter::rows).sum();
        if total == 0 {
            return Err(self.nothing_written(inputs));
        }
        let mut manifests = Vec::new();
        let mut warnings = self.warnings;
        for mut d in self.datasets {
            d.set_inputs(inputs_meta.clone());
            // An empty dataset never replaces an earlier one (the other datasets of the run had
            // rows, so the run itself succeeds).
            if d.rows() == 0 && d.target().exists() {
                warnings.push(format!(
                    "{}: 0 rows this run; the earlier dataset at {} is kept",
                    d.dataset(),
                    d.target().display()
                ));
                manifests.push(d.discard()?);
                continue;
            }
            manifests.push(d.finish()?);
        }
        Ok(IngestReport {
            manifests,
            malformed: self.malformed,
            examples: self.examples,
            warnings,
        })
    }

    /// The error of a run that produced no row at all: what its records turned into instead.
    fn nothing_written(&self, inputs: &[PathBuf]) -> IngestError {
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for d in &self.datasets {
            for (k, v) in d.skipped() {
                *reasons.entry(k).or_default() += v;
            }
        }
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        let mut msg = format!(
            "no rows: the input gave {} malformed record(s) and nothing to write ({})",
            self.malformed,
            names.join(", ")
        );
        if !reasons.is_empty() {
            let list: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            msg.push_str(&format!(" (skipped: {})", list.join(", ")));
        }
        for line in self.examples.iter().chain(&self.warnings) {
            msg.push_str(&format!("\n  {line}"));
        }
        msg.push_str("\n  nothing was written; any earlier output is left as it was");
        IngestError::Input(msg)
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct IngestReport {
    pub manifests: Vec<Manifest>,
    /// Malformed records skipped (each counted once here, and in every dataset's manifest).
    pub malformed: u64,
    /// The first few malformed-record messages, with file and line.
    pub examples: Vec<String>,
    /// Everything else the user should know (see [`Sink::warn`]).
    pub warnings: Vec<String>,
}
