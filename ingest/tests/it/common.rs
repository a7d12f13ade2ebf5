//! Shared by the per-source tests: run a source into a temp folder and read back what it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ingest::{IngestOptions, IngestReport};
use schemas::{Manifest, NoProgress, PairRecord};

pub struct Run {
    pub dir: tempfile::TempDir,
    pub report: IngestReport,
}

impl Run {
    /// The rows of one dataset, in file order.
    pub fn rows(&self, dataset: &str) -> Vec<PairRecord> {
        read_rows(&self.dir.path().join(dataset))
    }
    pub fn manifest(&self, dataset: &str) -> Manifest {
        Manifest::read(&self.dir.path().join(dataset)).unwrap()
    }
    pub fn out(&self) -> &Path {
        self.dir.path()
    }
}

pub fn read_rows(dataset_dir: &Path) -> Vec<PairRecord> {
    schemas::DatasetReader::open(dataset_dir)
        .and_then(|r| r.read_all())
        .unwrap()
}

pub fn try_ingest(
    source: &str,
    inputs: &[PathBuf],
    opts: &IngestOptions,
) -> (tempfile::TempDir, ingest::Result<IngestReport>) {
    let dir = tempfile::tempdir().unwrap();
    let res = ingest::run(source, inputs, dir.path(), opts, &NoProgress);
    (dir, res)
}

/// Runs `source` over `inputs` with default options on `threads` threads; panics on error.
pub fn ingest_with(source: &str, inputs: &[PathBuf], threads: usize) -> Run {
    let opts = IngestOptions {
        threads,
        ..IngestOptions::default()
    };
    let (dir, res) = try_ingest(source, inputs, &opts);
    Run {
        dir,
        report: res.unwrap_or_else(|e| panic!("ingest {source} failed: {e}")),
    }
}

pub fn ingest(source: &str, inputs: &[PathBuf]) -> Run {
    ingest_with(source, inputs, 2)
}

/// Skip counts of a manifest as (reason, count) pairs, sorted, for exact comparison.
pub fn skipped(m: &Manifest) -> Vec<(String, u64)> {
    m.skipped.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// Writes `bytes` to `dir/name` (gzipped when the name ends in .gz) and returns the path.
pub fn write_input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    if name.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    } else {
        std::fs::write(&path, bytes).unwrap();
    }
    path
}
