//! Amazon question/answer data (McAuley & Yang, jmcauley.ucsd.edu): one Python dict literal per
//! line (single quotes, `None`, `True`; what `ast.literal_eval` reads), in two layouts:
//!
//! - single-answer files (`qa_<Category>.json.gz`): `{'question': ..., 'answer': ..., 'asin': ...}`
//!   give one pair (question, answer);
//! - multi-answer files (`QA_<Category>.json.gz`): `{'asin': ..., 'questions': [{'questionText':
//!   ..., 'answers': [{'answerText': ...}, ...]}, ...]}` give one pair per (question, answer).
//!
//! The `source_id` is the product's `asin`. Escapes follow Python 3 (`\xNN` and `\uNNNN` are code
//! points), as `ast.literal_eval` reads them.

use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};

use crate::input::base_name;
use crate::lines::{ingest_lines, Outcome};
use crate::text::{decode_entities, non_empty};
use crate::{IngestOptions, Result, Sink, Source};

pub struct AmazonQa;

/// A Python literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    /// The value under a string key of a dict.
    pub fn get(&self, key: &str) -> Option<&Py> {
        match self {
            Py::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Py::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Py::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Py]> {
        match self {
            Py::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Deepest nesting accepted: the data nests 4 levels; this only stops a hostile line from
/// overflowing the stack.
const MAX_DEPTH: usize = 64;

/// Parses one Python literal (dict, list, tuple, str, int, float, None, True, False) that makes
/// up the whole of `text`. Errors say what was expected at which byte offset.
pub fn parse_python_literal(text: &str) -> std::result::Result<Py, String> {
    let mut p = PyParser {
        s: text.as_bytes(),
        text,
        pos: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("end of line"));
    }
    Ok(value)
}

struct PyParser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl PyParser<'_> {
    fn err(&self, expected: &str) -> String {
        match self.text[self.pos..].chars().next() {
            Some(c) => format!("expected {expected} at byte {}, found {c:?}", self.pos),
            None => format!(
                "expected {expected} at byte {}, found end of line",
                self.pos
            ),
        }
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Py, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nesting deeper than {MAX_DEPTH} at byte {}",
                self.pos
            ));
        }
        self.ws();
        let Some(&c) = self.s.get(self.pos) else {
            return Err(self.err("a value"));
        };
        match c {
            b'{' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Ok(Py::Dict(items));
                    }
                    let key = self.value(depth + 1)?;
                    if !self.eat(b':') {
                        return Err(self.err("':'"));
                    }
                    let value = self.value(depth + 1)?;
                    items.push((key, value));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            return Ok(Py::Dict(items));
                        }
                        return Err(self.err("',' or '}'"));
                    }
                }
            }
            b'[' | b'(' => {
                let close = if c == b'[' { b']' } else { b')' };
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(close) {
                        return Ok(Py::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                    if !self.eat(b',') {
                        if self.eat(close) {
                            return Ok(Py::List(items));
                        }
                        return Err(self.err(&format!("',' or '{}'", close as char)));
                    }
                }
            }
            b'\'' | b'"' => self.string(),
            b'u' | b'U' | b'r' | b'R' | b'b' | b'B'
                if matches!(self.s.get(self.pos + 1), Some(b'\'' | b'"')) =>
            {
                self.string()
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => self.number(),
            _ => {
                for (word, value) in [
                    ("None", Py::None),
                    ("True", Py::Bool(true)),
                    ("False", Py::Bool(false)),
                ] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(value);
                    }
                }
                Err(self.err("a value"))
            }
        }
    }

    fn number(&mut self) -> std::result::Result<Py, String> {
        let start = self.pos;
        while self.pos < self.s.len()
            && matches!(
                self.s[self.pos],
                b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'_'
            )
        {
            self.pos += 1;
        }
        let raw = self.text[start..self.pos].replace('_', "");
        if let Ok(i) = raw.parse::<i64>() {
            return Ok(Py::Int(i));
        }
        raw.parse::<f64>().map(Py::Float).map_err(|_| {
            self.pos = start;
            self.err("a number")
        })
    }

    /// A string literal, with adjacent literals concatenated as Python does.
    fn string(&mut self) -> std::result::Result<Py, String> {
        let mut out = String::new();
        loop {
            self.one_string(&mut out)?;
            let save = self.pos;
            self.ws();
            let next = self.s.get(self.pos).copied();
            let prefixed = matches!(next, Some(b'u' | b'U' | b'r' | b'R' | b'b' | b'B'))
                && matches!(self.s.get(self.pos + 1), Some(b'\'' | b'"'));
            if !(matches!(next, Some(b'\'' | b'"')) || prefixed) {
                self.pos = save;
                return Ok(Py::Str(out));
            }
        }
    }

    fn one_string(&mut self, out: &mut String) -> std::result::Result<(), String> {
        let mut raw = false;
        if matches!(self.s[self.pos], b'r' | b'R') {
            raw = true;
            self.pos += 1;
        } else if matches!(self.s[self.pos], b'u' | b'U' | b'b' | b'B') {
            self.pos += 1;
        }
        let quote = self.s[self.pos];
        self.pos += 1;
        let triple = self.s[self.pos..].starts_with(&[quote, quote]);
        if triple {
            self.pos += 2;
        }
        loop {
            // Copy the run up to the next quote or backslash at once.
            let rest = &self.s[self.pos..];
            let Some(stop) = memchr::memchr2(quote, b'\\', rest) else {
                return Err(format!(
                    "unterminated string starting before byte {}",
                    self.pos
                ));
            };
            out.push_str(&self.text[self.pos..self.pos + stop]);
            self.pos += stop;
            if self.s[self.pos] == quote {
                if !triple {
                    self.pos += 1;
                    return Ok(());
                }
                if self.s[self.pos..].starts_with(&[quote, quote, quote]) {
                    self.pos += 3;
                    return Ok(());
                }
                out.push(quote as char);
                self.pos += 1;
                continue;
            }
            // A backslash.
            let esc_at = self.pos;
            let Some(&e) = self.s.get(self.pos + 1) else {
                return Err(format!("unterminated string at byte {esc_at}"));
            };
            if raw {
                // A raw string keeps the backslash; it still stops a quote from closing it.
                out.push('\\');
                self.pos += 1;
                if e == quote || e == b'\\' {
                    out.push(e as char);
                    self.pos += 1;
                }
                continue;
            }
            self.pos += 2;
            match e {
                b'\n' => {}
                b'\\' => out.push('\\'),
                b'\'' => out.push('\''),
                b'"' => out.push('"'),
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'a' => out.push('\x07'),
                b'b' => out.push('\x08'),
                b'f' => out.push('\x0c'),
                b'v' => out.push('\x0b'),
                b'0'..=b'7' => {
                    let mut code = u32::from(e - b'0');
                    for _ in 0..2 {
                        match self.s.get(self.pos) {
                            Some(&d @ b'0'..=b'7') => {
                                code = code * 8 + u32::from(d - b'0');
                                self.pos += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(char::from_u32(code).expect("octal escapes stay below 0o777"));
                }
                b'x' | b'u' | b'U' => {
                    let len = match e {
                        b'x' => 2,
                        b'u' => 4,
                        _ => 8,
                    };
                    let hex = self
                        .text
                        .get(self.pos..self.pos + len)
                        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                    let c = hex
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("bad \\{} escape at byte {esc_at}", e as char))?;
                    out.push(c);
                    self.pos += len;
                }
                _ => {
                    // Python keeps unknown escapes as written. `e` may start a multi-byte char.
                    out.push('\\');
                    self.pos -= 1;
                }
            }
        }
    }
}

/// A text field under the text policy: the dump's raw text is HTML-escaped (`&amp;`, `&#39;`).
fn text_of(v: Option<&Py>) -> Option<String> {
    v.and_then(Py::as_str)
        .and_then(|s| non_empty(&decode_entities(s)))
}

fn parse(_line_no: u64, line: &str, out: &mut Vec<Outcome>) {
    let value = match parse_python_literal(line) {
        Ok(v @ Py::Dict(_)) => v,
        Ok(_) => {
            return out.push(Outcome::Malformed(
                "invalid Python literal",
                "the line is not a dict".into(),
            ))
        }
        Err(e) => return out.push(Outcome::Malformed("invalid Python literal", e)),
    };
    let asin = value.get("asin").and_then(Py::as_str).unwrap_or_default();
    let pair = |q: String, a: String| {
        let rec = PairRecord::pair(q, a);
        if asin.is_empty() {
            rec
        } else {
            rec.with_id(asin)
        }
    };
    if let Some(questions) = value.get("questions") {
        let Some(questions) = questions.as_list() else {
            return out.push(Outcome::Malformed(
                "missing field",
                "`questions` is not a list".into(),
            ));
        };
        for q in questions {
            let Some(question) = text_of(q.get("questionText")) else {
                out.push(Outcome::Skip(0, "empty question"));
                continue;
            };
            let answers = q.get("answers").and_then(Py::as_list).unwrap_or_default();
            if answers.is_empty() {
                out.push(Outcome::Skip(0, "no answer"));
            }
            for a in answers {
                match text_of(a.get("answerText")) {
                    Some(answer) => out.push(Outcome::Row(0, pair(question.clone(), answer))),
                    None => out.push(Outcome::Skip(0, "empty answer")),
                }
            }
        }
        return;
    }
    if value.get("question").is_none() {
        return out.push(Outcome::Malformed(
            "missing field",
            "neither `question` (single-answer layout) nor `questions` (multi-answer layout)"
                .into(),
        ));
    }
    let Some(question) = text_of(value.get("question")) else {
        return out.push(Outcome::Skip(0, "empty question"));
    };
    match text_of(value.get("answer")) {
        Some(answer) => out.push(Outcome::Row(0, pair(question, answer))),
        None => out.push(Outcome::Skip(0, "empty answer")),
    }
}

impl Source for AmazonQa {
    fn name(&self) -> &'static str {
        "amazon_qa"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("amazon_qa", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "Amazon QA (jmcauley): qa_<Category>.json(.gz) single-answer files, one Python dict \
         literal per line {'question','answer','asin',...}, and QA_<Category>.json(.gz) \
         multi-answer files {'asin','questions':[{'questionText','answers':[{'answerText'}]}]}; \
         or a folder of them. Pairs (question, answer): one per line in the single-answer layout, \
         one per answer in the multi-answer layout; HTML entities decoded; empty texts are skipped."
    }
    fn accept(&self, path: &Path) -> bool {
        base_name(path).ends_with(".json")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            ingest_lines(sink, path, &parse, opts.threads)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Py {
        Py::Str(x.to_owned())
    }

    #[test]
    fn parses_python_literals() {
        let v = parse_python_literal(
            r#"{'a': 'it\'s', "b": "say \"hi\"", 'c': [1, -2.5, None, True, False, (3,)], 'd': {}, 'e': u'caf\xe9 \u00e9\n', 'f': 'x' "y", 'g': [], 'h': 1e3,}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            Py::Dict(vec![
                (s("a"), s("it's")),
                (s("b"), s("say \"hi\"")),
                (
                    s("c"),
                    Py::List(vec![
                        Py::Int(1),
                        Py::Float(-2.5),
                        Py::None,
                        Py::Bool(true),
                        Py::Bool(false),
                        Py::List(vec![Py::Int(3)])
                    ])
                ),
                (s("d"), Py::Dict(vec![])),
                (s("e"), s("café é\n")),
                (s("f"), s("xy")),
                (s("g"), Py::List(vec![])),
                (s("h"), Py::Float(1000.0)),
            ])
        );
        assert_eq!(
            parse_python_literal(r"'\d\é\101\0'").unwrap(),
            s("\\d\\éA\0")
        );
        assert_eq!(parse_python_literal(r"r'\n'").unwrap(), s("\\n"));
        assert_eq!(parse_python_literal("'''a'b'''").unwrap(), s("a'b"));
    }

    #[test]
    fn reports_where_a_literal_breaks() {
        assert_eq!(
            parse_python_literal("{'a': 1 'b': 2}").unwrap_err(),
            "expected ',' or '}' at byte 8, found '\\''"
        );
        assert!(parse_python_literal("{'a': 'open}")
            .unwrap_err()
            .contains("unterminated string"));
        assert!(parse_python_literal("{'a': nope}").is_err());
        assert!(parse_python_literal("{'a': 1} extra").is_err());
        assert!(parse_python_literal(r"'\x4'").is_err());
        assert!(parse_python_literal(&"[".repeat(100)).is_err());
    }
}
