//! ELI5 (r/explainlikeimfive): records `{"q_id","title","selftext","answers":{"a_id":[...],
//! "text":[...],"score":[...]}, ...}`, as the HF `eli5` export (jsonl, one record per line) or as
//! ELI5-Category's `eli5-category-*.json` (one JSON array, streamed element by element). The
//! layout is told from the first byte of each file (`[` array, `{` jsonl). KILT's ELI5 jsonl
//! (`{"id","input","output":[{"answer","meta":{"score"}},...,{"provenance":[...]}]}`) is told per
//! record by its fields: question = `input`, answer = the highest-`meta.score` `output` entry.
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

/// One line or array element: the HF/ELI5-Category layout (`q_id`, `title`, `answers`) or KILT's
/// (`id`, `input`, `output`); every field optional so the layout is told by which are present.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    q_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    answers: Option<Answers<'a>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Option<Vec<KiltOutput<'a>>>,
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

/// A KILT `output` entry: an answer with `meta.score`, or a provenance entry (no `answer`).
#[derive(Deserialize)]
struct KiltOutput<'a> {
    #[serde(borrow, default)]
    answer: Option<Cow<'a, str>>,
    #[serde(default)]
    meta: Option<KiltMeta>,
}

#[derive(Deserialize)]
struct KiltMeta {
    #[serde(default)]
    score: Option<f64>,
}

/// The index of the highest-scored non-empty text, the first on a tie; a missing score is lowest.
fn best<'t, S: PartialOrd + Copy>(
    texts: impl Iterator<Item = (Option<&'t str>, Option<S>)>,
) -> Option<usize> {
    let mut best: Option<(usize, Option<S>)> = None;
    for (i, (text, score)) in texts.enumerate() {
        if text.is_none_or(|t| t.trim().is_empty()) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, None)) => score.is_some(),
            Some((_, Some(b))) => score.is_some_and(|s| s > b),
        };
        if better {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

fn question_text(raw: Option<&str>) -> Option<String> {
    Some(normalize_space(&decode_entities(raw?))).filter(|t| !t.is_empty())
}

fn answer_text(raw: &str) -> String {
    decode_entities(raw.trim()).trim().to_owned()
}

/// KILT's ELI5 (`eli5-train-kilt.jsonl`): question = `input`, answer = the `output` entry with
/// the highest `meta.score`; source_id = `id`.
fn kilt(rec: &Record) -> Outcome {
    let Some(question) = question_text(rec.input.as_deref()) else {
        return Outcome::Skip(0, "empty title");
    };
    let output = rec.output.as_deref().unwrap_or_default();
    let scored = output.iter().map(|o| {
        let score = o.meta.as_ref().and_then(|m| m.score);
        (o.answer.as_deref(), score)
    });
    let Some(i) = best(scored) else {
        return Outcome::Skip(0, "no answer");
    };
    let answer = answer_text(output[i].answer.as_deref().unwrap_or_default());
    let mut record = PairRecord::pair(question, answer);
    if let Some(id) = rec.id.as_deref() {
        record = record.with_id(id);
    }
    Outcome::Row(0, record)
}

fn outcome(parsed: serde_json::Result<Record>) -> Outcome {
    let rec = match parsed {
        Ok(r) => r,
        Err(e) => {
            let (kind, message) = crate::error::json_problem(&e);
            return Outcome::Malformed(kind, message);
        }
    };
    let Some(answers) = &rec.answers else {
        if rec.input.is_some() {
            return kilt(&rec);
        }
        if rec.title.is_some() {
            return Outcome::Malformed(
                "unexpected layout",
                "valid JSON, but missing field `answers` (ELI5 records: q_id, title, answers)"
                    .into(),
            );
        }
        return Outcome::Malformed(
            "unexpected layout",
            "valid JSON, but neither an ELI5 record (`title`, `answers`) nor KILT's ELI5 layout \
             (`input`, `output`)"
                .into(),
        );
    };
    let Some(title) = question_text(rec.title.as_deref()) else {
        return Outcome::Skip(0, "empty title");
    };
    let texts = answers
        .text
        .iter()
        .enumerate()
        .map(|(i, t)| (Some(t.as_ref()), answers.score.get(i).copied()));
    let Some(i) = best(texts) else {
        return Outcome::Skip(0, "no answer");
    };
    let answer = answer_text(&answers.text[i]);
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
         highest-score answer, first on a tie); also KILT's ELI5 jsonl (eli5-*-kilt.jsonl: \
         {\"id\",\"input\",\"output\":[{\"answer\",\"meta\":{\"score\"}},{\"provenance\"}]}: question = \
         input, answer = the highest-meta.score output entry, source_id = id). HTML escapes \
         decoded; records with no non-empty answer are skipped and counted. source_id = q_id/a_id."
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
                    return Err(IngestError::Input(format!(
                        "{}: the file is empty; expected ELI5 records",
                        path.display()
                    )))
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
