//! MS MARCO passage ranking: triplets (query, relevant passage, hard negative).
//!
//! Files are told apart by name (plain or `.gz`):
//! - `triples.train.small.tsv` (and `triples.train.full.tsv`): `query\tpositive\tnegative` as
//!   text, one triplet per line;
//! - `qidpidtriples.train.full.2.tsv`: `qid\tpid+\tpid-`, joined to `queries.*.tsv`
//!   (`qid\tquery`) and `collection.tsv` (`pid\tpassage`);
//! - `qrels.*` (`qid 0 pid 1`, tab- or space-separated): relevance judgments. They name a
//!   positive but no negative, and the dev/eval ones are evaluation data, so they never become
//!   rows: they are checked and counted as skipped.
//!
//! Memory: the queries are held in a map (~50 MB for all of train+dev+eval); the collection is
//! not: one pass records each passage's offset and length (12 bytes per passage, ~110 MB for
//! 8.8M), and passages are read back from disk on demand (a `.gz` collection is unpacked to a
//! scratch file first). Output rows follow the triples files' order.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use schemas::{Arity, PairRecord};

use super::scratch::{read_exact_at, ScratchDir};
use crate::input::{
    base_name, read_error, read_line_capped, too_long_message, unending_error, LineRead,
};
use crate::lines::{ingest_lines, LineParser, Outcome};
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct MsMarco;

/// Passage ids above this are refused: the index is a dense array (MS MARCO v1 has 8.8M).
const MAX_PID: u64 = 200_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    TextTriples,
    IdTriples,
    Collection,
    Queries,
    Qrels,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let name = base_name(path).to_ascii_lowercase();
    if name.starts_with("qidpidtriples") {
        Some(Kind::IdTriples)
    } else if name.starts_with("triples") {
        Some(Kind::TextTriples)
    } else if name.starts_with("collection") {
        Some(Kind::Collection)
    } else if name.starts_with("queries") {
        Some(Kind::Queries)
    } else if name.contains("qrels") {
        Some(Kind::Qrels)
    } else {
        None
    }
}

/// Splits `id<TAB>text`; `None` when there is no tab or the id is not an integer.
fn id_and_text(line: &[u8]) -> Option<(u64, usize)> {
    let tab = memchr::memchr(b'\t', line)?;
    let id = std::str::from_utf8(&line[..tab])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((id, tab + 1))
}

/// Where each passage's text lies in the (decompressed) collection.
struct Collection {
    file: File,
    path: PathBuf,
    offsets: Vec<u64>,
    lens: Vec<u32>,
    _scratch: Option<ScratchDir>,
}

impl Collection {
    const ABSENT: u64 = u64::MAX;

    fn index(sink: &mut Sink, path: &Path) -> Result<Collection> {
        let gz = {
            let mut head = [0u8; 2];
            let n = std::io::Read::read(
                &mut File::open(path).map_err(|e| IngestError::io(path, e))?,
                &mut head,
            )
            .map_err(|e| IngestError::io(path, e))?;
            n == 2 && head == [0x1f, 0x8b]
        };
        // A gzipped collection is unpacked as it is indexed, so passages can be read at offsets.
        let (scratch, mut copy) = if gz {
            let dir = ScratchDir::new("msmarco")?;
            let file = dir.path().join("collection.tsv");
            let w = File::create(&file).map_err(|e| IngestError::io(&file, e))?;
            (Some((dir, file)), Some(std::io::BufWriter::new(w)))
        } else {
            (None, None)
        };
        let mut input = sink.open(path)?;
        let mut offsets: Vec<u64> = Vec::new();
        let mut lens: Vec<u32> = Vec::new();
        let mut buf = Vec::new();
        let mut offset = 0u64;
        let mut line_no = 0u64;
        let cap = sink.max_line_bytes();
        loop {
            buf.clear();
            let read = read_line_capped(&mut input.reader, &mut buf, cap)
                .map_err(|e| read_error(path, e))?;
            line_no += 1;
            match read {
                LineRead::Eof => break,
                LineRead::Line => {}
                LineRead::TooLong(n) => {
                    // Offsets are into the file read back: the original, or the scratch copy,
                    // which gets an empty line in its place.
                    match copy.as_mut() {
                        Some(w) => {
                            let (_, file) = scratch.as_ref().expect("gz has a scratch file");
                            w.write_all(b"\n").map_err(|e| IngestError::io(file, e))?;
                            offset += 1;
                        }
                        None => offset += n,
                    }
                    sink.line_too_long(path, line_no, too_long_message(n, cap))?;
                    continue;
                }
                LineRead::Unending(n) => return Err(unending_error(path, line_no, n, cap)),
            }
            let n = buf.len();
            if let Some(w) = copy.as_mut() {
                let (_, file) = scratch.as_ref().expect("gz has a scratch file");
                w.write_all(&buf).map_err(|e| IngestError::io(file, e))?;
            }
            let start = offset;
            offset += n as u64;
            let mut line: &[u8] = &buf;
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut skip = 0;
            if line_no == 1 && line.starts_with(b"\xEF\xBB\xBF") {
                skip = 3;
            }
            let line = &line[skip..];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let location = || Location {
                path: path.to_path_buf(),
                record: line_no,
                unit: "line",
            };
            let Some((pid, text_at)) = id_and_text(line) else {
                sink.malformed(location(), "malformed line", "expected pid<TAB>passage")?;
                continue;
            };
            if pid > MAX_PID {
                sink.malformed(
                    location(),
                    "malformed line",
                    format!("passage id {pid} is above {MAX_PID}"),
                )?;
                continue;
            }
            let pid = pid as usize;
            if pid >= offsets.len() {
                offsets.resize(pid + 1, Self::ABSENT);
                lens.resize(pid + 1, 0);
            }
            if offsets[pid] == Self::ABSENT {
                offsets[pid] = start + (skip + text_at) as u64;
                lens[pid] = u32::try_from(line.len() - text_at).unwrap_or(u32::MAX);
            }
            if line_no & 0xffff == 0 {
                sink.report();
            }
        }
        let (file, scratch) = match (scratch, copy) {
            (Some((dir, file)), Some(w)) => {
                w.into_inner()
                    .map_err(|e| IngestError::io(&file, e.into_error()))?
                    .sync_all()
                    .map_err(|e| IngestError::io(&file, e))?;
                let f = File::open(&file).map_err(|e| IngestError::io(&file, e))?;
                (f, Some(dir))
            }
            _ => (
                File::open(path).map_err(|e| IngestError::io(path, e))?,
                None,
            ),
        };
        Ok(Collection {
            file,
            path: path.to_path_buf(),
            offsets,
            lens,
            _scratch: scratch,
        })
    }

    /// The passage text of `pid`: `Ok(None)` when the collection has no such passage.
    fn get(&self, pid: u64) -> std::result::Result<Option<String>, String> {
        let Some(&offset) = usize::try_from(pid).ok().and_then(|i| self.offsets.get(i)) else {
            return Ok(None);
        };
        if offset == Self::ABSENT {
            return Ok(None);
        }
        let mut buf = vec![0; self.lens[pid as usize] as usize];
        read_exact_at(&self.file, &mut buf, offset)
            .map_err(|e| format!("{}: reading passage {pid}: {e}", self.path.display()))?;
        String::from_utf8(buf)
            .map(Some)
            .map_err(|e| format!("passage {pid} in {}: {e}", self.path.display()))
    }
}

fn load_queries(
    sink: &mut Sink,
    path: &Path,
    queries: &mut std::collections::HashMap<u64, Box<str>>,
) -> Result<()> {
    let input = sink.open(path)?;
    let mut lines = crate::input::Lines::new(input.reader, path, sink.max_line_bytes());
    while let Some((line_no, line)) = lines.next_line()? {
        let Some(line) = line else {
            sink.line_too_long(path, line_no, lines.too_long_message())?;
            continue;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let location = Location {
            path: path.to_path_buf(),
            record: line_no,
            unit: "line",
        };
        let Some((qid, at)) = id_and_text(line) else {
            sink.malformed(location, "malformed line", "expected qid<TAB>query")?;
            continue;
        };
        match std::str::from_utf8(&line[at..]) {
            Ok(text) => {
                queries.entry(qid).or_insert_with(|| text.trim().into());
            }
            Err(e) => sink.malformed(location, "invalid UTF-8", e.to_string())?,
        }
    }
    Ok(())
}

fn text_triple(_line_no: u64, line: &str, out: &mut Vec<Outcome>) {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != 3 {
        let kind = if fields.len() < 3 {
            "missing column"
        } else {
            "extra column"
        };
        let msg = format!(
            "{} fields, expected 3 (query, positive, negative)",
            fields.len()
        );
        return out.push(Outcome::Malformed(kind, msg));
    }
    match (
        non_empty(fields[0]),
        non_empty(fields[1]),
        non_empty(fields[2]),
    ) {
        (Some(q), Some(p), Some(n)) => out.push(Outcome::Row(0, PairRecord::triplet(q, p, n))),
        _ => out.push(Outcome::Skip(0, "empty text")),
    }
}

struct IdTriples<'a> {
    queries: &'a std::collections::HashMap<u64, Box<str>>,
    collection: &'a Collection,
}

impl LineParser for IdTriples<'_> {
    fn parse(&self, _line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        let ids: Vec<&str> = line.split('\t').map(str::trim).collect();
        if ids.len() != 3 {
            let kind = if ids.len() < 3 {
                "missing column"
            } else {
                "extra column"
            };
            let msg = format!("{} fields, expected 3 (qid, pid+, pid-)", ids.len());
            return out.push(Outcome::Malformed(kind, msg));
        }
        let parsed: std::result::Result<Vec<u64>, _> = ids.iter().map(|s| s.parse()).collect();
        let Ok(ids) = parsed else {
            return out.push(Outcome::Malformed(
                "invalid id",
                format!("ids {ids:?} are not all integers"),
            ));
        };
        let Some(query) = self.queries.get(&ids[0]).and_then(|q| non_empty(q)) else {
            return out.push(Outcome::Skip(0, "unknown query id"));
        };
        let mut texts = Vec::with_capacity(2);
        for pid in [ids[1], ids[2]] {
            match self.collection.get(pid) {
                Ok(Some(text)) => match non_empty(&text) {
                    Some(t) => texts.push(t),
                    None => return out.push(Outcome::Skip(0, "empty passage")),
                },
                Ok(None) => return out.push(Outcome::Skip(0, "unknown passage id")),
                Err(e) => return out.push(Outcome::Malformed("unreadable passage", e)),
            }
        }
        let negative = texts.pop().expect("two passages");
        let positive = texts.pop().expect("two passages");
        let id = format!("{}-{}-{}", ids[0], ids[1], ids[2]);
        out.push(Outcome::Row(
            0,
            PairRecord::triplet(query, positive, negative).with_id(id),
        ));
    }
}

/// Why a qrels line is not `qid 0 pid relevance`: the field that is wrong, and what the file
/// looks like when its ids are document ids (`D1650436`: the document-ranking task's qrels).
fn qrel_problem(fields: &[&str]) -> Option<String> {
    if fields.len() != 4 {
        return Some(format!(
            "expected 4 fields `qid 0 pid relevance`, found {}",
            fields.len()
        ));
    }
    let names = ["qid", "iteration", "pid", "relevance"];
    let (i, field) = fields
        .iter()
        .enumerate()
        .find(|(_, f)| f.parse::<u64>().is_err())?;
    let doc_id = field
        .strip_prefix('D')
        .is_some_and(|d| d.parse::<u64>().is_ok());
    Some(if i == 2 && doc_id {
        format!(
            "field 3 (pid) `{field}` is not a number: this looks like MS MARCO document-ranking \
             qrels (document ids); this source reads passage-ranking files (numeric passage ids)"
        )
    } else {
        format!("field {} ({}) `{field}` is not a number", i + 1, names[i])
    })
}

fn qrel(_line_no: u64, line: &str, out: &mut Vec<Outcome>) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if let Some(problem) = qrel_problem(&fields) {
        return out.push(Outcome::Malformed("malformed line", problem));
    }
    out.push(Outcome::Skip(
        0,
        "qrels judgment (no negative; not a training triple)",
    ));
}

impl Source for MsMarco {
    fn name(&self) -> &'static str {
        "msmarco"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[("msmarco", Arity::Triplet)]
    }
    fn about(&self) -> &'static str {
        "MS MARCO passage ranking (files named as released, plain or .gz, or their folder). \
         Triplets (query, positive, hard negative) come from triples.train.small.tsv \
         (query<TAB>positive<TAB>negative text), or from qidpidtriples.train.full.2.tsv \
         (qid<TAB>pid+<TAB>pid-), which needs collection.tsv (pid<TAB>passage) and \
         queries.train.tsv (qid<TAB>query) given with it. The collection is indexed by offset, \
         not loaded. Queries and qrels alone (e.g. queries.dev.small.tsv + qrels.dev.small.tsv) \
         give no rows, so such a run fails saying so: qrels have no negative and are evaluation \
         data, so they are only checked and counted as skipped; add a triples file (and \
         collection.tsv for id triples) to get training triplets. Document-ranking files (ids \
         like D1650436) are told apart and refused by name."
    }
    fn accept(&self, path: &Path) -> bool {
        kind_of(path).is_some()
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        let mut by_kind: Vec<(Kind, &PathBuf)> = Vec::new();
        for path in inputs {
            let kind = kind_of(path).ok_or_else(|| {
                IngestError::Input(format!(
                    "{}: not an MS MARCO file name (expected triples.*, qidpidtriples.*, \
                     collection.*, queries.* or *qrels*)",
                    path.display()
                ))
            })?;
            by_kind.push((kind, path));
        }
        let of = |k: Kind| {
            by_kind
                .iter()
                .filter(move |(kind, _)| *kind == k)
                .map(|(_, p)| *p)
        };

        let mut queries = std::collections::HashMap::new();
        for path in of(Kind::Queries) {
            load_queries(sink, path, &mut queries)?;
        }
        let collections: Vec<&PathBuf> = of(Kind::Collection).collect();
        if collections.len() > 1 {
            return Err(IngestError::Input(format!(
                "more than one collection file: {}",
                collections
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let id_triples: Vec<&PathBuf> = of(Kind::IdTriples).collect();
        let collection = match collections.first() {
            Some(path) if !id_triples.is_empty() => Some(Collection::index(sink, path)?),
            _ => None,
        };
        if let Some(first) = id_triples.first() {
            let Some(collection) = collection.as_ref() else {
                return Err(IngestError::Input(format!(
                    "{}: qid/pid triples need collection.tsv (pid<TAB>passage) among the inputs",
                    first.display()
                )));
            };
            if queries.is_empty() {
                return Err(IngestError::Input(format!(
                    "{}: qid/pid triples need queries.train.tsv (qid<TAB>query) among the inputs",
                    first.display()
                )));
            }
            let parser = IdTriples {
                queries: &queries,
                collection,
            };
            for (kind, path) in &by_kind {
                match kind {
                    Kind::IdTriples => ingest_lines(sink, path, &parser, opts.threads)?,
                    Kind::TextTriples => ingest_lines(sink, path, &text_triple, opts.threads)?,
                    _ => {}
                }
            }
        } else {
            for path in of(Kind::TextTriples) {
                ingest_lines(sink, path, &text_triple, opts.threads)?;
            }
        }
        for path in of(Kind::Qrels) {
            ingest_lines(sink, path, &qrel, opts.threads)?;
        }
        Ok(())
    }
}
