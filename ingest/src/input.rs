//! Opening raw inputs: plain or gzip (by magic bytes, not name), folders expanded, lines split with
//! BOM and CRLF handled, and the compressed bytes consumed counted for progress.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::error::{IngestError, Result};

/// Expands folders (recursively, sorted) and keeps the files `accept` takes, so a source given a
/// dump folder picks its own files. Plain files given by name are always kept.
pub fn expand_inputs(inputs: &[PathBuf], accept: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| IngestError::io(input, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            out.extend(found.into_iter().filter(|p| accept(p)));
        } else {
            out.push(input.clone());
        }
    }
    if out.is_empty() {
        return Err(IngestError::Input(format!(
            "no input files for this source under {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| IngestError::io(dir, e))? {
        let entry = entry.map_err(|e| IngestError::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
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

/// Splits a reader into lines: strips a UTF-8 BOM on the first line, `\r\n` and `\n`.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::with_capacity(4096),
            line_no: 0,
        }
    }

    /// The next line's number (1-based) and bytes, without its terminator.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let mut line: &[u8] = &self.buf;
        if self.line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.line_no, line)))
    }
}
