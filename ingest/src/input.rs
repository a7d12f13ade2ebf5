//! Opening raw inputs: plain or gzip (by magic bytes, not name), folders expanded, lines split with
//! BOM and CRLF handled, and the compressed bytes consumed counted for progress.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::error::{IngestError, Result};

/// The files a run reads, and what the expansion has to say about the rest.
#[derive(Debug, Default)]
pub struct Expanded {
    pub files: Vec<PathBuf>,
    /// Skipped duplicates and symlink loops, and files in input folders this source does not
    /// read: for the report, so nothing is left out silently.
    pub warnings: Vec<String>,
}

/// Identity of a file or folder: device and inode, so two paths to one file (symlinks, bind
/// mounts, hard links) are read once.
#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// How many unread file names a warning lists before it only counts.
const LIST_UNUSED: usize = 10;

/// Expands folders (recursively, sorted, following symlinks but never into a folder already
/// walked) and keeps the files `accept` takes, so a source given a dump folder picks its own
/// files. Plain files given by name are always kept. A file reached twice is read once.
pub fn expand_inputs(inputs: &[PathBuf], accept: &dyn Fn(&Path) -> bool) -> Result<Expanded> {
    let mut out = Expanded::default();
    let mut dirs = HashSet::new();
    let mut files: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| IngestError::io(input, e))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            walk(input, &mut dirs, &mut found, &mut out.warnings)?;
            found.sort();
            let (kept, unused): (Vec<_>, Vec<_>) = found.into_iter().partition(|p| accept(p));
            found = kept;
            if !unused.is_empty() {
                out.warnings.push(unused_warning(input, &unused));
            }
        } else {
            found.push(input.clone());
        }
        for path in found {
            let id = std::fs::metadata(&path).ok().as_ref().and_then(file_id);
            match id.map(|id| files.entry(id)) {
                Some(std::collections::hash_map::Entry::Occupied(first)) => {
                    out.warnings.push(format!(
                        "{}: the same file as {}; read once",
                        path.display(),
                        first.get().display()
                    ));
                }
                Some(std::collections::hash_map::Entry::Vacant(slot)) => {
                    slot.insert(path.clone());
                    out.files.push(path);
                }
                None => out.files.push(path),
            }
        }
    }
    if out.files.is_empty() {
        return Err(IngestError::Input(format!(
            "no input files for this source under {}{}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            out.warnings
                .iter()
                .map(|w| format!("\n  {w}"))
                .collect::<String>()
        )));
    }
    Ok(out)
}

fn unused_warning(dir: &Path, unused: &[PathBuf]) -> String {
    let names: Vec<String> = unused
        .iter()
        .take(LIST_UNUSED)
        .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
        .collect();
    let more = unused.len().saturating_sub(LIST_UNUSED);
    format!(
        "{}: {} file(s) this source does not read, not used: {}{}",
        dir.display(),
        unused.len(),
        names.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// Depth-first, entries sorted; a folder already walked (a symlink loop, or two links to one
/// folder) is skipped with a warning.
fn walk(
    dir: &Path,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| IngestError::io(dir, e))?;
    if let Some(id) = file_id(&meta) {
        if !seen.insert(id) {
            warnings.push(format!(
                "{}: a folder already walked (symlink loop or second link); skipped",
                dir.display()
            ));
            return Ok(());
        }
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| IngestError::io(dir, e))? {
        let entry = entry.map_err(|e| IngestError::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    for path in entries {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, seen, out, warnings)?,
            Ok(_) => out.push(path),
            Err(e) => warnings.push(format!("{}: {e}; skipped", path.display())),
        }
    }
    Ok(())
}

/// File name without a trailing `.gz`, for matching by name (`Posts.xml.gz` is `Posts.xml`).
pub fn base_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".gz").map(str::to_owned).unwrap_or(name)
}

/// Counts bytes read from the underlying (possibly compressed) file.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input: decompressed bytes, plus a counter of raw bytes consumed.
pub struct InputReader {
    pub path: PathBuf,
    pub reader: Box<dyn BufRead + Send>,
    pub raw_bytes_read: Arc<AtomicU64>,
}

/// Opens a file, decompressing gzip when its first bytes say so.
pub fn open(path: &Path) -> Result<InputReader> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    open_reader(path, file)
}

/// Like [`open`], over any reader of the file's raw bytes.
pub fn open_reader(path: &Path, file: impl Read + Send + 'static) -> Result<InputReader> {
    let count = Arc::new(AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: file,
            count: count.clone(),
        },
    );
    let head = buffered.fill_buf().map_err(|e| IngestError::io(path, e))?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let reader: Box<dyn BufRead + Send> = if gz {
        Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    Ok(InputReader {
        path: path.to_path_buf(),
        reader,
        raw_bytes_read: count,
    })
}

/// Turns a read error into one that says what likely happened (a cut-off gzip is common).
pub fn read_error(path: &Path, e: io::Error) -> IngestError {
    let hint = match e.kind() {
        io::ErrorKind::UnexpectedEof => " (the file is truncated: was the download complete?)",
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => " (corrupt compressed data?)",
        _ => "",
    };
    IngestError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(e.kind(), format!("{e}{hint}")),
    }
}

/// Total size on disk of the inputs, for a progress total.
pub fn total_size(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Default cap on one line of a line-oriented input (`--max-line-bytes`).
pub const DEFAULT_MAX_LINE_BYTES: u64 = 64 << 20;

/// An over-long line is skipped without being buffered, but only up to this many times the cap:
/// a "line" that long (`/dev/zero`, a binary file) means the input is not line-oriented text, and
/// reading on would only spin.
const SKIP_FACTOR: u64 = 16;

/// What [`read_line_capped`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    Eof,
    /// A line within the cap, appended to the buffer (with its `\n` unless at EOF).
    Line,
    /// A line longer than the cap: this many bytes were consumed, none kept.
    TooLong(u64),
    /// No newline within [`SKIP_FACTOR`] times the cap: reading stopped after this many bytes.
    Unending(u64),
}

/// Appends the next line to `out` unless its text (without the newline) is longer than `cap`
/// bytes; such a line is consumed up to its newline without being kept, so memory stays within
/// `cap` plus one read buffer whatever the input.
pub fn read_line_capped<R: BufRead + ?Sized>(
    reader: &mut R,
    out: &mut Vec<u8>,
    cap: u64,
) -> io::Result<LineRead> {
    let start = out.len();
    let mut len = 0u64;
    let mut skipping = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (len, skipping) {
                (0, _) => LineRead::Eof,
                (_, false) => LineRead::Line,
                (n, true) => LineRead::TooLong(n),
            });
        }
        let (take, ended) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        len += take as u64;
        if !skipping && len - u64::from(ended) > cap {
            skipping = true;
            out.truncate(start);
        }
        if !skipping {
            out.extend_from_slice(&buf[..take]);
        }
        reader.consume(take);
        if ended {
            return Ok(if skipping {
                LineRead::TooLong(len)
            } else {
                LineRead::Line
            });
        }
        if skipping && len > cap.saturating_mul(SKIP_FACTOR) {
            return Ok(LineRead::Unending(len));
        }
    }
}

/// The message for a line over the cap, counted as a malformed record.
pub fn too_long_message(bytes: u64, cap: u64) -> String {
    format!("{bytes} bytes, over --max-line-bytes {cap}; skipped to the next newline")
}

/// The error for a line with no newline in sight ([`LineRead::Unending`]).
pub fn unending_error(path: &Path, line_no: u64, bytes: u64, cap: u64) -> IngestError {
    IngestError::Malformed {
        location: crate::Location {
            path: path.to_path_buf(),
            record: line_no,
            unit: "line",
        },
        message: format!(
            "no newline in {bytes} bytes ({SKIP_FACTOR}x --max-line-bytes {cap}): this is not \
             line-oriented text"
        ),
    }
}

/// A line's number (1-based) and bytes; `None` bytes for a line over the cap.
pub type NumberedLine<'a> = (u64, Option<&'a [u8]>);

/// Splits a reader into lines: strips a UTF-8 BOM on the first line, `\r\n` and `\n`; lines over
/// the cap come back as `None` (see [`read_line_capped`]).
pub struct Lines<R> {
    reader: R,
    path: PathBuf,
    cap: u64,
    buf: Vec<u8>,
    line_no: u64,
    too_long: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, path: &Path, cap: u64) -> Self {
        Lines {
            reader,
            path: path.to_path_buf(),
            cap,
            buf: Vec::with_capacity(4096),
            line_no: 0,
            too_long: 0,
        }
    }

    /// The next line's number (1-based) and bytes, without its terminator; `None` for a line
    /// over the cap ([`Lines::too_long_message`] says why).
    pub fn next_line(&mut self) -> Result<Option<NumberedLine<'_>>> {
        self.buf.clear();
        let read = read_line_capped(&mut self.reader, &mut self.buf, self.cap)
            .map_err(|e| read_error(&self.path, e))?;
        let n = match read {
            LineRead::Eof => return Ok(None),
            LineRead::Line => 0,
            LineRead::TooLong(n) => n,
            LineRead::Unending(n) => {
                return Err(unending_error(&self.path, self.line_no + 1, n, self.cap))
            }
        };
        self.line_no += 1;
        if n > 0 {
            self.too_long = n;
            return Ok(Some((self.line_no, None)));
        }
        let mut line: &[u8] = &self.buf;
        if self.line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.line_no, Some(line))))
    }

    /// Why the last `None` line was refused.
    pub fn too_long_message(&self) -> String {
        too_long_message(self.too_long, self.cap)
    }
}
