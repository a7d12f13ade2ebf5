//! WikiAnswers paraphrase clusters (afader/oqa): 40 gzip files, one cluster per line, items
//! separated by tabs, questions prefixed `q:` and answers `a:`.
//!
//! Pairs are duplicate questions of one cluster. Upstream did not document its recipe; ours keeps
//! a cluster's distinct questions (after trimming and collapsing whitespace) in file order and
//! pairs them consecutively and disjointly: (q0, q1), (q2, q3), ... A cluster of n questions
//! gives n / 2 pairs, never n², and no question appears twice (a batch never sees the same text
//! twice from one cluster). An odd last question is counted as skipped; answers are not used.

use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};

use crate::input::base_name;
use crate::lines::{ingest_lines, LineParser, Outcome};
use crate::text::normalize_space;
use crate::{IngestOptions, Result, Sink, Source};

pub struct WikiAnswers;

struct Parser {
    /// The file's name, for `source_id` (`<file>:<line>`): 40 files share line numbers.
    file: String,
}

impl LineParser for Parser {
    fn parse(&self, line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        let mut questions: Vec<String> = Vec::new();
        let mut items = 0;
        for item in line.split('\t') {
            if let Some(q) = item.strip_prefix("q:") {
                items += 1;
                let q = normalize_space(q);
                if !q.is_empty() && !questions.contains(&q) {
                    questions.push(q);
                }
            } else if item.starts_with("a:") {
                items += 1;
            }
        }
        if items == 0 {
            return out.push(Outcome::Malformed(
                "malformed cluster",
                "no `q:` or `a:` items (is this a WikiAnswers cluster file?)".into(),
            ));
        }
        if questions.len() < 2 {
            return out.push(Outcome::Skip(0, "fewer than 2 distinct questions"));
        }
        let id = format!("{}:{line_no}", self.file);
        let mut chunks = questions.chunks_exact(2);
        for pair in &mut chunks {
            out.push(Outcome::Row(
                0,
                PairRecord::pair(pair[0].clone(), pair[1].clone()).with_id(id.clone()),
            ));
        }
        if !chunks.remainder().is_empty() {
            out.push(Outcome::Skip(0, "odd question left unpaired"));
        }
    }
}

impl Source for WikiAnswers {
    fn name(&self) -> &'static str {
        "wikianswers"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("wikianswers", Arity::Pair)]
    }
    fn about(&self) -> &'static str {
        "WikiAnswers paraphrase corpus (afader/oqa): the 40 cluster files (plain or .gz) or their \
         folder; one cluster per line, tab-separated items prefixed q: (question) or a: \
         (answer). Pairs of duplicate questions: a cluster's distinct questions in order, paired \
         consecutively and disjointly (q0,q1), (q2,q3), ..., so n questions give n/2 pairs; an \
         odd last question and clusters with fewer than 2 distinct questions are counted as \
         skipped. Answers are not used."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path).to_ascii_lowercase();
        !(name.starts_with("readme") || name.starts_with("license") || name.ends_with(".md"))
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        for path in inputs {
            let parser = Parser {
                file: base_name(path),
            };
            ingest_lines(sink, path, &parser, opts.threads)?;
        }
        Ok(())
    }
}
