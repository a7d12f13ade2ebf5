//! One module per upstream source.

pub mod amazon_qa;
pub mod eli5;
pub mod gooaq;
pub(crate) mod json_array;
pub mod jsonl;
pub mod msmarco;
pub mod natural_questions;
pub mod paq;
pub mod quora;
pub(crate) mod scratch;
pub mod searchqa;
pub mod squad;
pub mod stackexchange;
pub mod table;
pub mod triviaqa;
pub mod wikianswers;
pub mod yahoo_answers;

use crate::Source;

/// Every source, in `--help` order.
pub static ALL: &[&dyn Source] = &[
    &gooaq::GooAq,
    &jsonl::NormalizedJsonl,
    &stackexchange::StackExchange,
    &triviaqa::TriviaQa,
    &yahoo_answers::YahooAnswers,
    &quora::Quora,
    &amazon_qa::AmazonQa,
    &squad::Squad,
    &wikianswers::WikiAnswers,
    &msmarco::MsMarco,
    &paq::Paq::DEFAULT,
    &searchqa::SearchQa,
    &eli5::Eli5,
    &natural_questions::NaturalQuestions,
    &table::Table { columns: None },
];
