//! Shared by the trainer tests: a tiny model folder (WordPiece vocab trained on a few sentences,
//! seeded random weights) and shards written with the mixer's schema.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use candle_core::{Device, Tensor};
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use schemas::{ShardEntry, ShardIndex};

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

fn ids_column(rows: &[Option<Vec<u32>>]) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new()).with_field(
        arrow_schema::Field::new_list_field(arrow_schema::DataType::UInt32, false),
    );
    for r in rows {
        match r {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn random_seq(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32, max: usize) -> Vec<u32> {
    let len = rng.random_range(3..=max);
    let mut v = vec![2u32]; // [CLS]
    v.extend((1..len - 1).map(|_| rng.random_range(5..vocab)));
    v.push(3); // [SEP]
    v
}

/// `batches` batches of `batch_size` rows of random ids; every third batch is triplets.
pub fn write_shards(dir: &Path, vocab: u32, batches: u64, batch_size: usize, per_shard: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let schema = schemas::shards::shard_schema(false);
    let mut shards = Vec::new();
    let mut b = 0u64;
    while b < batches {
        let first = b;
        let (mut bc, mut dc, mut a, mut p, mut n) = (vec![], vec![], vec![], vec![], vec![]);
        while b < batches && b < first + per_shard {
            let triplet = b % 3 == 2;
            for _ in 0..batch_size {
                bc.push(b);
                dc.push(if triplet { "quora" } else { "squad" });
                a.push(Some(random_seq(&mut rng, vocab, 12)));
                p.push(Some(random_seq(&mut rng, vocab, 20)));
                n.push(triplet.then(|| random_seq(&mut rng, vocab, 20)));
            }
            b += 1;
        }
        let file = schemas::shards::shard_file_name(shards.len());
        let rows = bc.len() as u64;
        let rb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from(bc)),
                Arc::new(StringArray::from(dc)),
                ids_column(&a),
                ids_column(&p),
                ids_column(&n),
            ],
        )
        .unwrap();
        let path = dir.join(&file);
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), None)
                .unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        shards.push(ShardEntry {
            file,
            rows,
            first_batch: first,
            batches: b - first,
            sha256: schemas::sha256_file(&path).unwrap(),
        });
    }
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("pad_token_id".to_owned(), serde_json::json!(0));
    ShardIndex {
        prep_version: "test".into(),
        batch_size: batch_size as u64,
        steps: batches,
        seed: 7,
        shards,
        datasets: Default::default(),
        extra,
    }
    .write(dir)
    .unwrap();
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
