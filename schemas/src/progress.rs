//! The one interface long loops report through. Libraries take `&dyn Progress`; the binary
//! implements it with indicatif, tests and library users pass [`NoProgress`].

/// What a progress position counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

pub trait Progress: Send + Sync {
    /// Starts (or restarts) a phase called `what`, with a known total when there is one.
    fn begin(&self, what: &str, total: Option<u64>, unit: Unit);
    /// Moves the position forward by `delta` units.
    fn advance(&self, delta: u64);
    /// A short status shown beside the bar ("1.2M rows, 3 skipped").
    fn message(&self, msg: &str);
    /// Ends the current phase.
    fn finish(&self);
}

/// Reports nothing: the default for library use and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish(&self) {}
}
