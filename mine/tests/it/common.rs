//! Shared test inputs: real fixture datasets (ingested from `../shared/fixtures` by the real
//! ingest source) and the real all-MiniLM-L6-v2 test model.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use encoder::candle_core::Device;
use encoder::SentenceEncoder;
use mine::{EmbedOptions, Embedder};
use schemas::PairRecord;

/// A fixture ingested into a temporary folder (removed with the value).
#[allow(dead_code)] // `tmp` keeps the folder alive; `dir` is for tests that read it back.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub records: Vec<PairRecord>,
}

fn ingest_fixture(fixture: &str, file: &str, source: &str, dataset: &str) -> Option<Fixture> {
    let input = testdata::fixture_dir(fixture)?.join(file);
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("pairs");
    let opts = ingest::IngestOptions {
        threads: 1,
        ..Default::default()
    };
    ingest::run(source, &[input], &out, &opts, &schemas::NoProgress).expect("ingest fixture");
    let dir = out.join(dataset);
    let records = schemas::DatasetReader::open(&dir)
        .and_then(|r| r.read_all())
        .expect("read fixture");
    Some(Fixture { tmp, dir, records })
}

/// SQuAD 2.0's "Normans" article: 96 answerable questions over its 39 paragraphs (many
/// questions per paragraph, so each anchor's other paragraphs are the natural hard negatives).
pub fn squad() -> Option<Fixture> {
    ingest_fixture("squad2", "dev-v2.0.Normans.pretty.json", "squad", "squad")
}

/// Amazon QA "Appliances": product questions and answers (repeated questions, short answers).
pub fn amazon() -> Option<Fixture> {
    ingest_fixture("amazon_qa", "qa_Appliances.json", "amazon_qa", "amazon_qa")
}

pub fn model_dir() -> Option<PathBuf> {
    testdata::test_model_dir()
}

/// The test model, loaded once on the CPU.
pub fn encoder() -> Option<&'static SentenceEncoder> {
    static E: OnceLock<Option<SentenceEncoder>> = OnceLock::new();
    E.get_or_init(|| {
        let dir = model_dir()?;
        Some(SentenceEncoder::load(&dir, &Device::Cpu).expect("load test model"))
    })
    .as_ref()
}

pub fn embedder() -> Option<Embedder<'static>> {
    Some(Embedder::new(encoder()?, EmbedOptions::default()))
}

/// Both the fixture and the model, or `None` (after the locators said why).
pub fn squad_and_model() -> Option<(Fixture, Embedder<'static>)> {
    Some((squad()?, embedder()?))
}

/// `mine/tests/data/<name>`.
pub fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
