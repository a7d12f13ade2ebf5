//! The driver for line-oriented sources: a reader thread cuts the decompressed stream into chunks
//! of whole lines, workers parse chunks in parallel, and the caller's thread applies the outcomes
//! to the [`Sink`] in input order, so the output is identical whatever the thread count.

use std::io::BufRead;
use std::path::Path;

use crossbeam_channel::bounded;
use schemas::PairRecord;

use crate::error::{IngestError, Location, Result};
use crate::input::{read_error, read_line_capped, unending_error, LineRead};
use crate::sink::Sink;

/// What one line (or record) turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A row for the dataset at this index (in the source's declared order).
    Row(usize, PairRecord),
    /// Left out on purpose by the recipe, counted under `reason` in that dataset.
    Skip(usize, &'static str),
    /// Could not be read: counted against `--max-errors` with the line's location.
    Malformed(&'static str, String),
}

/// Parses one line of a source. `line_no` is 1-based.
pub trait LineParser: Sync {
    fn parse(&self, line_no: u64, line: &str, out: &mut Vec<Outcome>);
}

impl<F: Fn(u64, &str, &mut Vec<Outcome>) + Sync> LineParser for F {
    fn parse(&self, line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        self(line_no, line, out)
    }
}

const CHUNK_BYTES: usize = 1 << 20;

struct Chunk {
    seq: u64,
    first_line: u64,
    /// Whole lines, each ended by `\n` (but perhaps the last); an over-long line is an empty one.
    bytes: Vec<u8>,
    /// The over-long lines: (line number, bytes), in order.
    long: Vec<(u64, u64)>,
    cap: u64,
}

type Parsed = Vec<(u64, Outcome)>;

fn parse_chunk(chunk: &Chunk, parser: &dyn LineParser) -> Parsed {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    // The chunk ends with '\n' except at EOF; there is no line after that last terminator.
    let body = chunk.bytes.strip_suffix(b"\n").unwrap_or(&chunk.bytes);
    let mut long = chunk.long.iter().peekable();
    for (line_no, raw) in (chunk.first_line..).zip(body.split(|&b| b == b'\n')) {
        if let Some(&(_, bytes)) = long.next_if(|(l, _)| *l == line_no) {
            let msg = crate::input::too_long_message(bytes, chunk.cap);
            out.push((line_no, Outcome::Malformed("line too long", msg)));
            continue;
        }
        let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        match std::str::from_utf8(line) {
            Ok(text) => {
                if !text.trim().is_empty() {
                    parser.parse(line_no, text, &mut scratch);
                }
            }
            Err(e) => scratch.push(Outcome::Malformed("invalid UTF-8", format!("{e}"))),
        }
        out.extend(scratch.drain(..).map(|o| (line_no, o)));
    }
    out
}

/// Hands parsed outcomes to the sink in input order; `unit` names a record in errors ("line",
/// "row").
pub(crate) fn apply_outcomes(
    sink: &mut Sink,
    path: &Path,
    outcomes: Vec<(u64, Outcome)>,
    unit: &'static str,
) -> Result<()> {
    for (record, outcome) in outcomes {
        match outcome {
            Outcome::Row(ds, rec) => sink.emit(ds, rec)?,
            Outcome::Skip(ds, reason) => sink.skip(ds, reason),
            Outcome::Malformed(kind, msg) => {
                let location = Location {
                    path: path.to_path_buf(),
                    record,
                    unit,
                };
                sink.malformed(location, kind, msg)?
            }
        }
    }
    Ok(())
}

fn apply(sink: &mut Sink, path: &Path, parsed: Parsed) -> Result<()> {
    apply_outcomes(sink, path, parsed, "line")
}

/// Reads the next chunk of whole lines (about [`CHUNK_BYTES`]); `None` at EOF. Lines over `cap`
/// are consumed without being kept ([`read_line_capped`]) and recorded in the chunk.
fn read_chunk(
    reader: &mut dyn BufRead,
    path: &Path,
    seq: u64,
    first_line: u64,
    cap: u64,
) -> Result<Option<Chunk>> {
    let mut bytes = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut long = Vec::new();
    let mut line = first_line;
    while bytes.len() < CHUNK_BYTES {
        match read_line_capped(reader, &mut bytes, cap).map_err(|e| read_error(path, e))? {
            LineRead::Eof => break,
            LineRead::Line => {}
            LineRead::TooLong(n) => {
                long.push((line, n));
                bytes.push(b'\n');
            }
            LineRead::Unending(n) => return Err(unending_error(path, line, n, cap)),
        }
        line += 1;
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Chunk {
        seq,
        first_line,
        bytes,
        long,
        cap,
    }))
}

fn count_lines(bytes: &[u8]) -> u64 {
    let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
    n + u64::from(bytes.last() != Some(&b'\n'))
}

/// Feeds every line of `path` through `parser` into `sink`, on `threads` threads.
pub fn ingest_lines(
    sink: &mut Sink,
    path: &Path,
    parser: &dyn LineParser,
    threads: usize,
) -> Result<()> {
    let mut input = sink.open(path)?;
    let cap = sink.max_line_bytes();
    if threads <= 1 {
        let mut line = 1;
        let mut seq = 0;
        while let Some(chunk) = read_chunk(&mut input.reader, path, seq, line, cap)? {
            line += count_lines(&chunk.bytes);
            seq += 1;
            let parsed = parse_chunk(&chunk, parser);
            apply(sink, path, parsed)?;
            sink.report();
        }
        return Ok(());
    }

    let workers = threads.max(2) - 1;
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(workers * 2);
    let (done_tx, done_rx) = bounded::<(u64, Parsed)>(workers * 2);
    std::thread::scope(|scope| -> Result<()> {
        let mut reader = input.reader;
        let reader_thread = scope.spawn(move || -> Result<u64> {
            let mut line = 1;
            let mut seq = 0;
            while let Some(chunk) = read_chunk(&mut reader, path, seq, line, cap)? {
                line += count_lines(&chunk.bytes);
                seq += 1;
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(seq)
        });
        for _ in 0..workers {
            let rx = chunk_rx.clone();
            let tx = done_tx.clone();
            scope.spawn(move || {
                for chunk in rx {
                    let parsed = parse_chunk(&chunk, parser);
                    if tx.send((chunk.seq, parsed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        drop(chunk_rx);
        // Reorder: apply chunk `next` only once every earlier one has been applied.
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        let mut failure = None;
        'receive: for (seq, parsed) in done_rx.iter() {
            pending.insert(seq, parsed);
            while let Some(parsed) = pending.remove(&next) {
                if let Err(e) = apply(sink, path, parsed) {
                    failure = Some(e);
                    break 'receive;
                }
                next += 1;
            }
            sink.report();
        }
        // Dropping the receiver stops the workers, which stops the reader.
        drop(done_rx);
        let read = reader_thread
            .join()
            .map_err(|_| IngestError::Input("reader thread panicked".into()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        read?;
        Ok(())
    })
}
