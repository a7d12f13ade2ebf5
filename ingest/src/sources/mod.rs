//! One module per upstream source.

pub mod gooaq;
pub mod jsonl;
pub mod yahoo_answers;

use crate::Source;

/// Every source, in `--help` order.
pub static ALL: &[&dyn Source] = &[
    &gooaq::GooAq,
    &jsonl::NormalizedJsonl,
    &yahoo_answers::YahooAnswers,
];
