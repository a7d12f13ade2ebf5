//! ELI5 (r/explainlikeimfive): records `{"q_id","title","selftext","answers":{"a_id":[...],
//! "text":[...],"score":[...]}, ...}`, as the HF `eli5` export (jsonl, one record per line) or as
//! ELI5-Category's `eli5-category-*.json` (one JSON array, streamed element by element). The
//! layout is told from the first byte of each file (`[` array, `{` jsonl).
//!
//! Pair = (title, best answer): the highest-`score` answer, the first on a tie (the lists come
//! sorted by score, so usually the first). Reddit's HTML escapes (`&gt;`, `&amp;`) are decoded;
//! the title's whitespace is collapsed, the answer's paragraphs are kept. `source_id` is
//! `q_id/a_id`.

use std::borrow::Cow;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use super::json_array::ingest_array;
use crate::input::{base_name, read_error};
use crate::lines::{ingest_lines, Outcome};
use crate::text::{decode_entities, normalize_space};
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct Eli5;

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    q_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow)]
    answers: Answers<'a>,
}

#[derive(Deserialize)]
struct Answers<'a> {
    #[serde(borrow, default)]
    a_id: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    text: Vec<Cow<'a, str>>,
    #[serde(default)]
    score: Vec<i64>,
}

fn outcome(parsed: serde_json::Result<Record>) -> Outcome {
    let rec = match parsed {
        Ok(r) => r,
        Err(e) => return Outcome::Malformed("invalid JSON", e.to_string()),
    };
    let title = normalize_space(&decode_entities(rec.title.as_deref().unwrap_or_default()));
    if title.is_empty() {
        return Outcome::Skip(0, "empty title");
    }
    let answers = &rec.answers;
    // Highest score, first on a tie; a missing score counts as lowest.
    let mut best: Option<(usize, i64)> = None;
    for (i, text) in answers.text.iter().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let score = answers.score.get(i).copied().unwrap_or(i64::MIN);
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    let Some((i, _)) = best else {
        return Outcome::Skip(0, "no answer");
    };
    let answer = decode_entities(answers.text[i].trim()).trim().to_owned();
    let mut record = PairRecord::pair(title, answer);
    if let Some(q) = rec.q_id.as_deref() {
        record = record.with_id(match answers.a_id.get(i) {
            Some(a) => format!("{q}/{a}"),
            None => q.to_owned(),
        });
    }
    Outcome::Row(0, record)
}

fn parse_line(_line_no: u64, line: &str, out: &mut Vec<Outcome>) {
    out.push(outcome(serde_json::from_str(line)));
}

/// The first byte of the decompressed file that is not whitespace or a BOM.
fn first_byte(path: &Path) -> Result<Option<u8>> {
    let mut input = crate::input::open(path)?;
    let head = input.reader.fill_buf().map_err(|e| read_error(path, e))?;
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    Ok(head.iter().copied().find(|b| !b.is_ascii_whitespace()))
}

fn ingest_eli5_array(sink: &mut Sink, path: &Path) -> Result<()> {
    ingest_array(sink, path, None, &mut |sink, index, line, bytes| {
        let location = || Location {
            path: path.to_path_buf(),
            record: index,
            unit: "record",
        };
        match outcome(serde_json::from_slice(bytes)) {
            Outcome::Row(d, r) => sink.emit(d, r)?,
            Outcome::Skip(d, reason) => sink.skip(d, reason),
            Outcome::Malformed(kind, msg) => {
                sink.malformed(location(), kind, format!("{msg} (file line {line})"))?
            }
        }
        Ok(())
    })
}

impl Source for Eli5 {
    fn name(&self) -> &'static str {
        "eli5"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("eli5", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "ELI5 records {\"q_id\",\"title\",\"selftext\",\"answers\":{\"a_id\",\"text\",\"score\"}}: \
         HF eli5 jsonl (one record per line) or ELI5-Category eli5-category-*.json (one JSON array, \
         streamed); plain or .gz; a folder takes every *.json / *.jsonl in it. Pairs (title, \
         highest-score answer, first on a tie); HTML escapes decoded; records with no non-empty \
         answer are skipped and counted. source_id = q_id/a_id."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path);
        name.ends_with(".json") || name.ends_with(".jsonl")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            match first_byte(path)? {
                Some(b'[') => ingest_eli5_array(sink, path)?,
                Some(b'{') => ingest_lines(sink, path, &parse_line, opts.threads)?,
                None => {
                    let location = Location {
                        path: path.clone(),
                        record: 1,
                        unit: "line",
                    };
                    sink.malformed(location, "empty file", "no records")?
                }
                Some(b) => {
                    return Err(IngestError::Input(format!(
                        "{}: starts with `{}`; expected a JSON array or JSON lines of ELI5 records",
                        path.display(),
                        (b as char).escape_default()
                    )))
                }
            }
        }
        Ok(())
    }
}
