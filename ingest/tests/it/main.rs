//! ingest's integration tests: one binary, so the crate's tests link once.

mod amazon_qa;
mod common;
mod eli5;
mod gooaq;
mod jsonl;
mod msmarco;
mod natural_questions;
mod paq;
mod quora;
mod reliability;
mod searchqa;
mod squad;
mod stackexchange;
mod table;
mod triviaqa;
mod wikianswers;
mod yahoo_answers;
