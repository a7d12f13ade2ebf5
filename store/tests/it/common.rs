//! A moto server with a bucket, settings pointing at it, and shard sets to move around.

use std::path::Path;
use std::time::Duration;

use schemas::{ShardIndex, ShardRow, ShardWriter, ShardWriterOptions};
use store::{Location, Remote, Settings};
use testdata::moto::Moto;

pub const BUCKET: &str = "prep-test";

/// Settings that reach `endpoint` with moto's dummy credentials, caching under `cache`.
pub fn settings(endpoint: &str, cache: &Path) -> Settings {
    Settings {
        options: vec![
            ("endpoint".into(), endpoint.into()),
            ("access_key_id".into(), "testing".into()),
            ("secret_access_key".into(), "testing".into()),
            ("region".into(), "us-east-1".into()),
        ],
        cache_dir: cache.to_owned(),
        cache_bytes: 1 << 30,
        attempts: 4,
        backoff: Duration::from_millis(50),
        read_ahead: 2,
    }
}

/// moto with the test bucket, or None (skip).
pub fn moto() -> Option<Moto> {
    let m = Moto::start()?;
    m.create_bucket(BUCKET);
    Some(m)
}

pub fn remote(url: &str, s: &Settings) -> Remote {
    match Location::parse_with(url, s).unwrap() {
        Location::Remote(r) => r,
        Location::Local(_) => panic!("{url} parsed as local"),
    }
}

/// A small deterministic generator (xorshift), so shard bytes are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Token ids of a sentence: [CLS] ... [SEP] with BERT-vocabulary ids, 8..40 tokens long.
fn sentence(rng: &mut Rng) -> Vec<u32> {
    let len = 8 + (rng.next() % 32) as usize;
    let mut ids = vec![101];
    ids.extend((0..len).map(|_| 1000 + (rng.next() % 29000) as u32));
    ids.push(102);
    ids
}

/// `shards` shard files of `batches` batches of `batch_size` pairs each, plus index.json, in `dir`.
pub fn write_shards(
    dir: &Path,
    shards: usize,
    batches: u64,
    batch_size: usize,
    seed: u64,
) -> ShardIndex {
    let mut rng = Rng::new(seed);
    let mut entries = Vec::new();
    for s in 0..shards {
        let path = dir.join(schemas::shard_file_name(s));
        let opts = ShardWriterOptions {
            batch_size,
            keep_text: false,
        };
        let mut w = ShardWriter::create(&path, opts).unwrap();
        for b in 0..batches {
            let batch = s as u64 * batches + b;
            let rows: Vec<ShardRow> = (0..batch_size)
                .map(|_| ShardRow {
                    batch,
                    dataset: "squad".into(),
                    anchor_ids: sentence(&mut rng),
                    positive_ids: sentence(&mut rng),
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows).unwrap();
        }
        entries.push(w.finish().unwrap());
    }
    let index = ShardIndex::hand_made(batch_size as u64, seed, entries, 0);
    index.write(dir).unwrap();
    index
}

/// Every file of `dir` (name, bytes), sorted, hidden ones left out.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}
