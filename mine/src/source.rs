//! Where a run's rows and extra candidate texts come from. A run reads its rows once to find
//! the distinct texts and again to write its output, so they never need to be held: a dataset
//! on disk ([`schemas::DatasetReader`]) is streamed each time; rows already in memory (tests,
//! benchmarks) are simply walked again.

use schemas::{DatasetReader, PairRecord};

use crate::error::Result;

/// Rows, in the same order on every pass.
pub trait PairSource {
    fn for_each_pair(&self, f: &mut dyn FnMut(&PairRecord) -> Result<()>) -> Result<()>;
}

// For slices behind a reference (`&&[T]` coerces to a trait object; `&[T]` cannot).
impl PairSource for &[PairRecord] {
    fn for_each_pair(&self, f: &mut dyn FnMut(&PairRecord) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(f)
    }
}

impl PairSource for Vec<PairRecord> {
    fn for_each_pair(&self, f: &mut dyn FnMut(&PairRecord) -> Result<()>) -> Result<()> {
        self.as_slice().for_each_pair(f)
    }
}

impl PairSource for DatasetReader {
    fn for_each_pair(&self, f: &mut dyn FnMut(&PairRecord) -> Result<()>) -> Result<()> {
        self.for_each(|r| f(&r))
    }
}

/// Texts, in the same order on every pass.
pub trait TextSource {
    fn for_each_text(&self, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()>;
}

impl TextSource for &[String] {
    fn for_each_text(&self, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(|t| f(t))
    }
}

impl TextSource for Vec<String> {
    fn for_each_text(&self, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        self.as_slice().for_each_text(f)
    }
}
