//! `--source table`: any table of texts with named columns, Parquet (`*.parquet`) or JSON lines
//! (`*.jsonl`, `*.jsonl.gz`: one object per line), into one prep dataset.
//!
//! Named for what it reads, not where it comes from: the Hub's dataset repositories
//! (sentence-transformers' mirrors, `datasets`' Parquet conversions) are its main inputs, but a
//! local export with the same columns is read the same way, and a `hub` name would hide that.
//!
//! Columns: `anchor=COL,positive=COL[,negative=COL]` or `set=COL` ([`ColumnMap`]); by default
//! the first two (pairs) or three (triplets) string columns of the first file. A column may hold
//! text or a list of texts; lists follow `--source jsonl`'s rules ([`super::jsonl::set_rows`],
//! [`super::jsonl::query_rows`]): a `set` gives disjoint consecutive pairs, a list of positives
//! one row per positive, a list of negatives taken in turn.
//!
//! Parquet files are decoded a row group at a time on `--threads` threads, and the rows applied
//! in file order, so the output does not depend on the thread count.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, LargeListArray, LargeStringArray, ListArray, RecordBatch, StringArray,
    StringViewArray,
};
use arrow_schema::DataType;
use crossbeam_channel::bounded;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use schemas::{Arity, PairRecord};
use serde::de::{Deserializer as _, MapAccess, Visitor};

use super::jsonl::{dataset_id_from_stem, query_rows, set_rows};
use crate::input::base_name;
use crate::lines::{apply_outcomes, ingest_lines, Outcome};
use crate::text::non_empty;
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

/// Which columns make the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnMap {
    /// Anchor text, positive text or list of texts, and (triplets) negative text or list.
    Pairs {
        anchor: String,
        positive: String,
        negative: Option<String>,
    },
    /// One list of texts saying the same thing (duplicates, paraphrases).
    Set(String),
}

impl ColumnMap {
    /// `anchor=question,positive=answer[,negative=neg]` or `set=paraphrases`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: String| {
            IngestError::Input(format!(
                "--columns {s:?}: {why}; expected anchor=COL,positive=COL[,negative=COL] or set=COL"
            ))
        };
        let mut named: BTreeMap<&str, String> = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, col) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not ROLE=COLUMN")))?;
            let role = role.trim();
            if !matches!(role, "anchor" | "positive" | "negative" | "set") {
                return Err(bad(format!("unknown role `{role}`")));
            }
            if named.insert(role, col.trim().to_owned()).is_some() {
                return Err(bad(format!("`{role}` given twice")));
            }
        }
        if let Some(set) = named.remove("set") {
            if !named.is_empty() {
                return Err(bad("`set` stands alone".into()));
            }
            return Ok(ColumnMap::Set(set));
        }
        match (named.remove("anchor"), named.remove("positive")) {
            (Some(anchor), Some(positive)) => Ok(ColumnMap::Pairs {
                anchor,
                positive,
                negative: named.remove("negative"),
            }),
            _ => Err(bad("both anchor and positive are needed".into())),
        }
    }

    pub fn arity(&self) -> Arity {
        match self {
            ColumnMap::Pairs {
                negative: Some(_), ..
            } => Arity::Triplet,
            _ => Arity::Pair,
        }
    }

    /// The columns read, in role order.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            ColumnMap::Pairs {
                anchor,
                positive,
                negative,
            } => [Some(anchor), Some(positive), negative.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            ColumnMap::Set(c) => vec![c],
        }
    }
}

impl fmt::Display for ColumnMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnMap::Pairs {
                anchor,
                positive,
                negative,
            } => {
                write!(f, "anchor={anchor},positive={positive}")?;
                match negative {
                    Some(n) => write!(f, ",negative={n}"),
                    None => Ok(()),
                }
            }
            ColumnMap::Set(c) => write!(f, "set={c}"),
        }
    }
}

/// The table source; `columns: None` takes the first file's first string columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Option<ColumnMap>,
}

/// What a column of the first file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    List,
    Other,
}

/// The columns a run uses and how they were chosen (for the user to read).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub columns: ColumnMap,
    pub how: String,
}

/// Checks `given` against the first file's columns, or picks the default: the first three
/// string columns when there are three or more, else the first two.
pub fn resolve_columns(first: &Path, given: Option<&ColumnMap>) -> Result<Resolved> {
    let found = table_columns(first)?;
    let listing = || {
        found
            .iter()
            .map(|(n, k)| format!("{n} ({})", format!("{k:?}").to_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(map) = given {
        for col in map.columns() {
            match found.iter().find(|(n, _)| n == col) {
                Some((_, Kind::Text | Kind::List)) => {}
                Some(_) => {
                    return Err(IngestError::Input(format!(
                        "{}: column `{col}` holds neither text nor a list of texts; columns: {}",
                        first.display(),
                        listing()
                    )))
                }
                None => {
                    return Err(IngestError::Input(format!(
                        "{}: no column `{col}`; columns: {}",
                        first.display(),
                        listing()
                    )))
                }
            }
        }
        return Ok(Resolved {
            columns: map.clone(),
            how: "as given by --columns".into(),
        });
    }
    let texts: Vec<&String> = found
        .iter()
        .filter(|(_, k)| *k == Kind::Text)
        .map(|(n, _)| n)
        .collect();
    let columns = match texts.as_slice() {
        [a, p] => ColumnMap::Pairs {
            anchor: a.to_string(),
            positive: p.to_string(),
            negative: None,
        },
        [a, p, n, ..] => ColumnMap::Pairs {
            anchor: a.to_string(),
            positive: p.to_string(),
            negative: Some(n.to_string()),
        },
        _ => {
            return Err(IngestError::Input(format!(
                "{}: fewer than two string columns to default to; name them with --columns \
                 (columns: {})",
                first.display(),
                listing()
            )))
        }
    };
    let how = format!(
        "the first {} string columns of {} (of: {}); --columns to choose others",
        columns.columns().len(),
        first.display(),
        listing()
    );
    Ok(Resolved { columns, how })
}

fn is_parquet(path: &Path) -> bool {
    base_name(path).ends_with(".parquet")
}

/// Every column of a table file, in order, with what it holds.
fn table_columns(path: &Path) -> Result<Vec<(String, Kind)>> {
    if is_parquet(path) {
        let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| not_parquet(path, &e.to_string()))?;
        return Ok(builder
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), kind_of(f.data_type())))
            .collect());
    }
    first_object_keys(path)
}

fn not_parquet(path: &Path, why: &str) -> IngestError {
    IngestError::Input(format!(
        "{}: not a readable Parquet file: {why}",
        path.display()
    ))
}

fn kind_of(t: &DataType) -> Kind {
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match t {
        t if text(t) => Kind::Text,
        DataType::List(f) | DataType::LargeList(f) if text(f.data_type()) => Kind::List,
        _ => Kind::Other,
    }
}

/// The keys of the first non-blank line's object, in the order written.
fn first_object_keys(path: &Path) -> Result<Vec<(String, Kind)>> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<(String, Kind)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                out.push((k, json_kind(&v)));
            }
            Ok(out)
        }
    }
    let input = crate::input::open(path)?;
    let mut lines =
        crate::input::Lines::new(input.reader, path, crate::input::DEFAULT_MAX_LINE_BYTES);
    while let Some((line_no, line)) = lines.next_line()? {
        let Some(Ok(text)) = line.map(std::str::from_utf8) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        return de
            .deserialize_map(Keys)
            .map_err(|e| IngestError::Malformed {
                location: Location {
                    path: path.to_path_buf(),
                    record: line_no,
                    unit: "line",
                },
                message: format!("the first line is not a JSON object: {e}"),
            });
    }
    Err(IngestError::Input(format!(
        "{}: the file is empty; expected one JSON object per line",
        path.display()
    )))
}

fn json_kind(v: &serde_json::Value) -> Kind {
    match v {
        serde_json::Value::String(_) => Kind::Text,
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_string()) => Kind::List,
        // A null in the first line says nothing against the column: take it as text.
        serde_json::Value::Null => Kind::Text,
        _ => Kind::Other,
    }
}

/// One cell, whatever the file format.
enum Cell {
    Missing,
    Text(String),
    List(Vec<String>),
}

/// The outcomes of one table row (its cells in [`ColumnMap::columns`] order).
fn row_outcomes(map: &ColumnMap, cells: Vec<Cell>, out: &mut Vec<Outcome>) {
    let arity = map.arity();
    let rows = match (map, cells.as_slice()) {
        (ColumnMap::Set(_), [Cell::List(set)]) => set_rows(set.clone()),
        (ColumnMap::Set(_), [Cell::Missing]) => Vec::new(),
        (ColumnMap::Set(c), _) => {
            return out.push(Outcome::Malformed(
                "not a list",
                format!("column `{c}` holds a text, not a list of texts"),
            ))
        }
        (ColumnMap::Pairs { anchor, .. }, [Cell::List(_), ..]) => {
            return out.push(Outcome::Malformed(
                "anchor is a list",
                format!("the anchor column `{anchor}` holds a list; it takes one text"),
            ))
        }
        (_, [Cell::Text(a), pos, neg @ ..]) => {
            let list = |c: &Cell| match c {
                Cell::Missing => Vec::new(),
                Cell::Text(t) => vec![t.clone()],
                Cell::List(l) => l.clone(),
            };
            let neg = neg.first().map(list).unwrap_or_default();
            query_rows(a, list(pos), &neg)
        }
        _ => Vec::new(),
    };
    if rows.is_empty() {
        return out.push(Outcome::Skip(0, "missing text"));
    }
    for texts in rows {
        let Some(mut texts) = texts
            .iter()
            .map(|t| non_empty(t))
            .collect::<Option<Vec<_>>>()
        else {
            out.push(Outcome::Skip(0, "empty text"));
            continue;
        };
        if texts.len() != arity.columns() {
            out.push(Outcome::Skip(0, "no negative"));
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

/// A JSON-lines table: one object per line.
struct JsonParser<'a> {
    map: &'a ColumnMap,
}

impl crate::LineParser for JsonParser<'_> {
    fn parse(&self, _line_no: u64, line: &str, out: &mut Vec<Outcome>) {
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
            Ok(o) => o,
            Err(e) => {
                let msg = crate::error::json_problem(&e).1;
                return out.push(Outcome::Malformed("invalid JSON", msg));
            }
        };
        let mut cells = Vec::new();
        for col in self.map.columns() {
            match obj.get(col) {
                None | Some(serde_json::Value::Null) => cells.push(Cell::Missing),
                Some(serde_json::Value::String(s)) => cells.push(Cell::Text(s.clone())),
                Some(serde_json::Value::Array(a)) if a.iter().all(|x| x.is_string()) => {
                    cells.push(Cell::List(
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect(),
                    ))
                }
                Some(other) => {
                    return out.push(Outcome::Malformed(
                        "not text",
                        format!("column `{col}` holds {other}, not text or a list of texts"),
                    ))
                }
            }
        }
        row_outcomes(self.map, cells, out);
    }
}

/// A column of a decoded batch, by its string layout.
enum Col<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    View(&'a StringViewArray),
    List(&'a ListArray, Box<Col<'a>>),
    LargeList(&'a LargeListArray, Box<Col<'a>>),
}

impl<'a> Col<'a> {
    fn of(a: &'a ArrayRef) -> Option<Col<'a>> {
        Self::of_dyn(a.as_ref())
    }

    fn of_dyn(a: &'a dyn Array) -> Option<Col<'a>> {
        let any = a.as_any();
        if let Some(s) = any.downcast_ref::<StringArray>() {
            return Some(Col::Utf8(s));
        }
        if let Some(s) = any.downcast_ref::<LargeStringArray>() {
            return Some(Col::LargeUtf8(s));
        }
        if let Some(s) = any.downcast_ref::<StringViewArray>() {
            return Some(Col::View(s));
        }
        if let Some(l) = any.downcast_ref::<ListArray>() {
            return Some(Col::List(l, Box::new(Self::of_dyn(l.values().as_ref())?)));
        }
        if let Some(l) = any.downcast_ref::<LargeListArray>() {
            return Some(Col::LargeList(
                l,
                Box::new(Self::of_dyn(l.values().as_ref())?),
            ));
        }
        None
    }

    fn text(&self, i: usize) -> Option<&'a str> {
        match self {
            Col::Utf8(s) => s.is_valid(i).then(|| s.value(i)),
            Col::LargeUtf8(s) => s.is_valid(i).then(|| s.value(i)),
            Col::View(s) => s.is_valid(i).then(|| s.value(i)),
            _ => None,
        }
    }

    fn cell(&self, i: usize) -> Cell {
        let items = |range: std::ops::Range<usize>, inner: &Col<'a>| {
            Cell::List(
                range
                    .filter_map(|j| inner.text(j).map(str::to_owned))
                    .collect(),
            )
        };
        match self {
            Col::List(l, inner) if l.is_valid(i) => {
                let o = l.value_offsets();
                items(o[i] as usize..o[i + 1] as usize, inner)
            }
            Col::LargeList(l, inner) if l.is_valid(i) => {
                let o = l.value_offsets();
                items(o[i] as usize..o[i + 1] as usize, inner)
            }
            Col::List(..) | Col::LargeList(..) => Cell::Missing,
            text => text
                .text(i)
                .map(|t| Cell::Text(t.to_owned()))
                .unwrap_or(Cell::Missing),
        }
    }
}

/// One decoded row group: (row number in the file, outcome), in order.
type Decoded = Vec<(u64, Outcome)>;

/// Decodes row group `rg` of `path`, reading only the mapped columns.
fn decode_row_group(path: &Path, rg: usize, first_row: u64, map: &ColumnMap) -> Result<Decoded> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| not_parquet(path, &e.to_string()))?;
    let schema = builder.schema().clone();
    let indices: Vec<usize> = map
        .columns()
        .iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| IngestError::Input(format!("{}: no column `{c}`", path.display())))
        })
        .collect::<Result<_>>()?;
    let roots: Vec<usize> = {
        let mut r = indices.clone();
        r.sort_unstable();
        r.dedup();
        r
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_row_groups(vec![rg])
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| not_parquet(path, &e.to_string()))?;
    let mut out = Vec::new();
    let mut row = first_row;
    let mut scratch = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| IngestError::Malformed {
            location: Location {
                path: path.to_path_buf(),
                record: rg as u64,
                unit: "row group",
            },
            message: format!("cannot decode: {e}"),
        })?;
        let bschema = batch.schema();
        let cols: Vec<Col> = map
            .columns()
            .iter()
            .map(|c| {
                let idx = bschema.index_of(c).expect("projected");
                Col::of(batch.column(idx)).ok_or_else(|| {
                    IngestError::Input(format!(
                        "{}: column `{c}` holds neither text nor a list of texts",
                        path.display()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        for i in 0..batch.num_rows() {
            row += 1;
            let cells = cols.iter().map(|c| c.cell(i)).collect();
            row_outcomes(map, cells, &mut scratch);
            out.extend(scratch.drain(..).map(|o| (row, o)));
        }
    }
    Ok(out)
}

fn apply(sink: &mut Sink, path: &Path, decoded: Decoded) -> Result<()> {
    apply_outcomes(sink, path, decoded, "row")
}

/// Every row group of a Parquet file, decoded on `threads` threads and applied in order.
fn ingest_parquet(sink: &mut Sink, path: &Path, map: &ColumnMap, threads: usize) -> Result<()> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let meta = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| not_parquet(path, &e.to_string()))?
        .metadata()
        .clone();
    let mut starts = Vec::new();
    let mut at = 0u64;
    for rg in meta.row_groups() {
        starts.push(at);
        at += rg.num_rows() as u64;
    }
    if threads <= 1 || starts.len() <= 1 {
        for (rg, &first) in starts.iter().enumerate() {
            apply(sink, path, decode_row_group(path, rg, first, map)?)?;
        }
        return Ok(());
    }
    let workers = threads.min(starts.len());
    let (job_tx, job_rx) = bounded::<usize>(starts.len());
    for rg in 0..starts.len() {
        job_tx.send(rg).expect("receiver alive");
    }
    drop(job_tx);
    // Bounded so at most a few decoded row groups wait in memory for their turn.
    let (done_tx, done_rx) = bounded::<(usize, Result<Decoded>)>(workers);
    let starts = Arc::new(starts);
    std::thread::scope(|scope| -> Result<()> {
        // Owned here, so an early return drops it and the workers' sends fail: they stop.
        let done_rx = done_rx;
        for _ in 0..workers {
            let (rx, tx, starts) = (job_rx.clone(), done_tx.clone(), starts.clone());
            scope.spawn(move || {
                for rg in rx {
                    let decoded = decode_row_group(path, rg, starts[rg], map);
                    if tx.send((rg, decoded)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut pending = BTreeMap::new();
        let mut next = 0usize;
        for (rg, decoded) in done_rx.iter() {
            pending.insert(rg, decoded);
            while let Some(decoded) = pending.remove(&next) {
                // An error returns at once; dropping the receiver then stops the workers.
                apply(sink, path, decoded?)?;
                next += 1;
            }
        }
        Ok(())
    })
}

impl Table {
    fn resolve(&self, inputs: &[PathBuf]) -> Result<Resolved> {
        let first = inputs
            .first()
            .ok_or_else(|| IngestError::Input("no input files".into()))?;
        resolve_columns(first, self.columns.as_ref())
    }
}

/// `train-00000-of-00001.parquet` -> `train_00000_of_00001`.
pub fn dataset_id_for(path: &Path) -> String {
    let name = base_name(path);
    let stem = [".parquet", ".jsonl", ".json"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name);
    dataset_id_from_stem(stem)
}

impl Source for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[]
    }
    fn about(&self) -> &'static str {
        "Any table of texts with named columns: Parquet (*.parquet) or JSON lines (*.jsonl, \
         *.jsonl.gz, one object per line), e.g. a Hub dataset (--input hf://datasets/ORG/NAME[@REV]/GLOB \
         downloads it through the HF cache). --columns anchor=COL,positive=COL[,negative=COL] or \
         set=COL (default: the first two, or three, string columns of the first file, printed). \
         A list-valued column follows the jsonl rules: set -> disjoint consecutive pairs, a list of \
         positives -> one row per positive, negatives taken in turn. Writes one dataset named by \
         --dataset (default: the first file's name)."
    }
    fn accept(&self, path: &Path) -> bool {
        let name = base_name(path);
        name.ends_with(".parquet") || name.ends_with(".jsonl") || name.ends_with(".json")
    }
    fn outputs(&self, inputs: &[PathBuf], opts: &IngestOptions) -> Result<Vec<(String, Arity)>> {
        let resolved = self.resolve(inputs)?;
        let id = opts
            .dataset
            .clone()
            .unwrap_or_else(|| dataset_id_for(&inputs[0]));
        Ok(vec![(id, resolved.columns.arity())])
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, opts: &IngestOptions) -> Result<()> {
        let map = self.resolve(inputs)?.columns;
        for path in inputs {
            if is_parquet(path) {
                ingest_parquet(sink, path, &map, opts.threads)?;
            } else {
                ingest_lines(sink, path, &JsonParser { map: &map }, opts.threads)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_maps() {
        let m = ColumnMap::parse("anchor=question, positive=answer,negative=neg").unwrap();
        assert_eq!(m.arity(), Arity::Triplet);
        assert_eq!(m.columns(), ["question", "answer", "neg"]);
        assert_eq!(
            m.to_string(),
            "anchor=question,positive=answer,negative=neg"
        );
        assert_eq!(
            ColumnMap::parse("set=texts").unwrap(),
            ColumnMap::Set("texts".into())
        );
        for bad in [
            "anchor=q",
            "set=a,anchor=b",
            "query=q,positive=a",
            "anchor",
            "anchor=a,anchor=b,positive=c",
        ] {
            assert!(ColumnMap::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_follow_the_jsonl_rules() {
        let map = ColumnMap::parse("anchor=q,positive=p,negative=n").unwrap();
        let t = |s: &str| Cell::Text(s.into());
        let l = |v: &[&str]| Cell::List(v.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        row_outcomes(
            &map,
            vec![t("q"), l(&["p1", "p2", "p3"]), l(&["n1", "n2"])],
            &mut out,
        );
        let rows: Vec<(String, String, Option<String>)> = out
            .iter()
            .map(|o| match o {
                Outcome::Row(_, r) => (r.anchor.clone(), r.positive.clone(), r.negative.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("q".into(), "p1".into(), Some("n1".into())),
                ("q".into(), "p2".into(), Some("n2".into())),
                ("q".into(), "p3".into(), Some("n1".into())),
            ]
        );
        out.clear();
        row_outcomes(&map, vec![t("q"), t("p"), l(&[])], &mut out);
        assert_eq!(out, [Outcome::Skip(0, "no negative")]);
        out.clear();
        row_outcomes(
            &ColumnMap::Set("s".into()),
            vec![l(&["a", "b", "c", "d", "e"])],
            &mut out,
        );
        assert_eq!(out.len(), 2);
        out.clear();
        row_outcomes(&map, vec![t("q"), Cell::Missing, t("n")], &mut out);
        assert_eq!(out, [Outcome::Skip(0, "missing text")]);
    }
}
