//! Opening a pairs dataset (and an extra corpus) to read, and writing the curated dataset: same
//! layout as ingest writes (part files + manifest.json), built in a hidden folder and swapped in
//! whole.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use schemas::{DatasetReader, DatasetWriter, InputFile, Manifest, OutputLock, PairWriterOptions};

use crate::error::{MineError, Result};
use crate::source::{PairSource, TextSource};
use crate::Curated;

/// The dataset to curate, opened for reading (as often as the run needs); one with no rows is
/// an error naming it.
pub fn open_pairs(path: &Path) -> Result<DatasetReader> {
    let reader = DatasetReader::open(path)?;
    if reader.rows()? == 0 {
        return Err(MineError::input(path, "the dataset has no rows"));
    }
    Ok(reader)
}

/// Extra candidate texts, read from disk on each pass: a dataset (its positives, then its
/// negatives) or a text file (one text per line, blank lines skipped).
#[derive(Debug)]
pub enum CorpusFile {
    Dataset(DatasetReader),
    Lines(PathBuf),
}

impl CorpusFile {
    /// A `.txt` file is lines; anything else a pairs dataset.
    pub fn open(path: &Path) -> Result<CorpusFile> {
        let is_text = path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
        if is_text {
            return Ok(CorpusFile::Lines(path.to_owned()));
        }
        Ok(CorpusFile::Dataset(open_pairs(path)?))
    }

    /// The files read, as manifest inputs.
    pub fn inputs(&self) -> Result<Vec<InputFile>> {
        match self {
            CorpusFile::Dataset(d) => Ok(d.inputs()?),
            CorpusFile::Lines(path) => Ok(vec![InputFile::of(path)?]),
        }
    }

    fn for_each_line(path: &Path, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| MineError::io(path, e))?;
        let mut texts = 0u64;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| MineError::input(path, format!("line {}: {e}", i + 1)))?;
            if !line.trim().is_empty() {
                texts += 1;
                f(&line)?;
            }
        }
        if texts == 0 {
            return Err(MineError::input(path, "the corpus file has no texts"));
        }
        Ok(())
    }
}

impl TextSource for CorpusFile {
    fn for_each_text(&self, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        match self {
            CorpusFile::Lines(path) => CorpusFile::for_each_line(path, f),
            CorpusFile::Dataset(d) => {
                d.for_each_pair(&mut |r| f(&r.positive))?;
                d.for_each_pair(&mut |r| r.negatives().try_for_each(|n| f(n)))
            }
        }
    }
}

/// What the manifest of a curated dataset records beside its rows.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The input dataset's parts, the corpus, the model weights.
    pub inputs: Vec<InputFile>,
    /// Every option of the run (and the model's sha256), as JSON values.
    pub options: BTreeMap<String, serde_json::Value>,
}

/// Writes `curated`, built from `pairs` (read once more), as dataset `out` (its folder name is
/// the dataset id), replacing an earlier one only when complete; a run that produced no rows
/// fails and leaves `out` untouched.
pub fn write_dataset(
    out: &Path,
    curated: &Curated,
    pairs: &dyn PairSource,
    prov: &Provenance,
) -> Result<Manifest> {
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
    curated.for_each_record(pairs, &mut |r| Ok(writer.push(&r)?))?;
    Ok(writer.finish()?)
}
