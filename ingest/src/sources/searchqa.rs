//! SearchQA (nyu-dl/dl4ir-searchQA): one JSON record per file, in the raw `jeopardy/` folders and in
//! `data_json/{train,val,test}`: `{"category","air_date","question","value","answer","round",
//! "show_number","id","search_results":[{"url","snippet","title","related_links"}]}` (a
//! `"search_results":{"snippets":[...]}` object is read too). Pair = (question, the first five
//! non-empty snippets, each with its whitespace collapsed, joined by a space), as upstream's
//! `searchQA_question_top5_snippets_merged`. Files are a few KB, parsed whole.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use crate::input::base_name;
use crate::text::normalize_space;
use crate::{IngestOptions, Location, Result, Sink, Source};

pub struct SearchQa;

/// How many snippets make the positive.
const SNIPPETS: usize = 5;

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    question: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(borrow, default)]
    search_results: Option<Results<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Results<'a> {
    List(#[serde(borrow)] Vec<Option<Hit<'a>>>),
    Snippets {
        #[serde(borrow)]
        snippets: Vec<Option<Cow<'a, str>>>,
    },
}

#[derive(Deserialize)]
struct Hit<'a> {
    #[serde(borrow, default)]
    snippet: Option<Cow<'a, str>>,
}

fn merged_snippets(results: &Results) -> String {
    let texts: Vec<&str> = match results {
        Results::List(hits) => hits
            .iter()
            .filter_map(|h| h.as_ref()?.snippet.as_deref())
            .collect(),
        Results::Snippets { snippets } => snippets.iter().filter_map(|s| s.as_deref()).collect(),
    };
    texts
        .into_iter()
        .map(normalize_space)
        .filter(|s| !s.is_empty())
        .take(SNIPPETS)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ingest_file(sink: &mut Sink, path: &Path) -> Result<()> {
    let bytes = sink.read_document(path)?;
    let record: Record = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        // Each file is one record of a folder of ~140k: a broken one is one malformed record,
        // located; a run where they all fail still fails (no rows).
        Err(e) => {
            let location = Location::of_json_error(path, &e);
            let (kind, message) = crate::error::json_problem(&e);
            return sink.malformed(location, kind, message);
        }
    };
    let question = normalize_space(record.question.as_deref().unwrap_or_default());
    if question.is_empty() {
        sink.skip(0, "empty question");
        return Ok(());
    }
    let positive = record
        .search_results
        .as_ref()
        .map(merged_snippets)
        .unwrap_or_default();
    if positive.is_empty() {
        sink.skip(0, "no snippets");
        return Ok(());
    }
    let id = match record.id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => base_name(path)
            .strip_suffix(".json")
            .unwrap_or_default()
            .to_owned(),
    };
    sink.emit(0, PairRecord::pair(question, positive).with_id(id))?;
    sink.report();
    Ok(())
}

impl Source for SearchQa {
    fn name(&self) -> &'static str {
        "searchqa"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("searchqa", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "SearchQA JSON, one record per file (the raw jeopardy/ folders or data_json/{train,val,test}; \
         plain or .gz; give folders: every *.json under them is read, sorted by path). Pairs \
         (question, the first five non-empty search-result snippets, whitespace collapsed, joined \
         by a space); records without snippets are skipped and counted. source_id = the record's id."
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
