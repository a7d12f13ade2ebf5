//! Natural Questions, two layouts (told apart per line by their fields):
//! - simplified NQ jsonl (`v1.0-simplified_simplified-nq-train.jsonl.gz`): `{"question_text",
//!   "document_text" (space-separated tokens, HTML tags as tokens), "annotations":[{"long_answer":
//!   {"start_token","end_token",...},...}], "example_id", ...}`. Pair = (question, long-answer
//!   passage): the first annotation with a long answer, its tokens joined by spaces, HTML tokens
//!   (`<P>`, `</Td>`, ...) dropped. Questions no annotator answered are skipped and counted.
//! - NQ-open (`NQ-open.{train,dev}.jsonl`): `{"question","answer":[...]}`. It has no passage, so it
//!   cannot give a `natural_questions` pair: each line is counted there as skipped "no passage
//!   (NQ-open)", and written as (question, first answer) to a separate dataset,
//!   `natural_questions_open`, declared only when an input starts with NQ-open lines.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use crate::input::{base_name, Lines};
use crate::lines::{ingest_lines, Outcome};
use crate::text::{non_empty, normalize_space};
use crate::{IngestOptions, Result, Sink, Source};

pub struct NaturalQuestions;

const NQ: usize = 0;
const OPEN: usize = 1;
const DATASETS: [(&str, Arity); 2] = [
    ("natural_questions", Arity::Pair),
    ("natural_questions_open", Arity::Pair),
];

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    question_text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    document_text: Option<Cow<'a, str>>,
    #[serde(default)]
    annotations: Option<Vec<Annotation>>,
    #[serde(default)]
    example_id: Option<serde_json::Value>,
    #[serde(borrow, default)]
    question: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    answer: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct Annotation {
    long_answer: Option<Span>,
}

#[derive(Deserialize)]
struct Span {
    start_token: i64,
    end_token: i64,
}

fn is_html_token(t: &str) -> bool {
    t.len() >= 2 && t.starts_with('<') && t.ends_with('>')
}

struct Parser {
    /// Whether `natural_questions_open` was declared for this run.
    open: bool,
}

impl Parser {
    fn simplified(&self, line: &Line, out: &mut Vec<Outcome>) {
        let (Some(question), Some(doc), Some(annotations)) = (
            line.question_text.as_deref(),
            line.document_text.as_deref(),
            line.annotations.as_ref(),
        ) else {
            return out.push(Outcome::Malformed(
                "missing field",
                "neither a simplified NQ line (question_text, document_text, annotations) nor an \
                 NQ-open line (question, answer)"
                    .into(),
            ));
        };
        let Some(question) = non_empty(&normalize_space(question)) else {
            return out.push(Outcome::Skip(NQ, "empty question"));
        };
        let span = annotations
            .iter()
            .filter_map(|a| a.long_answer.as_ref())
            .find(|s| s.start_token >= 0 && s.end_token > s.start_token);
        let Some(span) = span else {
            return out.push(Outcome::Skip(NQ, "no long answer"));
        };
        let (start, end) = (span.start_token as usize, span.end_token as usize);
        let passage: Vec<&str> = doc.split(' ').skip(start).take(end - start).collect();
        if passage.len() != end - start {
            return out.push(Outcome::Malformed(
                "bad span",
                format!(
                    "long answer tokens {start}..{end} outside the document ({} tokens)",
                    start + passage.len()
                ),
            ));
        }
        let passage = passage
            .into_iter()
            .filter(|t| !t.is_empty() && !is_html_token(t))
            .collect::<Vec<_>>()
            .join(" ");
        if passage.is_empty() {
            return out.push(Outcome::Skip(NQ, "empty long answer"));
        }
        let mut record = PairRecord::pair(question, passage);
        match &line.example_id {
            Some(serde_json::Value::String(s)) => record = record.with_id(s.clone()),
            Some(serde_json::Value::Number(n)) => record = record.with_id(n.to_string()),
            _ => {}
        }
        out.push(Outcome::Row(NQ, record));
    }

    fn open(&self, question: &str, answers: &[Cow<str>], out: &mut Vec<Outcome>) {
        out.push(Outcome::Skip(NQ, "no passage (NQ-open)"));
        if !self.open {
            return;
        }
        let Some(question) = non_empty(&normalize_space(question)) else {
            return out.push(Outcome::Skip(OPEN, "empty question"));
        };
        let Some(answer) = answers.iter().find_map(|a| non_empty(a)) else {
            return out.push(Outcome::Skip(OPEN, "no answer"));
        };
        out.push(Outcome::Row(OPEN, PairRecord::pair(question, answer)));
    }
}

impl crate::LineParser for Parser {
    fn parse(&self, _line_no: u64, text: &str, out: &mut Vec<Outcome>) {
        let line: Line = match serde_json::from_str(text) {
            Ok(l) => l,
            Err(e) => {
                let (kind, message) = crate::error::json_problem(&e);
                return out.push(Outcome::Malformed(kind, message));
            }
        };
        match (&line.question, &line.answer, &line.question_text) {
            (Some(q), Some(a), None) => self.open(q, a, out),
            _ => self.simplified(&line, out),
        }
    }
}

/// Whether the first non-empty line of `path` is an NQ-open record.
fn starts_open(path: &Path, cap: u64) -> Result<bool> {
    let input = crate::input::open(path)?;
    let mut lines = Lines::new(input.reader, path, cap);
    while let Some((_, line)) = lines.next_line()? {
        let Some(line) = line else {
            continue;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(serde_json::from_slice::<Line>(line)
            .is_ok_and(|l| l.question.is_some() && l.answer.is_some()));
    }
    Ok(false)
}

impl Source for NaturalQuestions {
    fn name(&self) -> &'static str {
        "natural_questions"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &DATASETS
    }
    fn outputs(&self, inputs: &[PathBuf], opts: &IngestOptions) -> Result<Vec<(String, Arity)>> {
        let mut out = vec![(DATASETS[NQ].0.to_owned(), Arity::Pair)];
        for path in inputs {
            if starts_open(path, opts.max_line_bytes)? {
                out.push((DATASETS[OPEN].0.to_owned(), Arity::Pair));
                break;
            }
        }
        Ok(out)
    }
    fn about(&self) -> &'static str {
        "Natural Questions jsonl (plain or .gz; a folder takes every *.jsonl in it). Simplified NQ \
         (v1.0-simplified_simplified-nq-train.jsonl.gz: question_text, document_text, annotations) \
         gives natural_questions pairs (question, long-answer passage: the first annotated long \
         answer's tokens, HTML tokens dropped); unanswered questions are skipped and counted. \
         NQ-open (NQ-open.train.jsonl: question, answer list) has no passage, so it cannot make \
         natural_questions pairs: those lines are counted there as skipped \"no passage (NQ-open)\" \
         and written as (question, first answer) to natural_questions_open instead. For upstream's \
         NQ-train_pairs use the simplified train file."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path);
        name.ends_with(".jsonl") || name.ends_with(".json")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        let open = self.outputs(inputs, opts)?.len() > 1;
        let parser = Parser { open };
        for path in inputs {
            ingest_lines(sink, path, &parser, opts.threads)?;
        }
        Ok(())
    }
}
