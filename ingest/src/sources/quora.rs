//! Quora question pairs: `quora_duplicate_questions.tsv`, or GLUE QQP's `train.tsv`/`dev.tsv`
//! (same columns). A header line names the columns `id qid1 qid2 question1 question2
//! is_duplicate` (in any order); rows are lines split on tabs (GLUE's readers use no quote
//! character); a question quoted CSV-style throughout (`"..."` with `""` inside) is unquoted.
//!
//! One triplet per duplicate row: (question1, question2, hard negative). The hard negative is a
//! question that a non-duplicate row pairs with question1 (the first such row in the inputs),
//! else one paired with question2. When neither question has a non-duplicate partner, the
//! fallback is a fixed pick among the first [`FALLBACK_POOL`] questions of non-duplicate rows,
//! chosen by a hash of the pair id and never question1 or question2 themselves.
//!
//! Memory: a first pass keeps, for each question id that has a non-duplicate partner, that
//! partner's id and text (about 50 MB for the 404k-row Quora file), plus the fallback pool; the
//! second pass streams.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};

use super::paq::unquote;
use crate::input::{base_name, Lines};
use crate::lines::{ingest_lines, LineParser, Outcome};
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct Quora;

/// Fallback negatives kept: enough variety for the rare pairs with no non-duplicate partner.
pub const FALLBACK_POOL: usize = 4096;

const COLUMNS: [&str; 6] = [
    "id",
    "qid1",
    "qid2",
    "question1",
    "question2",
    "is_duplicate",
];

/// Where each needed column sits in a file's rows.
#[derive(Clone, Copy)]
struct Columns {
    idx: [usize; 6],
    count: usize,
}

struct Row<'a> {
    id: &'a str,
    qid1: u64,
    qid2: u64,
    q1: Cow<'a, str>,
    q2: Cow<'a, str>,
    duplicate: bool,
}

impl Columns {
    fn from_header(path: &Path, header: &str) -> Result<Columns> {
        let names: Vec<&str> = header.split('\t').map(str::trim).collect();
        let mut idx = [0; 6];
        for (slot, want) in idx.iter_mut().zip(COLUMNS) {
            *slot =
                names
                    .iter()
                    .position(|n| *n == want)
                    .ok_or_else(|| IngestError::Malformed {
                        location: Location {
                            path: path.to_path_buf(),
                            record: 1,
                            unit: "line",
                        },
                        message: format!(
                            "missing column `{want}` in the header (expected {}; found {})",
                            COLUMNS.join(", "),
                            names.join(", ")
                        ),
                    })?;
        }
        Ok(Columns {
            idx,
            count: names.len(),
        })
    }

    fn split<'a>(&self, line: &'a str) -> std::result::Result<Row<'a>, (&'static str, String)> {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != self.count {
            let kind = if fields.len() < self.count {
                "missing column"
            } else {
                "extra column"
            };
            let msg = format!("{} fields, expected {}", fields.len(), self.count);
            return Err((kind, msg));
        }
        let f = |i: usize| fields[self.idx[i]];
        let int = |i: usize| {
            f(i).trim().parse::<u64>().map_err(|_| {
                (
                    "invalid id",
                    format!("{} is {:?}, not an integer", COLUMNS[i], f(i)),
                )
            })
        };
        let duplicate = match f(5).trim() {
            "1" => true,
            "0" => false,
            other => {
                return Err((
                    "invalid label",
                    format!("is_duplicate is {other:?}, not 0 or 1"),
                ))
            }
        };
        Ok(Row {
            id: f(0).trim(),
            qid1: int(1)?,
            qid2: int(2)?,
            q1: unquote(f(3)),
            q2: unquote(f(4)),
            duplicate,
        })
    }
}

/// What the first pass learns: each question's first non-duplicate partner, and the pool.
#[derive(Default)]
struct Negatives {
    partner: HashMap<u64, (u64, Box<str>)>,
    pool: Vec<(u64, Box<str>)>,
}

impl Negatives {
    fn add_non_duplicate(&mut self, row: &Row) {
        let (Some(q1), Some(q2)) = (non_empty(&row.q1), non_empty(&row.q2)) else {
            return;
        };
        for (qid, other_id, other) in [(row.qid1, row.qid2, &q2), (row.qid2, row.qid1, &q1)] {
            self.partner
                .entry(qid)
                .or_insert_with(|| (other_id, other.as_str().into()));
        }
        for (qid, q) in [(row.qid1, q1), (row.qid2, q2)] {
            if self.pool.len() < FALLBACK_POOL {
                self.pool.push((qid, q.into()));
            }
        }
    }

    /// The hard negative for a duplicate pair, or `None` when no question qualifies.
    fn pick(&self, id: &str, qid1: u64, qid2: u64, q1: &str, q2: &str) -> Option<&str> {
        let ok = |qid: u64, text: &str| qid != qid1 && qid != qid2 && text != q1 && text != q2;
        for qid in [qid1, qid2] {
            if let Some((other, text)) = self.partner.get(&qid) {
                if ok(*other, text) {
                    return Some(text);
                }
            }
        }
        if self.pool.is_empty() {
            return None;
        }
        let start = (fnv1a(id.as_bytes()) % self.pool.len() as u64) as usize;
        (0..self.pool.len())
            .map(|k| &self.pool[(start + k) % self.pool.len()])
            .find(|(qid, text)| ok(*qid, text))
            .map(|(_, text)| &**text)
    }
}

/// FNV-1a: a fixed hash, so the fallback pick never changes between runs or platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads the header of `path`; `None` for an empty file.
fn read_header(path: &Path, cap: u64) -> Result<Option<Columns>> {
    let input = crate::input::open(path)?;
    let mut lines = Lines::new(input.reader, path, cap);
    match lines.next_line()? {
        None => Ok(None),
        Some((_, None)) => Err(IngestError::Malformed {
            location: Location {
                path: path.to_path_buf(),
                record: 1,
                unit: "line",
            },
            message: format!("the header is too long: {}", lines.too_long_message()),
        }),
        Some((_, Some(bytes))) => {
            let header = std::str::from_utf8(bytes).map_err(|e| IngestError::Malformed {
                location: Location {
                    path: path.to_path_buf(),
                    record: 1,
                    unit: "line",
                },
                message: format!("invalid UTF-8 in the header: {e}"),
            })?;
            Columns::from_header(path, header).map(Some)
        }
    }
}

/// First pass: non-duplicate partners. Unreadable lines are left for the second pass to report.
fn collect_negatives(
    path: &Path,
    columns: Columns,
    negatives: &mut Negatives,
    cap: u64,
) -> Result<()> {
    let input = crate::input::open(path)?;
    let mut lines = Lines::new(input.reader, path, cap);
    while let Some((line_no, bytes)) = lines.next_line()? {
        let Some(bytes) = bytes.filter(|_| line_no > 1) else {
            continue;
        };
        let Ok(line) = std::str::from_utf8(bytes) else {
            continue;
        };
        if let Ok(row) = columns.split(line) {
            if !row.duplicate {
                negatives.add_non_duplicate(&row);
            }
        }
    }
    Ok(())
}

struct Parser<'a> {
    columns: Columns,
    negatives: &'a Negatives,
}

impl LineParser for Parser<'_> {
    fn parse(&self, line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        if line_no == 1 {
            return; // the header, checked before
        }
        let row = match self.columns.split(line) {
            Ok(row) => row,
            Err((kind, msg)) => return out.push(Outcome::Malformed(kind, msg)),
        };
        if !row.duplicate {
            return out.push(Outcome::Skip(0, "not a duplicate pair"));
        }
        let (Some(q1), Some(q2)) = (non_empty(&row.q1), non_empty(&row.q2)) else {
            return out.push(Outcome::Skip(0, "empty question"));
        };
        let Some(negative) = self.negatives.pick(row.id, row.qid1, row.qid2, &q1, &q2) else {
            return out.push(Outcome::Skip(0, "no negative available"));
        };
        let record = PairRecord::triplet(q1, q2, negative).with_id(row.id);
        out.push(Outcome::Row(0, record));
    }
}

impl Source for Quora {
    fn name(&self) -> &'static str {
        "quora"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("quora", Arity::Triplet)]
    }
    fn about(&self) -> &'static str {
        "Quora duplicate questions (quora_duplicate_questions.tsv, or GLUE QQP train.tsv/dev.tsv; \
         plain or .gz; header id, qid1, qid2, question1, question2, is_duplicate; tab-split; \
         fully quoted questions are unquoted). One triplet per duplicate row: (question1, question2, hard negative), the \
         negative being a question that a non-duplicate row pairs with question1 (else with \
         question2) anywhere in the inputs; failing both, a fixed hash-chosen question from the \
         first 4096 of non-duplicate rows. Non-duplicate rows are counted as skipped. Holds one \
         partner question per question id in memory (~50 MB for the full Quora file)."
    }
    fn accept(&self, path: &Path) -> bool {
        base_name(path).ends_with(".tsv")
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        let mut negatives = Negatives::default();
        let mut columns = Vec::new();
        for path in inputs {
            let cols = read_header(path, opts.max_line_bytes)?;
            if let Some(cols) = cols {
                collect_negatives(path, cols, &mut negatives, opts.max_line_bytes)?;
            }
            columns.push(cols);
        }
        for (path, cols) in inputs.iter().zip(columns) {
            let Some(columns) = cols else {
                // Empty file: still opened through the sink, so it is hashed like the others.
                ingest_lines(sink, path, &|_: u64, _: &str, _: &mut Vec<Outcome>| {}, 1)?;
                continue;
            };
            let parser = Parser {
                columns,
                negatives: &negatives,
            };
            ingest_lines(sink, path, &parser, opts.threads)?;
        }
        Ok(())
    }
}
