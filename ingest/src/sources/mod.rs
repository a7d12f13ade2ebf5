//! One module per upstream source.

pub mod gooaq;
pub mod jsonl;

use crate::Source;

/// Every source, in `--help` order.
pub static ALL: &[&dyn Source] = &[&gooaq::GooAq, &jsonl::NormalizedJsonl];
