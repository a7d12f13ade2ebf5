//! Shared by the trainer tests: a tiny model folder (WordPiece vocab trained on a few sentences,
//! seeded random weights) and shards written through the one shard writer, `schemas::ShardWriter`.

#![allow(dead_code)]

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use schemas::{ShardIndex, ShardWriter, ShardWriterOptions};

pub const TEXTS: &[&str] = &[
    "how do i bake sourdough bread at home",
    "feed the starter, mix flour and water, fold, proof overnight and bake",
    "what is the capital of australia",
    "canberra is the capital city of australia",
    "who wrote the origin of species",
    "charles darwin wrote on the origin of species in 1859",
    "how far is the moon from the earth",
    "the moon is about 384,400 km away from the earth",
];

/// A model folder with a tokenizer, `config.json` and no weights (the trainer initialises them).
pub fn tiny_model(dir: &Path) {
    let texts: Vec<String> = TEXTS
        .iter()
        .cycle()
        .take(64)
        .map(|s| s.to_string())
        .collect();
    train::vocab::build_model_folder(&texts, 200, dir, |v| encoder::BertConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_attention_heads: 4,
        max_position_embeddings: 64,
        ..train::vocab::tiny_config(v, 64)
    })
    .unwrap();
}

pub fn vocab_size(dir: &Path) -> u32 {
    encoder::BertConfig::from_file(&dir.join("config.json"))
        .unwrap()
        .vocab_size as u32
}

pub fn random_seq(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32, max: usize) -> Vec<u32> {
    let len = rng.random_range(3..=max);
    let mut v = vec![2u32]; // [CLS]
    v.extend((1..len - 1).map(|_| rng.random_range(5..vocab)));
    v.push(3); // [SEP]
    v
}

/// `batches` batches of `batch_size` rows of random ids; every third batch is triplets.
pub fn write_shards(dir: &Path, vocab: u32, batches: u64, batch_size: usize, per_shard: u64) {
    write_shards_with_negatives(dir, vocab, batches, batch_size, per_shard, 1);
}

/// [`write_shards`] where every third batch has `negatives` negative columns (dataset
/// `squad_hn` when more than one, as `prep mine` would name it). With 1, the same bytes.
pub fn write_shards_with_negatives(
    dir: &Path,
    vocab: u32,
    batches: u64,
    batch_size: usize,
    per_shard: u64,
    negatives: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let options = ShardWriterOptions {
        batch_size,
        keep_text: false,
    };
    let mut shards = Vec::new();
    let mut b = 0u64;
    while b < batches {
        let file = schemas::shards::shard_file_name(shards.len());
        let mut w = ShardWriter::create_for(dir.join(&file), options, negatives.max(1)).unwrap();
        let first = b;
        while b < batches && b < first + per_shard {
            let triplet = b % 3 == 2;
            let dataset = match (triplet, negatives) {
                (false, _) => "squad",
                (true, 1) => "quora",
                (true, _) => "squad_hn",
            };
            let rows: Vec<schemas::ShardRow> = (0..batch_size)
                .map(|_| schemas::ShardRow {
                    batch: b,
                    dataset: dataset.to_owned(),
                    anchor_ids: random_seq(&mut rng, vocab, 12),
                    positive_ids: random_seq(&mut rng, vocab, 20),
                    negative_ids: triplet.then(|| random_seq(&mut rng, vocab, 20)),
                    extra_negative_ids: (1..if triplet { negatives } else { 0 })
                        .map(|_| random_seq(&mut rng, vocab, 20))
                        .collect(),
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows).unwrap();
            b += 1;
        }
        shards.push(w.finish().unwrap());
    }
    let index = ShardIndex::hand_made(batch_size as u64, 7, shards, 0);
    assert_eq!(index.steps, batches);
    index.write(dir).unwrap();
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn cpu() -> Device {
    Device::Cpu
}
