//! Progress for many files at once: one bar per file plus a total. The binary draws it with
//! indicatif; libraries and tests pass [`NoMultiProgress`].

use schemas::{NoProgress, Progress};

pub trait MultiProgress: Send + Sync {
    /// A new bar for one file, added when its download starts and finished when it ends.
    fn file(&self, name: &str) -> Box<dyn Progress>;
    /// The bar summing every file of the batch.
    fn total(&self) -> &dyn Progress;
}

/// Draws nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMultiProgress;

impl MultiProgress for NoMultiProgress {
    fn file(&self, _name: &str) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
    fn total(&self) -> &dyn Progress {
        &NoProgress
    }
}
