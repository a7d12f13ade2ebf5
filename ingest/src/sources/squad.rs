//! SQuAD 1.1 and 2.0: `{"version","data":[{"title","paragraphs":[{"context","qas":[{"question",
//! "id","answers",["is_impossible","plausible_answers"]}]}]}]}`. Pair = (question, context);
//! SQuAD 2.0 questions marked `is_impossible` are skipped and counted. Files are at most ~40 MB,
//! so each is parsed whole (borrowing its strings).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use crate::input::base_name;
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct Squad;

#[derive(Deserialize)]
struct File<'a> {
    #[serde(borrow)]
    data: Vec<Article<'a>>,
}

#[derive(Deserialize)]
struct Article<'a> {
    #[serde(borrow)]
    paragraphs: Vec<Paragraph<'a>>,
}

#[derive(Deserialize)]
struct Paragraph<'a> {
    #[serde(borrow, default)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    qas: Vec<Qa<'a>>,
}

/// Fields optional so that one bad question is counted alone instead of failing its file.
#[derive(Deserialize)]
struct Qa<'a> {
    #[serde(borrow, default)]
    question: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    is_impossible: bool,
}

fn ingest_file(sink: &mut Sink, path: &Path) -> Result<()> {
    let bytes = sink.read_document(path)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Input(format!(
            "{}: the file is empty ({} bytes); expected a SQuAD JSON document",
            path.display(),
            bytes.len()
        )));
    }
    // The file is one document: if it does not parse, nothing in it can be trusted, so the run
    // fails naming where it broke.
    let file: File = serde_json::from_slice(&bytes)
        .map_err(|e| crate::error::document_error(path, "a SQuAD JSON file", &e))?;
    let mut number = 0u64;
    for article in &file.data {
        for paragraph in &article.paragraphs {
            let context = paragraph.context.as_deref().and_then(non_empty);
            for qa in &paragraph.qas {
                number += 1;
                let location = || Location {
                    path: path.to_path_buf(),
                    record: number,
                    unit: "question",
                };
                let Some(question) = qa.question.as_deref() else {
                    sink.malformed(location(), "missing field", "a question without `question`")?;
                    continue;
                };
                if qa.is_impossible {
                    sink.skip(0, "unanswerable (SQuAD 2.0)");
                    continue;
                }
                let Some(question) = non_empty(question) else {
                    sink.skip(0, "empty question");
                    continue;
                };
                let Some(context) = context.clone() else {
                    sink.skip(0, "empty context");
                    continue;
                };
                let mut record = PairRecord::pair(question, context);
                if let Some(id) = qa.id.as_deref() {
                    record = record.with_id(id);
                }
                sink.emit(0, record)?;
            }
        }
    }
    sink.report();
    Ok(())
}

impl Source for Squad {
    fn name(&self) -> &'static str {
        "squad"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("squad", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "SQuAD 1.1 or 2.0 JSON (train-v1.1.json, train-v2.0.json, dev-*.json; plain or .gz; a folder \
         takes every *.json in it). Pairs (question, context paragraph), source_id = question id; \
         SQuAD 2.0 questions with is_impossible are skipped and counted. Upstream's squad_pairs is \
         SQuAD 1.1 train (87,599 questions)."
    }
    fn accept(&self, path: &Path) -> bool {
        base_name(path).ends_with(".json")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, _opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            ingest_file(sink, path)?;
        }
        Ok(())
    }
}
