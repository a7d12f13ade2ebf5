//! The upstream normalized files (the 1B-pairs release), `*.jsonl.gz`, one example per line:
//! `["a","b"]`, `["a","b","c"]`, `{"texts":[...]}`, `{"set":[...]}` or
//! `{"query","pos":[...],"neg":[...]}`. This is prep's one reader of the format: `prep ingest
//! --source jsonl` and `prep mix` given such a file in its config both go through it.
//!
//! One dataset per run, named by `--dataset` or after the first input file; its column count is
//! that of the first readable line. Lines of another column count, empty texts and lines that
//! give no row are counted skips; lines that are not JSON or not one of these layouts are
//! malformed records (counted, reported with file and line, bounded by `--max-errors`).
//!
//! The `set` and `query`/`pos`/`neg` rules, one choice (upstream's `train_script.py` reads only
//! lists and `{"texts"}`; the dataset card of `sentence-transformers/embedding-training-data`
//! calls every two members of a set a positive pair, and forms query rows "by randomly
//! selecting" a positive and a negative):
//! - `{"set":[s0,s1,s2,...]}`: disjoint consecutive pairs (s0,s1), (s2,s3), ...; an odd last
//!   member is dropped, a set of fewer than 2 gives no row. As our WikiAnswers clusters: every
//!   member used once, no text repeated (round dedup would skip a repeat), never n² pairs.
//! - `{"query":q,"pos":[p0,p1,...],"neg":[n0,...]}`: one row per positive, (q, p_i), plus
//!   n_(i mod len) when `neg` is not empty (absent or null `neg`: pairs).
//!
//! Rows are a pure function of the line, not random draws: ingest has no seed, and one draw
//! per line would drop all but two members of every set. A dataset's share of batches comes
//! from its weight in `data_config.json`, not its row count, so expanding lines changes its
//! epochs, not its share.

use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};
use serde::Deserialize;

use crate::error::json_problem;
use crate::input::base_name;
use crate::lines::{ingest_lines, Outcome};
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct NormalizedJsonl;

#[derive(Deserialize, Default)]
struct Object {
    texts: Option<Vec<String>>,
    set: Option<Vec<String>>,
    query: Option<String>,
    pos: Option<Vec<String>>,
    neg: Option<Vec<String>>,
}

/// The `set` rule, shared by every source with a set-of-duplicates column: disjoint consecutive
/// pairs (s0,s1), (s2,s3), ..., so no text repeats; an odd last member is dropped.
pub fn set_rows(set: Vec<String>) -> Vec<Vec<String>> {
    set.chunks_exact(2).map(|c| c.to_vec()).collect()
}

/// The `query`/`pos`/`neg` rule, shared by every source with list-valued positive/negative
/// columns: one row per positive, `[query, pos_i]`, plus `neg[i % neg.len()]` when `neg` is not
/// empty (negatives taken in turn).
pub fn query_rows(query: &str, pos: Vec<String>, neg: &[String]) -> Vec<Vec<String>> {
    pos.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut row = vec![query.to_owned(), p];
            if !neg.is_empty() {
                row.push(neg[i % neg.len()].clone());
            }
            row
        })
        .collect()
}

/// The rows one line holds, each a list of 2 or 3 texts.
fn examples(line: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let line = line.trim_start();
    if line.starts_with('[') {
        let texts: Vec<String> = serde_json::from_str(line).map_err(|e| json_problem(&e).1)?;
        return Ok(vec![texts]);
    }
    let obj: Object = serde_json::from_str(line).map_err(|e| json_problem(&e).1)?;
    if let Some(texts) = obj.texts {
        return Ok(vec![texts]);
    }
    if let Some(set) = obj.set {
        return Ok(set_rows(set));
    }
    if let (Some(query), Some(pos)) = (obj.query, obj.pos) {
        return Ok(query_rows(&query, pos, &obj.neg.unwrap_or_default()));
    }
    Err("valid JSON, but an object without `texts`, `set` or `query`+`pos`".to_owned())
}

struct Parser {
    arity: Arity,
}

impl crate::LineParser for Parser {
    fn parse(&self, _line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        let rows = match examples(line) {
            Ok(rows) => rows,
            Err(e) => {
                let kind = if e.starts_with("valid JSON") {
                    "unexpected layout"
                } else {
                    "invalid JSON"
                };
                return out.push(Outcome::Malformed(kind, e));
            }
        };
        if rows.is_empty() {
            out.push(Outcome::Skip(0, "fewer than 2 texts"));
        }
        for texts in rows {
            let texts: Option<Vec<String>> = texts.iter().map(|t| non_empty(t)).collect();
            let Some(mut texts) = texts else {
                out.push(Outcome::Skip(0, "empty text"));
                continue;
            };
            if texts.len() != self.arity.columns() {
                out.push(Outcome::Skip(0, "column count differs from the dataset's"));
                continue;
            }
            let negative = (texts.len() == 3).then(|| texts.pop().expect("3 texts"));
            let positive = texts.pop().expect("2 texts");
            let anchor = texts.pop().expect("2 texts");
            out.push(Outcome::Row(
                0,
                PairRecord {
                    anchor,
                    positive,
                    negative,
                    ..Default::default()
                },
            ));
        }
    }
}

/// Lines looked at to tell a file's column count.
const SNIFF_LINES: u64 = 1000;

/// Column count of the first readable line of `path` (looking at most 1000 lines in). When none
/// is readable, the error says why the first non-blank line was not: over `--max-line-bytes`,
/// not JSON, JSON in another layout, or fewer texts.
fn sniff_arity(path: &Path, cap: u64) -> Result<Arity> {
    let input = crate::input::open(path)?;
    let mut lines = crate::input::Lines::new(input.reader, path, cap);
    let mut first_problem: Option<(u64, String)> = None;
    while let Some((line_no, line)) = lines.next_line()? {
        if line_no > SNIFF_LINES {
            break;
        }
        let problem = match line.map(std::str::from_utf8) {
            None => format!("the line is too long: {}", lines.too_long_message()),
            Some(Err(e)) => format!("invalid UTF-8: {e}"),
            Some(Ok(text)) if text.trim().is_empty() => continue,
            Some(Ok(text)) => match examples(text) {
                Ok(rows) => match rows.first().map(Vec::len) {
                    Some(2) => return Ok(Arity::Pair),
                    Some(3) => return Ok(Arity::Triplet),
                    Some(n) => format!("{n} texts, expected 2 or 3"),
                    None => "fewer than 2 texts".to_owned(),
                },
                Err(e) => e,
            },
        };
        first_problem.get_or_insert((line_no, problem));
    }
    Err(match first_problem {
        Some((line_no, problem)) => IngestError::Malformed {
            location: Location {
                path: path.to_path_buf(),
                record: line_no,
                unit: "line",
            },
            message: format!(
                "no line with 2 or 3 texts in the first {SNIFF_LINES}; the first non-blank one: \
                 {problem}"
            ),
        },
        None => IngestError::Input(format!(
            "{}: the file is empty; expected normalized jsonl lines",
            path.display()
        )),
    })
}

/// `PAQ_pairs.jsonl.gz` -> `paq_pairs`.
pub fn dataset_id_for(path: &Path) -> String {
    let name = base_name(path);
    let stem = name
        .strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    dataset_id_from_stem(stem)
}

/// A file stem as a dataset id: lowercase ASCII alphanumerics, everything else `_`.
pub fn dataset_id_from_stem(stem: &str) -> String {
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Source for NormalizedJsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[]
    }
    fn about(&self) -> &'static str {
        "Upstream normalized files (*.jsonl or *.jsonl.gz): lines [\"a\",\"b\"], [\"a\",\"b\",\"c\"], \
         {\"texts\":[...]}, {\"set\":[...]} (disjoint consecutive pairs) or {\"query\",\"pos\",\"neg\"} \
         (one row per positive). Writes one dataset named by --dataset (default: the first file's \
         name, e.g. paq_pairs); its column count is that of the first readable line."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path);
        name.ends_with(".jsonl") || name.ends_with(".json")
    }
    fn outputs(&self, inputs: &[PathBuf], opts: &IngestOptions) -> Result<Vec<(String, Arity)>> {
        let first = inputs
            .first()
            .ok_or_else(|| IngestError::Input("no input files".into()))?;
        let id = opts
            .dataset
            .clone()
            .unwrap_or_else(|| dataset_id_for(first));
        Ok(vec![(id, sniff_arity(first, opts.max_line_bytes)?)])
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        let arity = self.outputs(inputs, opts)?[0].1;
        let parser = Parser { arity };
        for path in inputs {
            ingest_lines(sink, path, &parser, opts.threads)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(line: &str) -> Vec<Vec<String>> {
        examples(line).unwrap()
    }

    /// Every layout, with the cases the mixer's former copy of this parser tested.
    #[test]
    fn every_line_shape() {
        assert_eq!(rows(r#"["a","b"]"#), [["a", "b"]]);
        assert_eq!(rows(r#"["a","b","c"]"#), [["a", "b", "c"]]);
        assert_eq!(rows(r#"{"texts":["a","b"]}"#), [["a", "b"]]);
        // Sets: disjoint consecutive pairs, the same rows every time.
        assert_eq!(rows(r#"{"set":["x","y","z"]}"#), [["x", "y"]]);
        assert_eq!(
            rows(r#"{"set":["w","x","y","z"]}"#),
            [["w", "x"], ["y", "z"]]
        );
        assert!(rows(r#"{"set":["x"]}"#).is_empty());
        // Query rows: one per positive, negatives in turn.
        assert_eq!(
            rows(r#"{"query":"q","pos":["p"],"neg":["n1","n2"]}"#),
            [["q", "p", "n1"]]
        );
        assert_eq!(
            rows(r#"{"query":"q","pos":["p1","p2","p3"],"neg":["n1","n2"]}"#),
            [["q", "p1", "n1"], ["q", "p2", "n2"], ["q", "p3", "n1"]]
        );
        assert_eq!(rows(r#"{"query":"q","pos":["p"],"neg":[]}"#), [["q", "p"]]);
        assert_eq!(
            rows(r#"{"query":"q","pos":["p"],"neg":null}"#),
            [["q", "p"]]
        );
        assert_eq!(rows(r#"{"query":"q","pos":["p"]}"#), [["q", "p"]]);
        // One or four texts parse; the parser counts them as the wrong column count.
        assert_eq!(rows(r#"["a"]"#), [["a"]]);
        assert_eq!(rows(r#"["a","b","c","d"]"#).len(), 1);
        assert!(examples(r#"{"other":1}"#)
            .unwrap_err()
            .starts_with("valid JSON"));
        assert!(examples("nope").is_err());
    }

    #[test]
    fn lines_that_give_no_row_are_counted_by_reason() {
        let parser = Parser { arity: Arity::Pair };
        let reasons = |line: &str| {
            let mut out = Vec::new();
            crate::LineParser::parse(&parser, 1, line, &mut out);
            out.iter()
                .map(|o| match o {
                    Outcome::Row(..) => "row".to_owned(),
                    Outcome::Skip(_, why) => why.to_string(),
                    Outcome::Malformed(kind, _) => kind.to_string(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons(r#"["a"]"#),
            ["column count differs from the dataset's"]
        );
        assert_eq!(
            reasons(r#"["a","b","c","d"]"#),
            ["column count differs from the dataset's"]
        );
        assert_eq!(reasons(r#"{"set":["x"]}"#), ["fewer than 2 texts"]);
        assert_eq!(reasons(r#"["", "b"]"#), ["empty text"]);
        assert_eq!(reasons(r#"{"other":1}"#), ["unexpected layout"]);
        assert_eq!(reasons("nope"), ["invalid JSON"]);
        assert_eq!(reasons(r#"{"set":["w","x","y","z"]}"#), ["row", "row"]);
    }
}
