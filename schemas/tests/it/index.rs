//! `index.json`, typed: files written by earlier versions read and write back byte-identical,
//! a missing or misspelt key is an error naming the file and the key (never a silent default),
//! and keys of later versions are kept.

use std::path::Path;

use schemas::{Mixing, SchemaError, ShardEntry, ShardIndex, SourceKind};

/// index.json as the mixer wrote it before the index was typed (a sorted map of JSON values
/// after the fixed keys): two datasets, one from an ingested folder and one from a jsonl file.
const EARLIER: &str = r#"{
  "prep_version": "0.1.0",
  "batch_size": 2,
  "steps": 3,
  "seed": 7,
  "shards": [
    {
      "file": "shard-00000.parquet",
      "rows": 4,
      "first_batch": 0,
      "batches": 2,
      "sha256": "abababababababababababababababababababababababababababababababab"
    },
    {
      "file": "shard-00001.parquet",
      "rows": 2,
      "first_batch": 2,
      "batches": 1,
      "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
    }
  ],
  "datasets": {
    "quora_duplicates_triplets": {
      "batches": 1,
      "columns": 3,
      "epoch": 0,
      "epochs": 0.25,
      "names": [
        "quora_duplicates_triplets.jsonl.gz"
      ],
      "realised_share": 0.333333,
      "rows": 8,
      "rows_drawn": 2,
      "rows_skipped_duplicate": 0,
      "share": 0.5,
      "source": {
        "file": "/data/pairs/quora_duplicates_triplets.jsonl.gz",
        "kind": "jsonl"
      },
      "weight": 1
    },
    "squad": {
      "batches": 2,
      "columns": 2,
      "epoch": 1,
      "epochs": 1.125,
      "names": [
        "squad",
        "squad_pairs.jsonl.gz"
      ],
      "realised_share": 0.666667,
      "rows": 4,
      "rows_drawn": 4,
      "rows_skipped_duplicate": 1,
      "share": 0.5,
      "source": {
        "dir": "/data/pairs/squad",
        "kind": "dataset"
      },
      "weight": 1
    }
  },
  "batches_per_draw": 4,
  "batches_per_shard": 2,
  "complete": true,
  "config": {
    "entries": [
      {
        "lines": 87599,
        "name": "squad",
        "weight": 1
      },
      {
        "name": "quora_duplicates_triplets.jsonl.gz",
        "weight": 1
      }
    ],
    "path": "/data/data_config.json"
  },
  "datasets_per_batch": 2,
  "fingerprint": {
    "config": [
      {
        "name": "squad",
        "weight": 1
      }
    ],
    "options": {
      "batch_size": 2,
      "keep_text": false
    },
    "prep_version": "0.1.0",
    "sources": [
      {
        "files": [
          "efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef"
        ],
        "id": "squad",
        "rows": 4,
        "weight": 1
      }
    ],
    "tokenizer_sha256": "1212121212121212121212121212121212121212121212121212121212121212"
  },
  "keep_text": false,
  "max_length_a": 64,
  "max_length_b": 250,
  "mixing": "random",
  "mixing_deviation": {
    "max_abs": 0.5,
    "per_dataset": {
      "quora_duplicates_triplets": 0.5,
      "squad": 0.5
    },
    "unit": "batches",
    "what": "max over every prefix of the stream of |batches(dataset) - share * batches|",
    "within_one_batch": true
  },
  "pad_token_id": 0,
  "shuffle_buffer": 8192,
  "tokenizer": "/models/mini/tokenizer.json",
  "tokenizer_engine": "fast-wordpiece",
  "tokenizer_sha256": "1212121212121212121212121212121212121212121212121212121212121212"
}
"#;

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join(schemas::SHARD_INDEX_FILE), text).unwrap();
}

#[test]
fn an_index_written_by_earlier_versions_reads_typed_and_writes_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), EARLIER);
    let index = ShardIndex::read(dir.path()).unwrap();
    assert_eq!((index.batch_size, index.steps, index.seed), (2, 3, 7));
    assert_eq!(index.total_batches(), 3);
    assert!(index.complete);
    assert_eq!(index.tokenizer.pad_token_id, 0);
    assert_eq!(index.tokenizer.path, "/models/mini/tokenizer.json");
    assert_eq!(index.tokenizer.engine, "fast-wordpiece");
    assert_eq!((index.mix.max_length_a, index.mix.max_length_b), (64, 250));
    assert_eq!(index.mix.mixing, Mixing::Random);
    assert!(!index.mix.keep_text);
    assert_eq!(index.mix.config.entries[0].lines, Some(87599));
    assert_eq!(index.mix.config.entries[1].lines, None);
    let squad = &index.datasets["squad"];
    assert_eq!((squad.batches, squad.rows_skipped_duplicate), (2, 1));
    assert_eq!((squad.share, squad.epochs), (0.5, 1.125));
    assert_eq!(
        squad.source,
        SourceKind::Dataset {
            dir: "/data/pairs/squad".into()
        }
    );
    let quora = &index.datasets["quora_duplicates_triplets"];
    assert_eq!(u8::from(quora.columns), 3);
    assert!(matches!(quora.source, SourceKind::Jsonl { .. }));
    assert_eq!(index.mixing_deviation.as_ref().unwrap().max_abs, 0.5);
    assert!(index.other.is_empty() && squad.other.is_empty());

    // Same layout back: key order, nesting and number formatting.
    let back = index.to_json_bytes(dir.path()).unwrap();
    assert_eq!(String::from_utf8(back).unwrap(), EARLIER);
    index.write(dir.path()).unwrap();
    let path = dir.path().join("index.json");
    assert_eq!(std::fs::read_to_string(path).unwrap(), EARLIER);
}

/// Reads `text` as index.json and returns the key it reports missing.
fn missing_key(text: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), text);
    let err = ShardIndex::read(dir.path()).expect_err("the key is required");
    let msg = err.to_string();
    match err {
        SchemaError::MissingKey { path, key, .. } => {
            assert_eq!(path, dir.path().join("index.json"));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            (key, msg)
        }
        other => panic!("not a missing-key error: {other}"),
    }
}

#[test]
fn a_missing_or_misspelt_key_fails_naming_index_json_and_the_key() {
    assert_eq!(
        EARLIER.matches("\"pad_token_id\": 0,").count(),
        1,
        "fixture"
    );
    // Misspelt: today's loader would have padded with 0 without a word.
    let (key, _) = missing_key(&EARLIER.replace("\"pad_token_id\"", "\"pad_tokn_id\""));
    assert_eq!(key, "pad_token_id");
    let (key, _) = missing_key(&EARLIER.replace("  \"complete\": true,\n", ""));
    assert_eq!(key, "complete");
    let (key, _) = missing_key(&EARLIER.replace("\"tokenizer_sha256\"", "\"tokenizer_sha\""));
    assert_eq!(key, "tokenizer_sha256");
    let (key, _) = missing_key(&EARLIER.replace("\"max_length_b\"", "\"max_len_b\""));
    assert_eq!(key, "max_length_b");
    // Inside a dataset entry, and inside a shard entry.
    let (key, msg) = missing_key(&EARLIER.replace("\"rows_drawn\": 4,", "\"rows_drwn\": 4,"));
    assert_eq!(key, "rows_drawn");
    assert!(msg.contains("line "), "{msg}");
    let (key, _) = missing_key(&EARLIER.replacen("\"first_batch\"", "\"first\"", 1));
    assert_eq!(key, "first_batch");

    // A value of the wrong type is an error too, with its position.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &EARLIER.replace("\"pad_token_id\": 0,", "\"pad_token_id\": \"0\","),
    );
    let err = ShardIndex::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("index.json") && err.contains("line"), "{err}");
}

#[test]
fn keys_of_later_versions_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let later = EARLIER
        .replacen(
            "  \"batches_per_draw\"",
            "  \"added_later\": [1, 2],\n  \"batches_per_draw\"",
            1,
        )
        .replacen(
            "      \"columns\": 3,",
            "      \"columns\": 3,\n      \"new_stat\": 0.5,",
            1,
        );
    write(dir.path(), &later);
    let index = ShardIndex::read(dir.path()).unwrap();
    assert_eq!(index.other["added_later"], serde_json::json!([1, 2]));
    let quora = &index.datasets["quora_duplicates_triplets"];
    assert_eq!(quora.other["new_stat"], 0.5);
    index.write(dir.path()).unwrap();
    let again = ShardIndex::read(dir.path()).unwrap();
    assert_eq!(again, index);
}

#[test]
fn hand_made_indexes_describe_their_shards_as_the_whole_stream() {
    let entry = |i: u64| ShardEntry {
        file: schemas::shard_file_name(i as usize),
        rows: 8,
        first_batch: 2 * i,
        batches: 2,
        sha256: "0".repeat(64),
    };
    let index = ShardIndex::hand_made(4, 9, vec![entry(0), entry(1)], 3);
    assert_eq!((index.steps, index.total_batches()), (4, 4));
    assert!(index.complete);
    assert_eq!(index.tokenizer.pad_token_id, 3);
    let dir = tempfile::tempdir().unwrap();
    index.write(dir.path()).unwrap();
    assert_eq!(ShardIndex::read(dir.path()).unwrap(), index);
}
