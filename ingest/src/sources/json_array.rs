//! Streams the elements of one JSON array out of a document too big to parse whole (TriviaQA's web
//! train file is one 1.5 GB object; ELI5 splits are one long array). A hand-written scanner finds
//! the array (top level, or under a key of the top-level object), cuts out each element's bytes
//! without interpreting them, and hands them to the caller, who gives them to serde_json. Memory
//! is one read buffer plus the largest element.

use std::io::{self, Read};

/// Why scanning stopped. Syntax errors cannot be recovered from: where the next element starts is
/// unknown once the structure is broken.
#[derive(Debug)]
pub(crate) enum ScanError<E> {
    Io(io::Error),
    Syntax {
        line: u64,
        /// Byte offset in the decompressed document.
        offset: u64,
        message: String,
    },
    /// The caller's callback failed.
    Callback(E),
}

/// What receives each element: (element number from 1, line where it starts, its bytes).
pub(crate) type OnElement<'f, E> = dyn FnMut(u64, u64, &[u8]) -> Result<(), E> + 'f;

const READ_BYTES: usize = 256 << 10;

struct Scanner<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    line: u64,
    /// Bytes of the document consumed so far (after any BOM), for messages.
    offset: u64,
}

impl<R: Read> Scanner<R> {
    fn new(reader: R) -> Self {
        Scanner {
            reader,
            buf: vec![0; READ_BYTES],
            pos: 0,
            len: 0,
            line: 1,
            offset: 0,
        }
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(if self.fill()? {
            Some(self.buf[self.pos])
        } else {
            None
        })
    }

    fn bump(&mut self) {
        if self.buf[self.pos] == b'\n' {
            self.line += 1;
        }
        self.pos += 1;
        self.offset += 1;
    }

    fn syntax<E>(&self, message: impl Into<String>) -> ScanError<E> {
        ScanError::Syntax {
            line: self.line,
            offset: self.offset,
            message: message.into(),
        }
    }

    fn eof<E>(&self, what: &str) -> ScanError<E> {
        self.syntax(format!(
            "unexpected end of file {what} (the file is truncated?)"
        ))
    }

    /// Skips whitespace; the next byte, not consumed (`None` at EOF).
    fn skip_ws(&mut self) -> io::Result<Option<u8>> {
        while let Some(b) = self.peek()? {
            if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                return Ok(Some(b));
            }
            self.bump();
        }
        Ok(None)
    }

    fn expect<E>(&mut self, want: u8, what: &str) -> Result<(), ScanError<E>> {
        match self.skip_ws().map_err(ScanError::Io)? {
            Some(b) if b == want => {
                self.bump();
                Ok(())
            }
            Some(b) => Err(self.syntax(format!(
                "expected `{}` {what}, found `{}`",
                want as char,
                (b as char).escape_default()
            ))),
            None => Err(self.eof(what)),
        }
    }

    /// Copies a string (the opening quote is next) into `out`, quotes and escapes kept as written.
    fn string<E>(&mut self, out: &mut Vec<u8>) -> Result<(), ScanError<E>> {
        self.bump();
        out.push(b'"');
        loop {
            if !self.fill().map_err(ScanError::Io)? {
                return Err(self.eof("inside a string"));
            }
            let chunk = &self.buf[self.pos..self.len];
            match memchr::memchr2(b'"', b'\\', chunk) {
                None => {
                    out.extend_from_slice(chunk);
                    self.line += memchr::memchr_iter(b'\n', chunk).count() as u64;
                    self.offset += chunk.len() as u64;
                    self.pos = self.len;
                }
                Some(i) => {
                    let quote = chunk[i] == b'"';
                    out.extend_from_slice(&chunk[..=i]);
                    self.line += memchr::memchr_iter(b'\n', &chunk[..i]).count() as u64;
                    self.offset += i as u64 + 1;
                    self.pos += i + 1;
                    if quote {
                        return Ok(());
                    }
                    // A backslash: the escaped byte is copied whatever it is.
                    if !self.fill().map_err(ScanError::Io)? {
                        return Err(self.eof("inside a string"));
                    }
                    out.push(self.buf[self.pos]);
                    self.bump();
                }
            }
        }
    }

    /// Copies one JSON value (whitespace before it skipped) into `out`. Brackets are only counted,
    /// not matched: serde_json validates the element afterwards.
    fn value<E>(&mut self, out: &mut Vec<u8>) -> Result<(), ScanError<E>> {
        let Some(first) = self.skip_ws().map_err(ScanError::Io)? else {
            return Err(self.eof("where a value was expected"));
        };
        match first {
            b'"' => self.string(out),
            b'{' | b'[' => {
                let mut depth = 0u64;
                loop {
                    let Some(b) = self.peek().map_err(ScanError::Io)? else {
                        return Err(self.eof("inside an object or array"));
                    };
                    match b {
                        b'"' => {
                            self.string(out)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    out.push(b);
                    self.bump();
                    if depth == 0 {
                        return Ok(());
                    }
                }
            }
            b'}' | b']' | b',' | b':' => {
                Err(self.syntax(format!("expected a value, found `{}`", first as char)))
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                while let Some(b) = self.peek().map_err(ScanError::Io)? {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    out.push(b);
                    self.bump();
                }
                Ok(())
            }
        }
    }

    /// Streams the array whose `[` comes next.
    fn array<E>(&mut self, f: &mut OnElement<E>) -> Result<(), ScanError<E>> {
        self.expect(b'[', "at the start of the array")?;
        let mut element = Vec::new();
        let mut index = 0u64;
        if self.skip_ws().map_err(ScanError::Io)? == Some(b']') {
            self.bump();
            return Ok(());
        }
        loop {
            element.clear();
            self.skip_ws().map_err(ScanError::Io)?;
            let line = self.line;
            self.value(&mut element)?;
            index += 1;
            f(index, line, &element).map_err(ScanError::Callback)?;
            match self.skip_ws().map_err(ScanError::Io)? {
                Some(b',') => self.bump(),
                Some(b']') => {
                    self.bump();
                    return Ok(());
                }
                Some(b) => {
                    return Err(self.syntax(format!(
                        "expected `,` or `]` after array element {index}, found `{}`",
                        (b as char).escape_default()
                    )))
                }
                None => return Err(self.eof("inside the array")),
            }
        }
    }
}

/// Skips a UTF-8 byte-order mark at the start of `reader`.
fn skip_bom<R: Read, E>(s: &mut Scanner<R>) -> Result<(), ScanError<E>> {
    if !s.fill().map_err(ScanError::Io)? {
        return Ok(());
    }
    // A BOM split over two reads is not worth handling: reads are 256 KiB.
    if s.buf[s.pos..s.len].starts_with(b"\xEF\xBB\xBF") {
        s.pos += 3;
    }
    Ok(())
}

/// Calls `f(element_number, line, bytes)` for each element of the array that is the whole document
/// (`key` = None) or the value of `key` in the top-level object. Elements are numbered from 1;
/// `line` is where the element starts. Other keys' values are skipped.
pub(crate) fn for_each_element<R: Read, E>(
    reader: R,
    key: Option<&str>,
    f: &mut OnElement<E>,
) -> Result<(), ScanError<E>> {
    let mut s = Scanner::new(reader);
    skip_bom(&mut s)?;
    if s.skip_ws().map_err(ScanError::Io)?.is_none() {
        return Err(s.syntax("the file is empty; expected a JSON document"));
    }
    match key {
        None => s.array(f)?,
        Some(key) => {
            s.expect(b'{', "at the start of the document")?;
            let wanted = format!("\"{key}\"");
            let mut found = false;
            let mut scratch = Vec::new();
            loop {
                match s.skip_ws().map_err(ScanError::Io)? {
                    Some(b'}') => {
                        s.bump();
                        break;
                    }
                    Some(b'"') => {}
                    Some(b) => {
                        return Err(s.syntax(format!(
                            "expected a key, found `{}`",
                            (b as char).escape_default()
                        )))
                    }
                    None => return Err(s.eof("inside the top-level object")),
                }
                scratch.clear();
                s.string(&mut scratch)?;
                s.expect(b':', "after a key")?;
                if scratch == wanted.as_bytes() && !found {
                    found = true;
                    s.array(f)?;
                } else {
                    scratch.clear();
                    s.value(&mut scratch)?;
                }
                match s.skip_ws().map_err(ScanError::Io)? {
                    Some(b',') => s.bump(),
                    Some(b'}') => {
                        s.bump();
                        break;
                    }
                    Some(b) => {
                        return Err(s.syntax(format!(
                            "expected `,` or `}}` in the top-level object, found `{}`",
                            (b as char).escape_default()
                        )))
                    }
                    None => return Err(s.eof("inside the top-level object")),
                }
            }
            if !found {
                return Err(s.syntax(format!("the top-level object has no `{key}` array")));
            }
        }
    }
    match s.skip_ws().map_err(ScanError::Io)? {
        None => Ok(()),
        Some(b) => Err(s.syntax(format!(
            "unexpected `{}` after the end of the document",
            (b as char).escape_default()
        ))),
    }
}

/// What a source does with one array element: `(sink, element_number, line, bytes)`.
pub(crate) type ElementToSink<'f> =
    dyn FnMut(&mut crate::Sink, u64, u64, &[u8]) -> crate::Result<()> + 'f;

/// Streams the array of `path` (the whole document, or the value of `key`) through `f`,
/// refreshing progress as it goes. A document whose structure breaks (truncated, damaged bytes)
/// fails the run, naming the line and byte offset of the break: what follows cannot be found, so
/// a dataset built from the part before it would be silently short. An empty file is an error.
pub(crate) fn ingest_array(
    sink: &mut crate::Sink,
    path: &std::path::Path,
    key: Option<&str>,
    f: &mut ElementToSink,
) -> crate::Result<()> {
    let input = sink.open(path)?;
    let mut each = |index: u64, line: u64, bytes: &[u8]| -> crate::Result<()> {
        f(sink, index, line, bytes)?;
        if index.is_multiple_of(4096) {
            sink.report();
        }
        Ok(())
    };
    match for_each_element(input.reader, key, &mut each) {
        Ok(()) => Ok(()),
        Err(ScanError::Callback(e)) => Err(e),
        Err(ScanError::Io(e)) => Err(crate::input::read_error(path, e)),
        Err(ScanError::Syntax {
            line,
            offset,
            message,
        }) => Err(crate::IngestError::Malformed {
            location: crate::Location {
                path: path.to_path_buf(),
                record: line,
                unit: "line",
            },
            message: format!(
                "invalid JSON document at byte {offset}: {message}; the rest of the file cannot \
                 be read"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(doc: &str, key: Option<&str>) -> Result<Vec<(u64, u64, String)>, String> {
        let mut out = Vec::new();
        let mut f = |i: u64, line: u64, b: &[u8]| -> Result<(), ()> {
            out.push((i, line, String::from_utf8(b.to_vec()).unwrap()));
            Ok(())
        };
        match for_each_element(doc.as_bytes(), key, &mut f) {
            Ok(()) => Ok(out),
            Err(ScanError::Syntax { line, message, .. }) => Err(format!("{line}: {message}")),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn finds_elements_under_a_key() {
        let doc = "\u{feff}{\"Version\": 1.0, \"Other\": {\"a\": [1, \"]\"]},\n \"Data\": [\n {\"q\": \"x\\\"}\"},\n [1,2], 3, \"s\"], \"Tail\": null}\n";
        assert_eq!(
            collect(doc, Some("Data")).unwrap(),
            vec![
                (1, 3, "{\"q\": \"x\\\"}\"}".to_owned()),
                (2, 4, "[1,2]".to_owned()),
                (3, 4, "3".to_owned()),
                (4, 4, "\"s\"".to_owned()),
            ]
        );
        assert_eq!(collect("[]", None).unwrap(), vec![]);
        assert_eq!(collect(" [ {} ] ", None).unwrap().len(), 1);
    }

    #[test]
    fn reports_truncation_and_junk() {
        let err = collect("{\"Data\": [{\"a\": 1}, {\"b\":", Some("Data")).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = collect("{\"Version\": 1}", Some("Data")).unwrap_err();
        assert!(err.contains("no `Data` array"), "{err}");
        let err = collect("[1] x", None).unwrap_err();
        assert!(err.contains("after the end"), "{err}");
        let err = collect("{\"Data\": [1 2]}", Some("Data")).unwrap_err();
        assert!(err.contains("after array element 1"), "{err}");
    }
}
