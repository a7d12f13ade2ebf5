//! GooAQ (allenai): jsonl `{"id","question","short_answer","answer","answer_type",...}`.
//! Pair = (question, answer); records without an answer are skipped. Collection answers are
//! stored as a Python list literal and are joined into one text.

use std::path::PathBuf;

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use crate::lines::{ingest_lines, Outcome};
use crate::text::{non_empty, python_str_list};
use crate::{IngestOptions, Result, Sink, Source};

pub struct GooAq;

#[derive(Deserialize)]
struct Record<'a> {
    id: serde_json::Value,
    #[serde(borrow)]
    question: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    answer: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    answer_type: Option<String>,
}

fn parse(_line_no: u64, line: &str, out: &mut Vec<Outcome>) {
    let rec: Record = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            let (kind, message) = crate::error::json_problem(&e);
            return out.push(Outcome::Malformed(kind, message));
        }
    };
    let Some(question) = rec.question.as_deref().and_then(non_empty) else {
        return out.push(Outcome::Skip(0, "no question"));
    };
    let Some(raw) = rec.answer.as_deref() else {
        return out.push(Outcome::Skip(0, "no answer"));
    };
    let answer = if rec.answer_type.as_deref() == Some("collection") {
        python_str_list(raw)
            .map(|items| items.join(" "))
            .unwrap_or_else(|| raw.to_owned())
    } else {
        raw.to_owned()
    };
    let Some(answer) = non_empty(&answer) else {
        return out.push(Outcome::Skip(0, "no answer"));
    };
    let id = match rec.id {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    out.push(Outcome::Row(
        0,
        PairRecord::pair(question, answer).with_id(id),
    ));
}

impl Source for GooAq {
    fn name(&self) -> &'static str {
        "gooaq"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("gooaq", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "GooAQ jsonl (gooaq.jsonl, plain or .gz): pairs (question, answer); collection answers \
         (Python list literals) are joined; records with a null answer are skipped."
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            ingest_lines(sink, path, &parse, opts.threads)?;
        }
        Ok(())
    }
}
