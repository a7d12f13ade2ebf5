//! Upstream's normalized `jsonl(.gz)` files, read line by line and converted once into a Parquet
//! dataset so they are shuffled like every ingested dataset.
//!
//! Line shapes: `["a","b"]`, `["a","b","c"]`, `{"texts":[...]}` (2 or 3 texts), `{"set":[...]}`
//! (two distinct members drawn, as upstream did) and `{"query","pos":[...],"neg":[...]}` (one
//! positive and, when `neg` is not empty, one negative drawn). Draws use a per-line seeded
//! generator, so a conversion is reproducible.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use rand::Rng;
use schemas::{
    AtomicDir, InputFile, Manifest, PairRecord, PairWriter, PairWriterOptions, PREP_VERSION,
};
use serde_json::Value;

use crate::error::{MixError, Result};
use crate::rng::named_rng;

fn strings(v: &[Value]) -> Option<Vec<String>> {
    v.iter().map(|x| x.as_str().map(str::to_owned)).collect()
}

/// The texts of one line (2 or 3 of them). `line_no` seeds the draws of `set` and `pos`/`neg`.
pub fn parse_line(line: &str, line_no: u64) -> std::result::Result<Vec<String>, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let mut rng = named_rng(0, &["jsonl-line", &line_no.to_string()]);
    let texts = match &value {
        Value::Array(items) => strings(items).ok_or("a list item is not a string")?,
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get("texts") {
                strings(items).ok_or("a `texts` item is not a string")?
            } else if let Some(Value::Array(items)) = map.get("set") {
                let set = strings(items).ok_or("a `set` item is not a string")?;
                if set.len() < 2 {
                    return Err("`set` with fewer than 2 texts".into());
                }
                let i = rng.random_range(0..set.len());
                let mut j = rng.random_range(0..set.len() - 1);
                if j >= i {
                    j += 1;
                }
                vec![set[i].clone(), set[j].clone()]
            } else if let Some(Value::String(query)) = map.get("query") {
                let list = |key: &str| -> std::result::Result<Vec<String>, String> {
                    match map.get(key) {
                        None | Some(Value::Null) => Ok(Vec::new()),
                        Some(Value::String(s)) => Ok(vec![s.clone()]),
                        Some(Value::Array(a)) => {
                            strings(a).ok_or(format!("a `{key}` item is not a string"))
                        }
                        Some(_) => Err(format!("`{key}` is not a list of strings")),
                    }
                };
                let pos = list("pos")?;
                let neg = list("neg")?;
                if pos.is_empty() {
                    return Err("`pos` is empty".into());
                }
                let mut out = vec![query.clone(), pos[rng.random_range(0..pos.len())].clone()];
                if !neg.is_empty() {
                    out.push(neg[rng.random_range(0..neg.len())].clone());
                }
                out
            } else {
                return Err("object without `texts`, `set` or `query`".into());
            }
        }
        _ => return Err("neither a list nor an object".into()),
    };
    match texts.len() {
        2 | 3 => Ok(texts),
        n => Err(format!("{n} texts; prep mixes pairs (2) and triplets (3)")),
    }
}

fn to_record(mut texts: Vec<String>) -> PairRecord {
    let negative = (texts.len() == 3).then(|| texts.pop().expect("3 texts"));
    let positive = texts.pop().expect("2 texts");
    let anchor = texts.pop().expect("2 texts");
    PairRecord {
        anchor,
        positive,
        negative,
        source_id: None,
    }
}

fn mtime_ns(path: &Path) -> u128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Converts `file` into a dataset folder at `dir` (unless `dir` already holds the conversion of
/// this very file: same size and modification time). Returns the dataset's manifest.
pub fn convert(file: &Path, dir: &Path, id: &str) -> Result<Manifest> {
    let meta = std::fs::metadata(file).map_err(|e| MixError::io(file, e))?;
    let mtime = mtime_ns(file).to_string();
    if let Ok(m) = Manifest::read(dir) {
        let same = m.inputs.first().is_some_and(|i| i.bytes == meta.len())
            && m.options.get("mtime_ns").and_then(Value::as_str) == Some(mtime.as_str());
        if same {
            return Ok(m);
        }
    }
    let raw = File::open(file).map_err(|e| MixError::io(file, e))?;
    let reader: Box<dyn Read> = if file.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let out = AtomicDir::create(dir)?;
    let mut writer: Option<PairWriter> = None;
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    for (i, line) in BufReader::with_capacity(1 << 20, reader)
        .lines()
        .enumerate()
    {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| MixError::Jsonl {
            path: file.to_path_buf(),
            line: line_no,
            message: e.to_string(),
        })?;
        if line.trim().is_empty() {
            *skipped.entry("blank line".into()).or_default() += 1;
            continue;
        }
        let texts = parse_line(&line, line_no).map_err(|message| MixError::Jsonl {
            path: file.to_path_buf(),
            line: line_no,
            message,
        })?;
        let record = to_record(texts);
        let w = writer.get_or_insert_with(|| {
            PairWriter::new(out.path(), record.arity(), PairWriterOptions::default())
        });
        if record.arity() != w.arity() {
            return Err(MixError::Jsonl {
                path: file.to_path_buf(),
                line: line_no,
                message: format!(
                    "{} texts in a file whose first line has {}",
                    record.arity().columns(),
                    w.arity().columns()
                ),
            });
        }
        w.push(&record)?;
    }
    let Some(writer) = writer else {
        return Err(MixError::Jsonl {
            path: file.to_path_buf(),
            line: 0,
            message: "no records".into(),
        });
    };
    let columns = writer.arity();
    let files = writer.finish()?;
    let manifest = Manifest {
        dataset: id.to_owned(),
        source: "jsonl".into(),
        columns,
        rows: files.iter().map(|f| f.rows).sum(),
        skipped,
        files,
        inputs: vec![InputFile {
            path: file.display().to_string(),
            bytes: meta.len(),
            sha256: schemas::sha256_file(file)?,
        }],
        prep_version: PREP_VERSION.into(),
        options: BTreeMap::from([("mtime_ns".to_owned(), Value::String(mtime))]),
    };
    manifest.write(out.path())?;
    out.commit()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_shape() {
        assert_eq!(parse_line(r#"["a","b"]"#, 1).unwrap(), ["a", "b"]);
        assert_eq!(parse_line(r#"["a","b","c"]"#, 1).unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_line(r#"{"texts":["a","b"]}"#, 1).unwrap(), ["a", "b"]);
        let set = parse_line(r#"{"set":["x","y","z"]}"#, 7).unwrap();
        assert_eq!(set.len(), 2);
        assert_ne!(set[0], set[1]);
        assert_eq!(set, parse_line(r#"{"set":["x","y","z"]}"#, 7).unwrap());
        let t = parse_line(r#"{"query":"q","pos":["p"],"neg":["n1","n2"]}"#, 3).unwrap();
        assert_eq!(t[..2], ["q", "p"]);
        assert!(t[2].starts_with('n'));
        assert_eq!(
            parse_line(r#"{"query":"q","pos":["p"],"neg":[]}"#, 3).unwrap(),
            ["q", "p"]
        );
        assert!(parse_line(r#"["a"]"#, 1).is_err());
        assert!(parse_line(r#"["a","b","c","d"]"#, 1).is_err());
        assert!(parse_line(r#"{"other":1}"#, 1).is_err());
        assert!(parse_line("nope", 1).is_err());
    }
}
