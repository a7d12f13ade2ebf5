//! Yahoo! Answers Topic Classification CSV (`yahoo_answers_csv`: `train.csv`, `test.csv`): no
//! header, four double-quoted columns `class, title, content, best_answer`, `""` for a quote inside
//! a field, newlines written as the two characters `\n` (real newlines inside quotes also parse).
//!
//! Three pair sets, each skipping rows where one of its two texts is empty:
//! `yahoo_title_answer` (title, best answer), `yahoo_title_question` (title, content) and
//! `yahoo_question_answer` (content, best answer). Texts get `\n` turned into newlines and the
//! `<br />` tags the dump carries removed.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};

use crate::input::{base_name, read_error, read_line_capped, LineRead};
use crate::text::{decode_entities, non_empty};
use crate::{IngestOptions, Location, Result, Sink, Source};

pub struct YahooAnswers;

const TITLE_ANSWER: usize = 0;
const TITLE_QUESTION: usize = 1;
const QUESTION_ANSWER: usize = 2;

/// A quoted field longer than this is taken for an unterminated quote, not a real answer: it
/// bounds the memory one broken record can take.
const MAX_RECORD_BYTES: usize = 8 << 20;

/// One CSV record: its first line, its fields as raw bytes, or why it could not be split.
#[derive(Debug)]
pub(crate) struct RawRecord {
    pub line: u64,
    pub fields: Vec<Vec<u8>>,
    pub error: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    AfterQuote,
}

/// Splits a reader into CSV records (RFC 4180 quoting, records may span lines), streaming.
/// A character after a closing quote is kept as text, as Python's csv module does.
pub(crate) struct CsvRecords<R> {
    reader: R,
    delimiter: u8,
    line_no: u64,
    buf: Vec<u8>,
    /// `--max-line-bytes`: one physical line is never buffered beyond it.
    cap: u64,
}

impl<R: BufRead> CsvRecords<R> {
    pub fn new(reader: R, delimiter: u8, cap: u64) -> Self {
        CsvRecords {
            reader,
            delimiter,
            cap,
            line_no: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    pub fn next_record(&mut self) -> io::Result<Option<RawRecord>> {
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut state = State::FieldStart;
        let mut start = 0;
        let mut size = 0usize;
        loop {
            self.buf.clear();
            let read = read_line_capped(&mut self.reader, &mut self.buf, self.cap)?;
            let n = match read {
                LineRead::Eof => 0,
                LineRead::Line => self.buf.len(),
                LineRead::TooLong(_) => {
                    self.line_no += 1;
                    return Ok(Some(RawRecord {
                        line: if start == 0 { self.line_no } else { start },
                        fields,
                        error: Some("a line over --max-line-bytes (skipped to the next newline)"),
                    }));
                }
                LineRead::Unending(bytes) => {
                    return Err(io::Error::other(format!(
                        "line {}: no newline in {bytes} bytes (16x --max-line-bytes): not CSV text",
                        self.line_no + 1
                    )))
                }
            };
            if n == 0 {
                if start == 0 {
                    return Ok(None);
                }
                // EOF inside a quoted field.
                fields.push(field);
                return Ok(Some(RawRecord {
                    line: start,
                    fields,
                    error: Some("unterminated quoted field at end of file"),
                }));
            }
            self.line_no += 1;
            if start == 0 {
                start = self.line_no;
            }
            let mut line: &[u8] = &self.buf;
            if self.line_no == 1 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            let ended = line.last() == Some(&b'\n');
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            size += line.len();
            let mut i = 0;
            while i < line.len() {
                let b = line[i];
                match state {
                    State::FieldStart if b == b'"' => state = State::Quoted,
                    State::FieldStart | State::Unquoted | State::AfterQuote
                        if b == self.delimiter =>
                    {
                        fields.push(std::mem::take(&mut field));
                        state = State::FieldStart;
                    }
                    State::FieldStart | State::Unquoted | State::AfterQuote => {
                        field.push(b);
                        state = State::Unquoted;
                    }
                    State::Quoted if b == b'"' => {
                        if line.get(i + 1) == Some(&b'"') {
                            field.push(b'"');
                            i += 1;
                        } else {
                            state = State::AfterQuote;
                        }
                    }
                    State::Quoted => field.push(b),
                }
                i += 1;
            }
            if state != State::Quoted || !ended {
                fields.push(field);
                let error =
                    (state == State::Quoted).then_some("unterminated quoted field at end of file");
                return Ok(Some(RawRecord {
                    line: start,
                    fields,
                    error,
                }));
            }
            if size > MAX_RECORD_BYTES {
                // Resynchronise on the next line: the rest of the file is not swallowed.
                fields.push(field);
                return Ok(Some(RawRecord {
                    line: start,
                    fields,
                    error: Some("quoted field runs past 8 MiB (unterminated quote?)"),
                }));
            }
            field.push(b'\n');
        }
    }
}

/// The dump's text conventions: `\n` written out as two characters, `<br />` before (or
/// instead of) those, and the odd HTML entity.
fn clean(raw: &str) -> Option<String> {
    let mut s = raw.to_owned();
    for tag in ["<br />", "<br/>", "<br>"] {
        if s.contains(tag) {
            s = s.replace(&format!("{tag}\\n"), "\\n").replace(tag, "\\n");
        }
    }
    let s = s.replace("\\n", "\n");
    non_empty(&decode_entities(&s))
}

fn ingest_file(sink: &mut Sink, path: &Path) -> Result<()> {
    let input = sink.open(path)?;
    let file = base_name(path);
    let mut records = CsvRecords::new(input.reader, b',', sink.max_line_bytes());
    let mut row = 0u64;
    while let Some(rec) = records.next_record().map_err(|e| read_error(path, e))? {
        if rec.fields.len() == 1 && rec.fields[0].is_empty() && rec.error.is_none() {
            continue; // blank line
        }
        row += 1;
        let location = Location {
            path: path.to_path_buf(),
            record: rec.line,
            unit: "line",
        };
        if let Some(error) = rec.error {
            sink.malformed(location, "malformed CSV", error)?;
            continue;
        }
        if rec.fields.len() != 4 {
            let kind = if rec.fields.len() < 4 {
                "missing column"
            } else {
                "extra column"
            };
            let msg = format!(
                "{} fields, expected 4 (class, title, content, best_answer)",
                rec.fields.len()
            );
            sink.malformed(location, kind, msg)?;
            continue;
        }
        let texts: std::result::Result<Vec<&str>, _> =
            rec.fields.iter().map(|f| std::str::from_utf8(f)).collect();
        let texts = match texts {
            Ok(t) => t,
            Err(e) => {
                sink.malformed(location, "invalid UTF-8", e.to_string())?;
                continue;
            }
        };
        if row & 0xfff == 0 {
            sink.report();
        }
        let id = format!("{file}:{row}");
        let (title, content, answer) = (clean(texts[1]), clean(texts[2]), clean(texts[3]));
        let sets = [
            (TITLE_ANSWER, &title, "empty title", &answer, "empty answer"),
            (
                TITLE_QUESTION,
                &title,
                "empty title",
                &content,
                "empty content",
            ),
            (
                QUESTION_ANSWER,
                &content,
                "empty content",
                &answer,
                "empty answer",
            ),
        ];
        for (ds, anchor, no_anchor, positive, no_positive) in sets {
            match (anchor, positive) {
                (None, _) => sink.skip(ds, no_anchor),
                (_, None) => sink.skip(ds, no_positive),
                (Some(a), Some(p)) => sink.emit(
                    ds,
                    PairRecord::pair(a.clone(), p.clone()).with_id(id.clone()),
                )?,
            }
        }
    }
    Ok(())
}

impl Source for YahooAnswers {
    fn name(&self) -> &'static str {
        "yahoo_answers"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[
            ("yahoo_title_answer", Arity::Pair),
            ("yahoo_title_question", Arity::Pair),
            ("yahoo_question_answer", Arity::Pair),
        ]
    }
    fn about(&self) -> &'static str {
        "Yahoo! Answers CSV (yahoo_answers_csv: train.csv, test.csv, plain or .gz, or their folder; \
         no header; columns class, title, content, best_answer). Writes three pair sets: \
         yahoo_title_answer (title, best answer), yahoo_title_question (title, content) and \
         yahoo_question_answer (content, best answer), each skipping rows where one of its texts \
         is empty. Literal \\n sequences become newlines and <br /> tags are removed."
    }
    fn accept(&self, path: &Path) -> bool {
        base_name(path).ends_with(".csv")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, _opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            ingest_file(sink, path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(u64, Vec<String>, Option<&'static str>)> {
        let mut r = CsvRecords::new(text.as_bytes(), b',', 1 << 20);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            let fields = rec
                .fields
                .iter()
                .map(|f| String::from_utf8(f.clone()).unwrap())
                .collect();
            out.push((rec.line, fields, rec.error));
        }
        out
    }

    #[test]
    fn splits_quoted_multiline_records() {
        let got = split("\"1\",\"a \"\"b\"\"\",\"x\r\ny\",plain\r\n\"2\",\"\",,\"z\"\"\"");
        assert_eq!(
            got,
            vec![
                (
                    1,
                    vec!["1".into(), "a \"b\"".into(), "x\ny".into(), "plain".into()],
                    None
                ),
                (
                    3,
                    vec!["2".into(), "".into(), "".into(), "z\"".into()],
                    None
                ),
            ]
        );
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let got = split("\"0\",\"ok\"\n\"1\",\"open\n2,3\n4\n");
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].0, got[1].2.is_some()), (2, true));
    }

    #[test]
    fn cleans_dump_conventions() {
        assert_eq!(
            clean("online<br />\\nsearch &amp; find\\nmore<br />end").unwrap(),
            "online\nsearch & find\nmore\nend"
        );
        assert_eq!(clean("  \\n "), None);
    }
}
