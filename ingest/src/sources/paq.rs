//! PAQ (facebookresearch/PAQ): `PAQ.metadata.jsonl(.gz)` lines `{"question", "answer",
//! "answers": [{"passage_id", "offset", "text", ...}], ...}` joined to DPR's Wikipedia passages
//! `psgs_w100.tsv(.gz)` (`id\ttext\ttitle`, header line, fields quoted CSV-style when they hold a
//! quote). Pair = (question, text of the passage of the question's first answer); `source_id` is
//! that passage id.
//!
//! The join is a hash-partitioned one on disk, so neither side is ever held whole:
//! 1. each question is appended, with its passage id, to one of [`Paq::buckets`] files chosen by
//!    a hash of that id;
//! 2. each passage goes to the bucket file of the same hash;
//! 3. bucket by bucket, the passages of the bucket are loaded into a map and the bucket's
//!    questions streamed against it. A bucket whose passages would take more than the memory
//!    budget is split again, with another hash, until it fits.
//!
//! Memory is bounded by the budget (`PREP_PAQ_MEMORY_MIB`, default 1024), not by the input;
//! scratch disk space is about the uncompressed size of both inputs (under `$PREP_TMPDIR`, else
//! the system temp folder). Output order: bucket by bucket, metadata order within a bucket;
//! fixed for given inputs and settings, and the same for any thread count.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord, Progress};
use serde::Deserialize;

use super::scratch::ScratchDir;
use crate::input::base_name;
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, IngestReport, Location, Result, Sink, Source};

/// The PAQ source. `buckets` and `memory_mib` of 0 mean the defaults (128 buckets, and
/// `PREP_PAQ_MEMORY_MIB` or 1024 MiB).
#[derive(Debug, Clone, Copy)]
pub struct Paq {
    pub buckets: usize,
    pub memory_mib: u64,
}

impl Paq {
    pub const DEFAULT: Paq = Paq {
        buckets: 0,
        memory_mib: 0,
    };

    fn buckets(&self) -> usize {
        if self.buckets == 0 {
            128
        } else {
            self.buckets
        }
    }

    fn memory_bytes(&self) -> u64 {
        let mib = if self.memory_mib > 0 {
            self.memory_mib
        } else {
            std::env::var("PREP_PAQ_MEMORY_MIB")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&m| m > 0)
                .unwrap_or(1024)
        };
        mib << 20
    }
}

/// How many times an oversized bucket is split again before it is loaded as it is (only a bucket
/// of one hugely repeated passage id would get there).
const MAX_SPLIT_DEPTH: u32 = 4;

/// Bytes a map entry costs beyond its key and text (hash slot, two boxes, allocator slack).
const ENTRY_OVERHEAD: u64 = 96;

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    question: Option<Cow<'a, str>>,
    #[serde(default)]
    answers: Option<Vec<Answer>>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    passage_id: Option<serde_json::Value>,
}

fn pid_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => non_empty(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// FNV-1a with a seed: fixed across runs and platforms, so the bucket order is too.
fn bucket_of(key: &[u8], seed: u32, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly; fold the high half in.
    ((h ^ (h >> 29)) % n as u64) as usize
}

/// One side of a partition: `n` files of (key, value) records.
struct Buckets {
    paths: Vec<PathBuf>,
    writers: Vec<BufWriter<File>>,
    bytes: Vec<u64>,
    count: Vec<u64>,
    seed: u32,
}

impl Buckets {
    fn create(dir: &Path, prefix: &str, n: usize, seed: u32) -> Result<Buckets> {
        let mut paths = Vec::with_capacity(n);
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.join(format!("{prefix}-{i:05}.bin"));
            let file = File::create(&path).map_err(|e| IngestError::io(&path, e))?;
            writers.push(BufWriter::with_capacity(64 << 10, file));
            paths.push(path);
        }
        Ok(Buckets {
            paths,
            writers,
            bytes: vec![0; n],
            count: vec![0; n],
            seed,
        })
    }

    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let b = bucket_of(key, self.seed, self.writers.len());
        write_record(&mut self.writers[b], key, value)
            .map_err(|e| IngestError::io(&self.paths[b], e))?;
        self.bytes[b] += (key.len() + value.len()) as u64;
        self.count[b] += 1;
        Ok(())
    }

    /// Flushes and closes every file; returns (path, payload bytes, records) per bucket.
    fn finish(self) -> Result<Vec<(PathBuf, u64, u64)>> {
        let mut out = Vec::with_capacity(self.paths.len());
        for (((path, w), bytes), count) in self
            .paths
            .into_iter()
            .zip(self.writers)
            .zip(self.bytes)
            .zip(self.count)
        {
            w.into_inner()
                .map_err(|e| IngestError::io(&path, e.into_error()))?;
            out.push((path, bytes, count));
        }
        Ok(out)
    }
}

fn write_record(w: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| std::io::Error::other("record over 4 GiB"))
    };
    w.write_all(&len(key.len())?)?;
    w.write_all(key)?;
    w.write_all(&len(value.len())?)?;
    w.write_all(value)
}

/// Streams the (key, value) records of a bucket file.
struct RecordReader {
    reader: BufReader<File>,
    path: PathBuf,
}

impl RecordReader {
    fn open(path: &Path) -> Result<RecordReader> {
        let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
        Ok(RecordReader {
            reader: BufReader::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
        })
    }

    fn next(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<bool> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(IngestError::io(&self.path, e)),
        }
        fn read(r: &mut impl Read, buf: &mut Vec<u8>, n: [u8; 4]) -> std::io::Result<()> {
            buf.clear();
            buf.resize(u32::from_le_bytes(n) as usize, 0);
            r.read_exact(buf)
        }
        let io = |e| IngestError::io(&self.path, e);
        read(&mut self.reader, key, len).map_err(io)?;
        self.reader.read_exact(&mut len).map_err(io)?;
        read(&mut self.reader, value, len).map_err(io)?;
        Ok(true)
    }
}

fn location(path: &Path, line: u64) -> Location {
    Location {
        path: path.to_path_buf(),
        record: line,
        unit: "line",
    }
}

/// Phase 1: questions into buckets by passage id.
fn partition_questions(sink: &mut Sink, path: &Path, out: &mut Buckets) -> Result<()> {
    sink.for_each_line(path, &mut |sink, line_no, line| {
        let meta: Meta = match serde_json::from_str(line) {
            Ok(m) => m,
            Err(e) => {
                let (kind, message) = crate::error::json_problem(&e);
                sink.malformed(location(path, line_no), kind, message)?;
                return Ok(());
            }
        };
        let Some(question) = meta.question.as_deref().and_then(non_empty) else {
            sink.skip(0, "no question");
            return Ok(());
        };
        let pid = meta
            .answers
            .as_deref()
            .and_then(|a| a.first())
            .and_then(|a| a.passage_id.as_ref())
            .and_then(pid_string);
        let Some(pid) = pid else {
            sink.skip(0, "no passage id");
            return Ok(());
        };
        out.push(pid.as_bytes(), question.as_bytes())?;
        if line_no & 0xffff == 0 {
            sink.report();
        }
        Ok(())
    })
}

/// A TSV field as a csv writer (DPR's, pandas') left it: `"..."` with `""` for each quote inside.
/// Only a field that is quoted that way throughout is unquoted; a text that merely starts and
/// ends with a quote (`"A" vs "B"`) is kept as it is.
pub(crate) fn unquote(field: &str) -> Cow<'_, str> {
    let Some(inner) = field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .filter(|_| field.len() >= 2)
    else {
        return Cow::Borrowed(field);
    };
    if inner.replace("\"\"", "").contains('"') {
        return Cow::Borrowed(field);
    }
    Cow::Owned(inner.replace("\"\"", "\""))
}

/// Phase 2: passages into buckets by id.
fn partition_passages(sink: &mut Sink, path: &Path, out: &mut Buckets) -> Result<()> {
    sink.for_each_line(path, &mut |sink, line_no, line| {
        let mut fields = line.split('\t');
        let id = fields.next().unwrap_or_default().trim();
        let Some(text) = fields.next() else {
            sink.malformed(
                location(path, line_no),
                "missing column",
                "expected id<TAB>text<TAB>title",
            )?;
            return Ok(());
        };
        if line_no == 1 && id == "id" {
            return Ok(()); // the header
        }
        if id.is_empty() {
            sink.malformed(
                location(path, line_no),
                "missing column",
                "empty passage id",
            )?;
            return Ok(());
        }
        out.push(id.as_bytes(), unquote(text).as_bytes())?;
        if line_no & 0xffff == 0 {
            sink.report();
        }
        Ok(())
    })
}

fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        IngestError::Input(format!(
            "{}: scratch file corrupted (invalid UTF-8)",
            path.display()
        ))
    })
}

/// Phase 3 for one bucket: split it again while its passages exceed the budget, else join it.
fn join_bucket(
    sink: &mut Sink,
    scratch: &Path,
    questions: &Path,
    passages: (&Path, u64, u64),
    depth: u32,
    budget: u64,
) -> Result<()> {
    let (p_path, p_bytes, p_count) = passages;
    let estimate = p_bytes + ENTRY_OVERHEAD * p_count;
    if estimate > budget && depth < MAX_SPLIT_DEPTH && p_count > 1 {
        let parts = (estimate.div_ceil(budget.max(1)) * 2).clamp(2, 256) as usize;
        let stem = p_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut sub_q = Buckets::create(scratch, &format!("{stem}-q{depth}"), parts, depth + 1)?;
        let mut reader = RecordReader::open(questions)?;
        while reader.next(&mut key, &mut value)? {
            sub_q.push(&key, &value)?;
        }
        let mut sub_p = Buckets::create(scratch, &format!("{stem}-p{depth}"), parts, depth + 1)?;
        let mut reader = RecordReader::open(p_path)?;
        while reader.next(&mut key, &mut value)? {
            sub_p.push(&key, &value)?;
        }
        remove(questions)?;
        remove(p_path)?;
        for ((q, _, _), p) in sub_q.finish()?.into_iter().zip(sub_p.finish()?) {
            join_bucket(sink, scratch, &q, (&p.0, p.1, p.2), depth + 1, budget)?;
        }
        return Ok(());
    }

    let mut map: HashMap<Box<[u8]>, Box<[u8]>> = HashMap::with_capacity(p_count as usize);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut reader = RecordReader::open(p_path)?;
    while reader.next(&mut key, &mut value)? {
        // DPR ids are unique; should one repeat, the first passage wins.
        map.entry(key.as_slice().into())
            .or_insert_with(|| value.as_slice().into());
    }
    let mut reader = RecordReader::open(questions)?;
    while reader.next(&mut key, &mut value)? {
        let Some(text) = map.get(key.as_slice()) else {
            sink.skip(0, "passage not found");
            continue;
        };
        let Some(passage) = non_empty(&utf8(text.to_vec(), p_path)?) else {
            sink.skip(0, "empty passage");
            continue;
        };
        let question = utf8(std::mem::take(&mut value), questions)?;
        let pid = utf8(key.clone(), questions)?;
        sink.emit(0, PairRecord::pair(question, passage).with_id(pid))?;
    }
    drop(map);
    remove(questions)?;
    remove(p_path)
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| IngestError::io(path, e))
}

fn is_passages(path: &Path) -> bool {
    base_name(path).ends_with(".tsv")
}

impl Source for Paq {
    fn name(&self) -> &'static str {
        "paq"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("paq", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "PAQ: PAQ.metadata.jsonl (plain or .gz; lines {\"question\", \"answers\": \
         [{\"passage_id\", ...}], ...}) together with DPR's psgs_w100.tsv (plain or .gz; \
         id<TAB>text<TAB>title with a header line). Pairs (question, text of the passage of its \
         first answer). The join is hash-partitioned on disk: memory stays under \
         PREP_PAQ_MEMORY_MIB (default 1024) whatever the input size, using scratch space about \
         the size of both inputs uncompressed under $PREP_TMPDIR (else the temp folder). Rows \
         come bucket by bucket (a hash of the passage id), in metadata order within each."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path);
        name.ends_with(".tsv") || name.ends_with(".jsonl") || name.ends_with(".json")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        // `--memory-mib` applies unless the caller fixed a budget on the source itself.
        let this = match (self.memory_mib, opts.memory_mib) {
            (0, Some(m)) => Paq {
                memory_mib: m,
                ..*self
            },
            _ => *self,
        };
        let (passages, metadata): (Vec<&PathBuf>, Vec<&PathBuf>) =
            inputs.iter().partition(|p| is_passages(p));
        if passages.is_empty() || metadata.is_empty() {
            return Err(IngestError::Input(format!(
                "PAQ needs both the questions (PAQ.metadata.jsonl) and the passages \
                 (psgs_w100.tsv); got {}",
                inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let scratch = ScratchDir::new("paq")?;
        let n = self.buckets();
        let mut q = Buckets::create(scratch.path(), "q", n, 0)?;
        for path in &metadata {
            partition_questions(sink, path, &mut q)?;
        }
        let q = q.finish()?;
        let mut p = Buckets::create(scratch.path(), "p", n, 0)?;
        for path in &passages {
            partition_passages(sink, path, &mut p)?;
        }
        let p = p.finish()?;
        let budget = this.memory_bytes();
        for ((q_path, _, _), (p_path, p_bytes, p_count)) in q.into_iter().zip(p) {
            join_bucket(
                sink,
                scratch.path(),
                &q_path,
                (&p_path, p_bytes, p_count),
                0,
                budget,
            )?;
            sink.report();
        }
        Ok(())
    }
}

/// [`crate::run`] with explicit join settings (bucket count, memory budget) instead of the
/// defaults: for tests, benchmarks and callers that size the join themselves.
pub fn run_with(
    paq: &Paq,
    inputs: &[PathBuf],
    out: &Path,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    crate::run_source(paq, inputs, out, opts, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquotes_dpr_fields() {
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(
            unquote("\"Aaron ( or ; \"\"Ahärôn\"\") is\""),
            "Aaron ( or ; \"Ahärôn\") is"
        );
        assert_eq!(unquote("\""), "\"");
        assert_eq!(unquote("\"A\" vs \"B\""), "\"A\" vs \"B\"");
        assert_eq!(unquote("\"\""), "");
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of(b"4216373", 0, 128), bucket_of(b"4216373", 0, 128));
        let mut seen = [0u32; 16];
        for i in 0..16_000u32 {
            seen[bucket_of(i.to_string().as_bytes(), 0, 16)] += 1;
        }
        assert!(seen.iter().all(|&c| (700..1300).contains(&c)), "{seen:?}");
        let moved = (0..1000u32)
            .filter(|i| {
                let k = i.to_string();
                bucket_of(k.as_bytes(), 0, 16) != bucket_of(k.as_bytes(), 1, 16)
            })
            .count();
        assert!(moved > 800, "another seed gives another split: {moved}");
    }
}
