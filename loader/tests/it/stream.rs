//! The loader against shards written the way the mixer writes them: order, padding, resume,
//! rank slicing and checksum failures.

use std::path::Path;

use loader::{Loader, LoaderOptions, LoaderState, RawBatch};
use parquet::arrow::ArrowWriter;
use schemas::{ShardEntry, ShardIndex, ShardRow};

const BATCH: usize = 4;

/// Deterministic token ids for batch `b`, row `r`, column `c`, of varying length.
fn toks(b: u64, r: usize, c: u32) -> Vec<u32> {
    let len = 1 + ((b as usize * 7 + r * 3 + c as usize) % 6);
    (0..len as u32)
        .map(|i| 100 + b as u32 * 1000 + r as u32 * 10 + c * 100_000 + i)
        .collect()
}

/// Negative columns of the shards in these tests: the most any batch has.
const NEGATIVES: usize = 3;

/// Batches 0..n: even batches are pairs of `squad`, batches 1, 5, 9 .. triplets of `quora`,
/// batches 3, 7, .. rows of `NEGATIVES` negatives of `squad_hn3` (a mined n-tuple dataset).
fn expected(n: u64) -> Vec<RawBatch> {
    (0..n)
        .map(|b| {
            let (dataset, negatives) = match b % 4 {
                1 => ("quora", 1),
                3 => ("squad_hn3", NEGATIVES),
                _ => ("squad", 0),
            };
            RawBatch {
                index: b,
                dataset: dataset.into(),
                anchor: (0..BATCH).map(|r| toks(b, r, 0)).collect(),
                positive: (0..BATCH).map(|r| toks(b, r, 1)).collect(),
                negatives: (0..negatives)
                    .map(|k| (0..BATCH).map(|r| toks(b, r, 2 + k as u32)).collect())
                    .collect(),
            }
        })
        .collect()
}

/// Row `r` of batch `b` as the mixer writes it (ids only).
fn shard_row(b: &RawBatch, r: usize) -> ShardRow {
    let mut negatives = b.negatives.iter().map(|n| n[r].clone());
    ShardRow {
        batch: b.index,
        dataset: b.dataset.clone(),
        anchor_ids: b.anchor[r].clone(),
        positive_ids: b.positive[r].clone(),
        negative_ids: negatives.next(),
        extra_negative_ids: negatives.collect(),
        ..Default::default()
    }
}

fn write_shards(dir: &Path, batches: &[RawBatch], per_shard: usize) -> ShardIndex {
    // The mixer's own schema, so the loader is tested against what it will really read.
    let schema = schemas::shards::shard_schema_for(false, NEGATIVES);
    let mut shards = Vec::new();
    for (i, chunk) in batches.chunks(per_shard).enumerate() {
        let file = format!("shard-{i:05}.parquet");
        let mut rows_out = Vec::new();
        for b in chunk {
            for r in 0..b.anchor.len() {
                rows_out.push(shard_row(b, r));
            }
        }
        let rows = rows_out.len() as u64;
        let rb = schemas::shards::shard_record_batch_for(&rows_out, false, NEGATIVES).unwrap();
        let path = dir.join(&file);
        // Small row groups so batches straddle record-batch boundaries inside the reader.
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(3))
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema.clone(),
            Some(props),
        )
        .unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        shards.push(ShardEntry {
            file,
            rows,
            first_batch: chunk[0].index,
            batches: chunk.len() as u64,
            sha256: schemas::sha256_file(&path).unwrap(),
        });
    }
    let index = ShardIndex::hand_made(BATCH as u64, 1, shards, 7);
    assert_eq!(index.steps, batches.len() as u64);
    index.write(dir).unwrap();
    index
}

fn unpad(ids: &candle_core::Tensor, mask: &candle_core::Tensor) -> Vec<Vec<u32>> {
    let ids = ids.to_vec2::<u32>().unwrap();
    let mask = mask.to_vec2::<u32>().unwrap();
    ids.iter()
        .zip(&mask)
        .map(|(i, m)| {
            i.iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(i, _)| *i)
                .collect()
        })
        .collect()
}

#[test]
fn streams_every_batch_in_order_padded() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected(10);
    write_shards(dir.path(), &want, 3);
    let got: Vec<_> = Loader::open(
        dir.path(),
        LoaderState::default(),
        &LoaderOptions::default(),
    )
    .unwrap()
    .map(|b| b.unwrap())
    .collect();
    assert_eq!(got.len(), 10);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.index, w.index);
        assert_eq!(g.dataset, w.dataset);
        assert_eq!(unpad(&g.anchor.ids, &g.anchor.mask), w.anchor);
        assert_eq!(unpad(&g.positive.ids, &g.positive.mask), w.positive);
        assert_eq!(g.negatives.len(), w.negatives.len(), "batch {}", g.index);
        for (c, n) in g.negatives.iter().zip(&w.negatives) {
            assert_eq!(&unpad(&c.ids, &c.mask), n);
            // Each negative column padded to its own longest row.
            let longest = n.iter().map(Vec::len).max().unwrap();
            assert_eq!(c.ids.dims(), &[BATCH, longest]);
        }
        // Padded to the longest row of this column, with the index's pad id.
        let longest = w.anchor.iter().map(Vec::len).max().unwrap();
        assert_eq!(g.anchor.ids.dims(), &[BATCH, longest]);
        let ids = g.anchor.ids.to_vec2::<u32>().unwrap();
        let mask = g.anchor.mask.to_vec2::<u32>().unwrap();
        for (row, m) in ids.iter().zip(&mask) {
            for (i, m) in row.iter().zip(m) {
                if *m == 0 {
                    assert_eq!(*i, 7);
                }
            }
        }
    }
    assert_eq!(got.last().unwrap().next.batch, 10);
}

#[test]
fn resumes_exactly_from_any_position() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected(10);
    write_shards(dir.path(), &want, 3);
    let opts = LoaderOptions::default();
    let full: Vec<_> = Loader::open(dir.path(), LoaderState::default(), &opts)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    // Stop after k batches (inside a shard and at shard ends), resume from the saved state.
    for k in [1usize, 2, 3, 5, 9] {
        let mut first = Loader::open(dir.path(), LoaderState::default(), &opts).unwrap();
        let mut state = LoaderState::default();
        for _ in 0..k {
            state = first.next().unwrap().unwrap().next;
        }
        assert_eq!(first.state(), state);
        drop(first);
        let state: LoaderState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let rest: Vec<_> = Loader::open(dir.path(), state, &opts)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(rest.len(), 10 - k, "resume after {k}");
        for (r, f) in rest.iter().zip(&full[k..]) {
            assert_eq!(r.index, f.index);
            assert_eq!(
                r.anchor.ids.to_vec2::<u32>().unwrap(),
                f.anchor.ids.to_vec2::<u32>().unwrap()
            );
            assert_eq!(r.next, f.next);
        }
    }
}

#[test]
fn ranks_get_disjoint_deterministic_slices() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected(6);
    write_shards(dir.path(), &want, 4);
    for world in [2usize, 3, 4] {
        let per_rank: Vec<Vec<RawBatch>> = (0..world)
            .map(|rank| {
                loader::raw_batches(
                    dir.path(),
                    &schemas::ShardIndex::read(dir.path()).unwrap(),
                    LoaderState::default(),
                    rank,
                    world,
                    true,
                )
                .map(|b| b.unwrap())
                .collect()
            })
            .collect();
        for (b, w) in want.iter().enumerate() {
            // Concatenating the ranks' slices in rank order gives the global batch back.
            let mut anchors = Vec::new();
            let mut negatives = vec![Vec::new(); w.negatives.len()];
            for rank in &per_rank {
                assert_eq!(rank[b].index, w.index);
                assert_eq!(rank[b].dataset, w.dataset);
                anchors.extend(rank[b].anchor.clone());
                // Every negative column sliced to the same rows as the anchors.
                assert_eq!(rank[b].negatives.len(), w.negatives.len());
                for (all, mine) in negatives.iter_mut().zip(&rank[b].negatives) {
                    assert_eq!(mine.len(), rank[b].anchor.len());
                    all.extend(mine.clone());
                }
            }
            assert_eq!(anchors, w.anchor, "world {world} batch {b}");
            assert_eq!(negatives, w.negatives, "world {world} batch {b}");
        }
        // Same slice on a second read.
        let again: Vec<RawBatch> = loader::raw_batches(
            dir.path(),
            &schemas::ShardIndex::read(dir.path()).unwrap(),
            LoaderState::default(),
            world - 1,
            world,
            true,
        )
        .map(|b| b.unwrap())
        .collect();
        assert_eq!(again, per_rank[world - 1]);
    }
    // Through the tensor loader too.
    let opts = LoaderOptions {
        rank: 1,
        world_size: 2,
        ..Default::default()
    };
    let b = Loader::open(dir.path(), LoaderState::default(), &opts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        unpad(&b.anchor.ids, &b.anchor.mask),
        want[0].anchor[2..4].to_vec()
    );
}

/// Every batch the loader yields from `dir`, unpadded.
fn stream(dir: &Path) -> Vec<RawBatch> {
    Loader::open(dir, LoaderState::default(), &LoaderOptions::default())
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            RawBatch {
                index: b.index,
                dataset: b.dataset.clone(),
                anchor: unpad(&b.anchor.ids, &b.anchor.mask),
                positive: unpad(&b.positive.ids, &b.positive.mask),
                negatives: b.negatives.iter().map(|n| unpad(&n.ids, &n.mask)).collect(),
            }
        })
        .collect()
}

#[test]
fn keep_text_shards_stream_the_same_batches_and_their_texts_are_never_decoded() {
    let want = expected(6);
    // The mixer's `--keep-text` layout, through the contract's writer.
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    for (i, chunk) in want.chunks(4).enumerate() {
        let options = schemas::ShardWriterOptions {
            batch_size: BATCH,
            keep_text: true,
        };
        let path = dir.path().join(schemas::shard_file_name(i));
        let mut w = schemas::ShardWriter::create_for(path, options, NEGATIVES).unwrap();
        for b in chunk {
            let rows: Vec<ShardRow> = (0..BATCH)
                .map(|r| {
                    let texts = (0..b.negatives.len()).map(|k| format!("other {k} {r}"));
                    let mut texts = texts.collect::<Vec<_>>().into_iter();
                    ShardRow {
                        anchor: Some(format!("question {} {r}", b.index)),
                        positive: Some(format!("answer {} {r}", b.index)),
                        negative: texts.next(),
                        extra_negatives: texts.collect(),
                        ..shard_row(b, r)
                    }
                })
                .collect();
            w.write_batch(&rows).unwrap();
        }
        entries.push(w.finish().unwrap());
    }
    ShardIndex::hand_made(BATCH as u64, 1, entries, 7)
        .write(dir.path())
        .unwrap();
    assert_eq!(stream(dir.path()), want);

    // Proof that only the id columns are read: the text columns' bytes overwritten with junk
    // (any reader decoding the texts fails on them), the stream is unchanged.
    let mut index = ShardIndex::read(dir.path()).unwrap();
    for entry in &mut index.shards {
        let path = dir.path().join(&entry.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let meta =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
                .unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&meta).clone();
        for rg in meta.row_groups() {
            for col in rg.columns() {
                let name = col.column_path().string();
                // The text columns: anchor, positive, negative, negative_2, ... (not `*_ids`).
                let text = name == "anchor" || name == "positive" || name.starts_with("negative");
                if text && !name.contains("_ids") {
                    let (start, len) = col.byte_range();
                    bytes[start as usize..(start + len) as usize].fill(0xA5);
                }
            }
        }
        std::fs::write(&path, bytes).unwrap();
        entry.sha256 = schemas::sha256_file(&path).unwrap();
        let err = schemas::ShardReader::open(&path)
            .unwrap()
            .read_rows()
            .expect_err("the texts no longer decode")
            .to_string();
        assert!(err.contains(&entry.file), "{err}");
    }
    index.write(dir.path()).unwrap();
    assert_eq!(stream(dir.path()), want);
}

#[test]
fn a_missing_or_misspelt_pad_token_id_fails_naming_index_json_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), &expected(4), 2);
    let path = dir.path().join("index.json");
    let good = std::fs::read_to_string(&path).unwrap();
    assert_eq!(good.matches("\"pad_token_id\": 7").count(), 1);
    for bad in [
        good.replace("\"pad_token_id\"", "\"pad_tokn_id\""),
        good.replace("\"pad_token_id\": 7,", ""),
    ] {
        std::fs::write(&path, bad).unwrap();
        let err = Loader::open(
            dir.path(),
            LoaderState::default(),
            &LoaderOptions::default(),
        )
        .err()
        .expect("no pad id, no stream (never a silent 0)");
        match &err {
            loader::LoaderError::Schema(schemas::SchemaError::MissingKey {
                path: p, key, ..
            }) => {
                assert_eq!((p, key.as_str()), (&path, "pad_token_id"));
            }
            other => panic!("not a missing-key error: {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("index.json") && msg.contains("`pad_token_id`"),
            "{msg}"
        );
    }
}

/// Flips a byte of the first page (not the footer, which fast verification reads).
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[6] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_shards_fail_at_open_before_any_batch_naming_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = write_shards(dir.path(), &expected(8), 2);
    // One shard's recorded hash no longer matches, another's bytes changed: both far from the
    // start, so a lazy check would have yielded the batches before them first.
    index.shards[2].sha256 = "0".repeat(64);
    index.write(dir.path()).unwrap();
    flip_byte(&dir.path().join("shard-00003.parquet"));
    let err = Loader::open(
        dir.path(),
        LoaderState::default(),
        &LoaderOptions::default(),
    )
    .err()
    .expect("open refuses damaged shards");
    let msg = err.to_string();
    assert!(msg.contains("2 shard(s) do not match"), "{msg}");
    for f in ["shard-00002.parquet", "shard-00003.parquet"] {
        assert!(msg.contains(f), "{msg}");
    }
    assert!(msg.contains("sha256"), "{msg}");

    // Stopping before the damaged shards: only the shards read are verified.
    let opts = LoaderOptions {
        end_batch: Some(4),
        ..Default::default()
    };
    let got: Vec<u64> = Loader::open(dir.path(), LoaderState::default(), &opts)
        .unwrap()
        .map(|b| b.unwrap().index)
        .collect();
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn fast_verify_checks_footers_up_front_and_hashes_the_rest_when_reached() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), &expected(8), 2);
    let fast = LoaderOptions {
        verify: loader::Verify::Fast,
        ..Default::default()
    };
    // A truncated middle shard: its footer is gone, caught at open.
    let path = dir.path().join("shard-00002.parquet");
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let err = Loader::open(dir.path(), LoaderState::default(), &fast)
        .err()
        .expect("truncated shard refused at open")
        .to_string();
    assert!(
        err.contains("shard-00002.parquet") && err.contains("Parquet"),
        "{err}"
    );
    // A byte flipped inside a middle shard keeps its footer: found by its hash when reached,
    // and never yielded.
    std::fs::write(&path, &good).unwrap();
    flip_byte(&dir.path().join("shard-00001.parquet"));
    let results: Vec<_> = Loader::open(dir.path(), LoaderState::default(), &fast)
        .unwrap()
        .collect();
    assert_eq!(
        results.len(),
        3,
        "two good batches, then the error, then nothing"
    );
    assert!(results[0].is_ok() && results[1].is_ok());
    let err = results[2].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("shard-00001.parquet") && err.contains("sha256"),
        "{err}"
    );
    // The default (full) refuses the same folder before the first batch.
    assert!(Loader::open(
        dir.path(),
        LoaderState::default(),
        &LoaderOptions::default()
    )
    .is_err());
}

#[test]
fn rejects_bad_rank_and_resume_state() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), &expected(4), 2);
    let bad = LoaderOptions {
        rank: 2,
        world_size: 2,
        ..Default::default()
    };
    assert!(Loader::open(dir.path(), LoaderState::default(), &bad).is_err());
    let wrong_shard = LoaderState { shard: 0, batch: 3 };
    assert!(Loader::open(dir.path(), wrong_shard, &LoaderOptions::default()).is_err());
}

#[test]
fn dropping_midstream_stops_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), &expected(10), 3);
    let opts = LoaderOptions {
        prefetch: 1,
        ..Default::default()
    };
    let mut l = Loader::open(dir.path(), LoaderState::default(), &opts).unwrap();
    l.next().unwrap().unwrap();
    drop(l); // must return (joins the reader thread) rather than hang on a full channel
}

/// What full verification costs: `PREP_VERIFY_BENCH_MB=1024 cargo test -p loader --test stream
/// -- --ignored --nocapture verify_cost` (files just written, so read from the page cache).
#[test]
#[ignore]
fn verify_cost() {
    let mb: u64 = std::env::var("PREP_VERIFY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let mut shards = Vec::new();
    let per_file = 64u64 << 20;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..(mb << 20).div_ceil(per_file) {
        let bytes: Vec<u8> = (0..per_file)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let file = format!("shard-{i:05}.parquet");
        std::fs::write(dir.path().join(&file), &bytes).unwrap();
        shards.push(ShardEntry {
            sha256: schemas::sha256_file(&dir.path().join(&file)).unwrap(),
            file,
            rows: 1,
            first_batch: i,
            batches: 1,
        });
    }
    let index = ShardIndex::hand_made(1, 0, shards, 0);
    let t = std::time::Instant::now();
    loader::verify_shards(
        dir.path(),
        &index,
        LoaderState::default(),
        index.steps,
        loader::Verify::Full,
        &schemas::NoProgress,
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let gb = (index.steps * per_file) as f64 / 1e9;
    println!(
        "verify full: {gb:.2} GB in {secs:.2} s = {:.2} s per GB ({:.0} MB/s)",
        secs / gb,
        gb * 1e3 / secs
    );
}
