//! TriviaQA (mandarjoshi90): `{"Data":[{"Question","QuestionId","Answer":{...},"EntityPages":[...],
//! "SearchResults":[...]}], "Domain", "Version", ...}`. The web train file is one 1.5 GB document,
//! so the `Data` array is streamed element by element ([`super::json_array`]); only one question
//! is in memory at a time.
//!
//! The positive text. The qa files carry no passage text (evidence documents are separate
//! `.txt` files); the only prose in them is the search results' `Description` snippets. So the
//! positive is, among the search results in `Rank` order, the first description that contains
//! one of the answer's aliases as a whole word (case-insensitive); failing that the first
//! non-empty description; failing that (Wikipedia-domain files, questions without search results)
//! the answer's `Value`. `source_id` says which: `tc_3:search1` (rank 1) or `tc_15:answer`.
//! `EntityPages` only name evidence files, so they are not used.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use super::json_array::ingest_array;
use crate::input::base_name;
use crate::text::{non_empty, normalize_space};
use crate::{IngestOptions, Location, Result, Sink, Source};

pub struct TriviaQa;

#[derive(Deserialize)]
struct Question<'a> {
    #[serde(rename = "Question", borrow)]
    question: Cow<'a, str>,
    #[serde(rename = "QuestionId", default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "Answer", default, borrow)]
    answer: Option<Answer<'a>>,
    #[serde(rename = "SearchResults", default, borrow)]
    search_results: Vec<SearchResult<'a>>,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Value", default, borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(rename = "Aliases", default, borrow)]
    aliases: Vec<Cow<'a, str>>,
    #[serde(rename = "NormalizedAliases", default, borrow)]
    normalized_aliases: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SearchResult<'a> {
    #[serde(rename = "Description", default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(rename = "Rank", default)]
    rank: Option<i64>,
}

/// Whether `needle` occurs in `hay` with no letter or digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    hay.match_indices(needle).any(|(i, m)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + m.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The positive text and the tag naming where it came from (see the module docs).
fn positive(q: &Question) -> Option<(String, String)> {
    let mut results: Vec<(i64, String)> = q
        .search_results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let text = normalize_space(r.description.as_deref()?);
            (!text.is_empty()).then(|| (r.rank.unwrap_or(i as i64), text))
        })
        .collect();
    results.sort_by_key(|(rank, _)| *rank);
    let aliases: Vec<String> = q
        .answer
        .iter()
        .flat_map(|a| a.aliases.iter().chain(&a.normalized_aliases))
        .map(|a| a.trim().to_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    let mentions = results.iter().find(|(_, text)| {
        let lower = text.to_lowercase();
        aliases.iter().any(|a| contains_word(&lower, a))
    });
    if let Some((rank, text)) = mentions.or(results.first()) {
        return Some((text.clone(), format!("search{rank}")));
    }
    let value = q.answer.as_ref()?.value.as_deref().and_then(non_empty)?;
    Some((value, "answer".to_owned()))
}

fn question(sink: &mut Sink, path: &Path, index: u64, line: u64, bytes: &[u8]) -> Result<()> {
    let q: Question = match serde_json::from_slice(bytes) {
        Ok(q) => q,
        Err(e) => {
            let location = Location {
                path: path.to_path_buf(),
                record: index,
                unit: "question",
            };
            // serde's line is relative to the element; report the file's.
            let at = line + e.line() as u64 - 1;
            let (kind, message) = crate::error::json_problem(&e);
            return sink.malformed(location, kind, format!("{message} (file line {at})"));
        }
    };
    let Some(anchor) = non_empty(&normalize_space(&q.question)) else {
        sink.skip(0, "empty question");
        return Ok(());
    };
    let Some((text, from)) = positive(&q) else {
        sink.skip(0, "no search-result description and no answer");
        return Ok(());
    };
    let id = match q.id.as_deref() {
        Some(id) => format!("{id}:{from}"),
        None => format!("{index}:{from}"),
    };
    sink.emit(0, PairRecord::pair(anchor, text).with_id(id))
}

fn ingest_file(sink: &mut Sink, path: &Path) -> Result<()> {
    ingest_array(sink, path, Some("Data"), &mut |sink, index, line, bytes| {
        question(sink, path, index, line, bytes)
    })
}

impl Source for TriviaQa {
    fn name(&self) -> &'static str {
        "triviaqa"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("triviaqa", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "TriviaQA qa files (qa/web-train.json, qa/wikipedia-train.json, ...; plain or .gz; a folder \
         takes every *.json in it), each one JSON document {\"Data\":[...]} read as a stream, one \
         question in memory at a time. Pairs (Question, positive): the first search-result \
         Description (in Rank order) that contains an answer alias as a whole word, else the first \
         Description, else the answer's Value (Wikipedia-domain files carry no search results, and \
         the evidence .txt files are not read). source_id is QuestionId:searchN or QuestionId:answer. \
         A broken document (truncated, damaged) fails the run naming the line and byte of the \
         break; an empty file is an error."
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

#[cfg(test)]
mod tests {
    use super::contains_word;

    #[test]
    fn whole_words_only() {
        assert!(contains_word("born in york, england", "york"));
        assert!(!contains_word("someone", "one"));
        assert!(contains_word("one season", "one"));
    }
}
