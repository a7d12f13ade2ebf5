//! Reading a pairs dataset (and an extra corpus) and writing the curated dataset: same layout
//! as ingest writes (part files + manifest.json), built in a hidden folder and swapped in whole.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use schemas::{
    part_files, DatasetWriter, InputFile, Manifest, OutputLock, PairReader, PairRecord,
    PairWriterOptions,
};

use crate::error::{MineError, Result};
use crate::Curated;

/// A dataset read whole: its rows, and its part files as manifest inputs.
#[derive(Debug)]
pub struct Dataset {
    pub path: PathBuf,
    pub records: Vec<PairRecord>,
    pub files: Vec<InputFile>,
}

fn input_file(path: &Path) -> Result<InputFile> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| MineError::io(path, e))?
        .len();
    Ok(InputFile {
        path: path.display().to_string(),
        bytes,
        sha256: schemas::sha256_file(path)?,
    })
}

/// Every row of a dataset folder (its part files in order) or of one pairs Parquet file.
pub fn read_dataset(path: &Path) -> Result<Dataset> {
    let parts = part_files(path)?;
    if parts.is_empty() {
        return Err(MineError::input(
            path,
            "no part-*.parquet files: not a pairs dataset",
        ));
    }
    let mut records = Vec::new();
    let mut files = Vec::new();
    for part in &parts {
        let reader = PairReader::open(part)?;
        for rec in reader.records()? {
            records.push(rec?);
        }
        files.push(input_file(part)?);
    }
    if records.is_empty() {
        return Err(MineError::input(path, "the dataset has no rows"));
    }
    Ok(Dataset {
        path: path.to_owned(),
        records,
        files,
    })
}

/// Extra candidate texts: a dataset (its positives, then its negatives) or a text file (one
/// text per line, blank lines skipped).
pub fn read_corpus(path: &Path) -> Result<(Vec<String>, Vec<InputFile>)> {
    let is_text = path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    if !is_text {
        let d = read_dataset(path)?;
        let mut texts: Vec<String> = Vec::with_capacity(d.records.len());
        let mut negatives = Vec::new();
        for r in d.records {
            texts.push(r.positive);
            negatives.extend(r.negative.into_iter().chain(r.extra_negatives));
        }
        texts.extend(negatives);
        return Ok((texts, d.files));
    }
    let file = std::fs::File::open(path).map_err(|e| MineError::io(path, e))?;
    let mut texts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| MineError::input(path, format!("line {}: {e}", i + 1)))?;
        if !line.trim().is_empty() {
            texts.push(line);
        }
    }
    if texts.is_empty() {
        return Err(MineError::input(path, "the corpus file has no texts"));
    }
    Ok((texts, vec![input_file(path)?]))
}

/// What the manifest of a curated dataset records beside its rows.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The input dataset's parts, the corpus, the model weights.
    pub inputs: Vec<InputFile>,
    /// Every option of the run (and the model's sha256), as JSON values.
    pub options: BTreeMap<String, serde_json::Value>,
}

/// Writes `curated` as dataset `out` (its folder name is the dataset id), replacing an earlier
/// one only when complete; a run that produced no rows fails and leaves `out` untouched.
pub fn write_dataset(out: &Path, curated: &Curated<'_>, prov: &Provenance) -> Result<Manifest> {
    let dataset = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| MineError::input(out, "the output needs a folder name (the dataset id)"))?;
    if curated.is_empty() {
        let why: Vec<String> = curated
            .dropped
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        return Err(MineError::input(
            out,
            format!(
                "no rows left to write ({}); nothing replaced",
                why.join(", ")
            ),
        ));
    }
    let _lock = OutputLock::acquire(out)?;
    let mut options = prov.options.clone();
    options.insert(
        "counts".to_owned(),
        serde_json::to_value(&curated.counts).expect("map"),
    );
    let mut writer = DatasetWriter::create(
        out,
        dataset,
        "mine",
        curated.arity,
        PairWriterOptions::default(),
    )?
    .with_options(options);
    writer.set_inputs(prov.inputs.clone());
    for (reason, count) in &curated.dropped {
        writer.skip(reason, *count);
    }
    for r in curated.records() {
        writer.push(&r)?;
    }
    let manifest = writer.finish()?;
    Ok(manifest)
}
