//! Datasets with several negative columns through the mixer and back out of the loader: a mix
//! of pairs, triplets and a 3-negative dataset, tokenized with the real MiniLM tokenizer.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::common::{config_json, make_dataset};
use loader::{Loader, LoaderOptions, LoaderState};
use mixer::{mix, MixConfig, MixOptions, MixTokenizer, Mixing};
use schemas::shards::{ShardReader, ShardRow};
use schemas::{Arity, NoProgress, ShardIndex};
use testdata::test_model_dir;

const BATCH: usize = 8;

fn options(mixing: Mixing) -> MixOptions {
    MixOptions {
        steps: 30,
        batch_size: BATCH,
        seed: 11,
        max_length_a: 16,
        max_length_b: 32,
        datasets_per_batch: 2,
        batches_per_draw: 2,
        mixing,
        keep_text: true,
        batches_per_shard: 4,
        shuffle_buffer: 64,
    }
}

/// Mixes squad (pairs), quora (triplets) and squad_hn3 (3 negatives) into `out`.
fn mix_three(root: &Path, out: &Path, tok: &MixTokenizer, o: &MixOptions) -> ShardIndex {
    let pairs = root.join("pairs");
    if !pairs.exists() {
        make_dataset(&pairs, "squad", Arity::Pair, 200, 30);
        make_dataset(&pairs, "quora", Arity::Triplet, 150, 30);
        make_dataset(&pairs, "squad_hn3", Arity::with_negatives(3), 250, 40);
    }
    let cfg = root.join("data_config.json");
    let weights = [("squad", 30), ("quora", 20), ("squad_hn3", 50)];
    std::fs::write(&cfg, config_json(&weights)).unwrap();
    let config = MixConfig::read(&cfg).unwrap();
    mix(&config, &pairs, tok, out, o, &NoProgress).unwrap();
    ShardIndex::read(out).unwrap()
}

fn negatives_of(r: &ShardRow) -> Vec<&Vec<u32>> {
    r.negative_ids.iter().chain(&r.extra_negative_ids).collect()
}

fn texts_of(r: &ShardRow) -> Vec<&String> {
    let negs = r.negative.iter().chain(&r.extra_negatives);
    r.anchor.iter().chain(&r.positive).chain(negs).collect()
}

#[test]
fn three_negative_columns_round_trip_through_mix_shards_and_loader() {
    let Some(model) = test_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tok = MixTokenizer::open(&model, 16, 32).unwrap();
    let out = tmp.path().join("shards");
    let index = mix_three(tmp.path(), &out, &tok, &options(Mixing::Random));

    // The index says how many negative columns the shards and each dataset have.
    assert_eq!(index.mix.negative_columns, 3);
    let json = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(json.contains("\"negative_columns\": 3"), "{json}");
    let columns: BTreeMap<&str, usize> = index
        .datasets
        .iter()
        .map(|(id, d)| (id.as_str(), d.columns.negatives()))
        .collect();
    assert_eq!(
        columns,
        BTreeMap::from([("quora", 1), ("squad", 0), ("squad_hn3", 3)])
    );

    let mut rows = Vec::new();
    for s in &index.shards {
        rows.extend(
            ShardReader::open(out.join(&s.file))
                .unwrap()
                .read_rows()
                .unwrap(),
        );
    }
    assert_eq!(rows.len(), 30 * BATCH);
    let mut batches_per_dataset = BTreeMap::<String, u64>::new();
    for batch in rows.chunks(BATCH) {
        let ds = &batch[0].dataset;
        *batches_per_dataset.entry(ds.clone()).or_default() += 1;
        for r in batch {
            assert_eq!(&r.dataset, ds, "one dataset per batch");
            let negs = negatives_of(r);
            assert_eq!(negs.len(), columns[ds.as_str()], "{ds}");
            let texts: Vec<&String> = r.negative.iter().chain(&r.extra_negatives).collect();
            assert_eq!(texts.len(), negs.len());
            for (ids, text) in negs.iter().zip(&texts) {
                assert_eq!(
                    **ids,
                    tok.encode_b(text).unwrap(),
                    "tokenized like a positive"
                );
            }
            if ds == "squad_hn3" {
                // Column k holds negative k of the very row: `make_dataset` numbers them.
                let n = r.negative.as_deref().unwrap();
                assert!(n.starts_with("squad_hn3 unrelated text"));
                assert_eq!(r.extra_negatives[0], format!("{n} (negative 2)"));
                assert_eq!(r.extra_negatives[1], format!("{n} (negative 3)"));
            }
        }
    }
    assert!(batches_per_dataset["squad_hn3"] > 0 && batches_per_dataset.len() == 3);

    // Round dedup covers every column: no text twice in a round (2 draws × 2 batches).
    for round in rows.chunks(4 * BATCH) {
        let mut seen = HashSet::new();
        for t in round.iter().flat_map(texts_of) {
            assert!(seen.insert(t), "{t:?} twice in a round");
        }
        let arity: HashSet<usize> = round.iter().map(ShardRow::negative_columns).collect();
        assert_eq!(arity.len(), 1, "a random round keeps one column count");
    }

    // The loader pads every negative column on its own and hands back the shards' ids.
    let loader = Loader::open(&out, LoaderState::default(), &LoaderOptions::default()).unwrap();
    let mut seen_batches = 0;
    for (b, batch) in loader.enumerate() {
        let batch = batch.unwrap();
        let shard = &rows[b * BATCH..(b + 1) * BATCH];
        assert_eq!(batch.dataset, shard[0].dataset);
        assert_eq!(batch.negatives.len(), columns[batch.dataset.as_str()]);
        for (k, col) in batch.negatives.iter().enumerate() {
            let ids = col.ids.to_vec2::<u32>().unwrap();
            let mask = col.mask.to_vec2::<u32>().unwrap();
            let longest = shard
                .iter()
                .map(|r| negatives_of(r)[k].len())
                .max()
                .unwrap();
            assert_eq!(col.ids.dims(), &[BATCH, longest]);
            for (r, row) in shard.iter().enumerate() {
                let real: Vec<u32> = ids[r]
                    .iter()
                    .zip(&mask[r])
                    .filter(|(_, m)| **m == 1)
                    .map(|(i, _)| *i)
                    .collect();
                assert_eq!(&real, negatives_of(row)[k]);
            }
        }
        seen_batches += 1;
    }
    assert_eq!(seen_batches, 30);

    // Same inputs and seed: the same bytes (exact mixing too, which ignores column counts).
    let again = tmp.path().join("again");
    mix_three(tmp.path(), &again, &tok, &options(Mixing::Random));
    for s in &index.shards {
        let (a, b) = (out.join(&s.file), again.join(&s.file));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    let exact = mix_three(
        tmp.path(),
        &tmp.path().join("exact"),
        &tok,
        &options(Mixing::Exact),
    );
    assert_eq!(
        exact.datasets["squad_hn3"].columns,
        Arity::with_negatives(3)
    );
}

#[test]
fn a_pair_and_triplet_mix_keeps_its_index_and_shard_layout() {
    let Some(model) = test_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs");
    make_dataset(&pairs, "squad", Arity::Pair, 100, 30);
    make_dataset(&pairs, "quora", Arity::Triplet, 100, 30);
    let cfg = tmp.path().join("data_config.json");
    std::fs::write(&cfg, config_json(&[("squad", 1), ("quora", 1)])).unwrap();
    let config = MixConfig::read(&cfg).unwrap();
    let tok = MixTokenizer::open(&model, 16, 32).unwrap();
    let out = tmp.path().join("shards");
    let mut o = options(Mixing::Random);
    o.keep_text = false;
    o.steps = 6;
    mix(&config, &pairs, &tok, &out, &o, &NoProgress).unwrap();
    let index = ShardIndex::read(&out).unwrap();
    assert_eq!(index.mix.negative_columns, 1);
    let json = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(
        !json.contains("negative_columns"),
        "no new key in a triplet mix"
    );
    let r = ShardReader::open(out.join(&index.shards[0].file)).unwrap();
    let rows = r.read_rows().unwrap();
    assert!(rows.iter().all(|r| r.extra_negative_ids.is_empty()));
    let file = std::fs::File::open(out.join(&index.shards[0].file)).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(
        builder.schema().fields(),
        schemas::shards::shard_schema(false).fields()
    );
}
