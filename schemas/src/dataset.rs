//! One dataset folder of the pairs contract, `<pairs>/<dataset>/part-NNNNN.parquet` +
//! `manifest.json`, written by one writer: [`DatasetWriter`], and read row by row by one reader:
//! [`DatasetReader`] (its manifest with [`Manifest::read`]).
//!
//! The folder is built under a hidden temporary name ([`AtomicDir`]) and swapped in whole when
//! finished, so a reader never sees half a dataset and a failed run leaves an earlier one as it
//! was. The manifest lists every part's rows and sha256 (hashed while written) and the rows
//! skipped by reason. The writer takes no lock: a caller whose outputs may be shared holds an
//! [`crate::OutputLock`] on the target for the run (ingest does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::atomic::AtomicDir;
use crate::error::{Result, SchemaError};
use crate::manifest::{InputFile, Manifest};
use crate::pairs::{part_files, Arity, PairReader, PairRecord, PairWriter, PairWriterOptions};

/// Writes one dataset folder: its part files, then its manifest, atomically.
pub struct DatasetWriter {
    dir: AtomicDir,
    writer: PairWriter,
    dataset: String,
    source: String,
    skipped: BTreeMap<String, u64>,
    inputs: Vec<InputFile>,
    options: BTreeMap<String, serde_json::Value>,
}

impl DatasetWriter {
    /// Starts dataset `dataset` (its id, recorded in the manifest) of `arity` columns, to appear
    /// at `target` when [`DatasetWriter::finish`] is called; `source` names what made it.
    pub fn create(
        target: impl Into<PathBuf>,
        dataset: impl Into<String>,
        source: impl Into<String>,
        arity: Arity,
        options: PairWriterOptions,
    ) -> Result<Self> {
        let dir = AtomicDir::create(target)?;
        let writer = PairWriter::new(dir.path(), arity, options);
        Ok(DatasetWriter {
            dir,
            writer,
            dataset: dataset.into(),
            source: source.into(),
            skipped: BTreeMap::new(),
            inputs: Vec::new(),
            options: BTreeMap::new(),
        })
    }

    /// The options the dataset was made with, recorded in its manifest.
    pub fn with_options(mut self, options: BTreeMap<String, serde_json::Value>) -> Self {
        self.options = options;
        self
    }

    /// The raw inputs the dataset was made from, recorded in its manifest (known at the end
    /// when they are hashed while read).
    pub fn set_inputs(&mut self, inputs: Vec<InputFile>) {
        self.inputs = inputs;
    }

    /// Appends one row; its arity must be the dataset's.
    pub fn push(&mut self, record: &PairRecord) -> Result<()> {
        self.writer.push(record)
    }

    /// Counts `count` records left out for `reason`.
    pub fn skip(&mut self, reason: &str, count: u64) {
        *self.skipped.entry(reason.to_owned()).or_default() += count;
    }

    /// Records left out so far, by reason.
    pub fn skipped(&self) -> &BTreeMap<String, u64> {
        &self.skipped
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn arity(&self) -> Arity {
        self.writer.arity()
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.writer.rows()
    }

    /// Where the dataset appears when finished.
    pub fn target(&self) -> &Path {
        self.dir.target()
    }

    /// Closes the parts, writes the manifest and swaps the folder onto its target, replacing
    /// any earlier dataset there whole. Returns the manifest written.
    pub fn finish(self) -> Result<Manifest> {
        let (manifest, dir) = self.close()?;
        manifest.write(dir.path())?;
        dir.commit()?;
        Ok(manifest)
    }

    /// Closes the parts and removes the temporary folder, leaving the target as it was. Returns
    /// the manifest the dataset would have had.
    pub fn discard(self) -> Result<Manifest> {
        Ok(self.close()?.0)
    }

    fn close(self) -> Result<(Manifest, AtomicDir)> {
        let columns = self.writer.arity();
        let files = self.writer.finish()?;
        let manifest = Manifest {
            dataset: self.dataset,
            source: self.source,
            columns,
            rows: files.iter().map(|f| f.rows).sum(),
            skipped: self.skipped,
            files,
            inputs: self.inputs,
            prep_version: crate::PREP_VERSION.to_owned(),
            options: self.options,
        };
        Ok((manifest, self.dir))
    }
}

/// Reads a dataset folder (or one pairs file) row by row, part after part, holding one record
/// batch at a time, as many times as asked: a stage that needs its input twice reads it twice
/// rather than keeping it.
///
/// Each pass first checks that every part still has the size and modification time it had when
/// opened, so a dataset replaced between two passes is an error, not rows of two datasets.
#[derive(Debug, Clone)]
pub struct DatasetReader {
    path: PathBuf,
    parts: Vec<PartStamp>,
}

#[derive(Debug, Clone, PartialEq)]
struct PartStamp {
    path: PathBuf,
    bytes: u64,
    modified: Option<SystemTime>,
}

impl PartStamp {
    fn of(path: &Path) -> Result<PartStamp> {
        let meta = std::fs::metadata(path).map_err(|e| SchemaError::io(path, e))?;
        Ok(PartStamp {
            path: path.to_owned(),
            bytes: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl DatasetReader {
    /// The part files of `path` (a dataset folder, or one pairs Parquet file); none is an error.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let files = part_files(&path)?;
        if files.is_empty() {
            return Err(SchemaError::invalid(
                &path,
                "no part-*.parquet files: not a pairs dataset",
            ));
        }
        let parts = files
            .iter()
            .map(|f| PartStamp::of(f))
            .collect::<Result<_>>()?;
        Ok(DatasetReader { path, parts })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn parts(&self) -> impl Iterator<Item = &Path> + '_ {
        self.parts.iter().map(|p| p.path.as_path())
    }

    /// Rows in all parts (from their footers: nothing else is read).
    pub fn rows(&self) -> Result<u64> {
        self.parts().map(|p| Ok(PairReader::open(p)?.rows())).sum()
    }

    /// The parts as manifest inputs: path, size and sha256 (each part read once).
    pub fn inputs(&self) -> Result<Vec<InputFile>> {
        self.parts.iter().map(|p| InputFile::of(&p.path)).collect()
    }

    /// Hands `f` every row, in order; stops at the first error (`f`'s or a part's).
    pub fn for_each<E: From<SchemaError>>(
        &self,
        mut f: impl FnMut(PairRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        for part in &self.parts {
            if PartStamp::of(&part.path)? != *part {
                return Err(SchemaError::invalid(
                    &part.path,
                    "changed since it was opened (the dataset was replaced while being read)",
                )
                .into());
            }
            let reader = PairReader::open(&part.path)?;
            for record in reader.records()? {
                f(record?)?;
            }
        }
        Ok(())
    }

    /// Every row, in memory (for small datasets and tests).
    pub fn read_all(&self) -> Result<Vec<PairRecord>> {
        let mut rows = Vec::new();
        self.for_each(|r| {
            rows.push(r);
            Ok::<_, SchemaError>(())
        })?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{part_files, PairReader};

    fn small() -> PairWriterOptions {
        PairWriterOptions {
            row_group_rows: 2,
            rows_per_file: 4,
            zstd_level: 1,
        }
    }

    #[test]
    fn finish_writes_parts_and_a_manifest_that_describes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("pairs").join("squad");
        let mut w = DatasetWriter::create(&target, "squad", "test", Arity::Pair, small())
            .unwrap()
            .with_options(BTreeMap::from([("seed".to_owned(), serde_json::json!(3))]));
        for i in 0..5 {
            w.push(&PairRecord::pair(format!("q{i}"), format!("p{i}")))
                .unwrap();
        }
        w.skip("empty answer", 2);
        w.skip("empty answer", 1);
        assert!(!target.exists(), "nothing at the target before finish");
        let m = w.finish().unwrap();
        assert_eq!(m, Manifest::read(&target).unwrap());
        assert_eq!((m.dataset.as_str(), m.source.as_str()), ("squad", "test"));
        assert_eq!((m.rows, m.columns), (5, Arity::Pair));
        assert_eq!(m.skipped["empty answer"], 3);
        assert_eq!(m.options["seed"], 3);
        let parts = part_files(&target).unwrap();
        assert_eq!(parts.len(), 2);
        for (p, f) in parts.iter().zip(&m.files) {
            assert!(p.ends_with(&f.file));
            assert_eq!(crate::sha256_file(p).unwrap(), f.sha256);
            assert_eq!(PairReader::open(p).unwrap().rows(), f.rows);
        }
        assert_eq!(
            std::fs::read_dir(tmp.path().join("pairs")).unwrap().count(),
            1,
            "no temporary folder left"
        );
    }

    #[test]
    fn a_rerun_replaces_the_dataset_whole_and_discard_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("d");
        let write = |rows: usize| {
            let mut w =
                DatasetWriter::create(&target, "d", "test", Arity::Triplet, small()).unwrap();
            for i in 0..rows {
                w.push(&PairRecord::triplet(format!("a{i}"), "p", "n"))
                    .unwrap();
            }
            w
        };
        write(9).finish().unwrap();
        assert_eq!(part_files(&target).unwrap().len(), 3);
        write(3).finish().unwrap();
        assert_eq!(part_files(&target).unwrap().len(), 1, "old parts gone");
        let mut w = write(0);
        assert!(
            w.push(&PairRecord::pair("a", "b")).is_err(),
            "a dataset's arity is fixed"
        );
        let m = w.discard().unwrap();
        assert_eq!((m.rows, m.files.len()), (0, 0));
        assert_eq!(Manifest::read(&target).unwrap().rows, 3, "discard kept it");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_reader_gives_every_part_in_order_on_every_pass_and_refuses_a_replaced_dataset() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("d");
        let write = |rows: usize, tag: &str| {
            let mut w = DatasetWriter::create(&target, "d", "test", Arity::Pair, small()).unwrap();
            for i in 0..rows {
                w.push(&PairRecord::pair(format!("{tag}{i}"), "p")).unwrap();
            }
            w.finish().unwrap()
        };
        let m = write(9, "a");
        let r = DatasetReader::open(&target).unwrap();
        assert_eq!((r.parts().count(), r.rows().unwrap()), (3, 9));
        let anchors = |r: &DatasetReader| -> Result<Vec<String>> {
            Ok(r.read_all()?.into_iter().map(|x| x.anchor).collect())
        };
        let want: Vec<String> = (0..9).map(|i| format!("a{i}")).collect();
        assert_eq!(anchors(&r).unwrap(), want);
        assert_eq!(
            anchors(&r).unwrap(),
            want,
            "a second pass reads the same rows"
        );
        let inputs = r.inputs().unwrap();
        assert_eq!(
            inputs.iter().map(|i| &i.sha256).collect::<Vec<_>>(),
            m.files.iter().map(|f| &f.sha256).collect::<Vec<_>>()
        );

        // Another run replaces the dataset (more rows in its first part) between two passes.
        write(10, "bb");
        let err = anchors(&r).unwrap_err().to_string();
        assert!(err.contains("changed since it was opened"), "{err}");
        assert!(err.contains("part-00000"), "names the part: {err}");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = DatasetReader::open(&empty).unwrap_err().to_string();
        assert!(err.contains("not a pairs dataset"), "{err}");
    }
}
