//! The shard reader: whole batches whatever the row groups, ids only, errors naming the file.

use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use schemas::shards::shard_record_batch;
use schemas::{ShardBatch, ShardReader, ShardRow};

fn rows(batch: u64, n: u32, triplet: bool) -> Vec<ShardRow> {
    (0..n)
        .map(|i| ShardRow {
            batch,
            dataset: if triplet { "quora" } else { "squad" }.into(),
            anchor_ids: vec![101, 1000 + i, 102],
            positive_ids: vec![101, 2000 + i, 2001 + i, 102],
            negative_ids: triplet.then(|| vec![101, 3000 + i, 102]),
            anchor: Some(format!("a{batch}-{i}")),
            positive: Some(format!("p{batch}-{i}")),
            negative: triplet.then(|| format!("n{batch}-{i}")),
            ..Default::default()
        })
        .collect()
}

/// Writes `rows` as one file with row groups of `group` rows (not one per batch).
fn write(path: &std::path::Path, rows: &[ShardRow], group: usize) {
    let rb = shard_record_batch(rows, true).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, rb.schema(), Some(props)).unwrap();
    w.write(&rb).unwrap();
    w.close().unwrap();
}

#[test]
fn batches_come_back_whole_across_row_groups_and_owned_or_borrowed_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let all = [rows(4, 4, false), rows(5, 4, true), rows(6, 4, false)].concat();
    write(&path, &all, 3);
    let r = ShardReader::open(&path).unwrap();
    assert_eq!(r.row_groups(), &[3, 3, 3, 3]);
    assert_eq!(r.read_rows().unwrap(), all, "texts included");
    let got: Vec<ShardBatch> = r.batches().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.iter().map(|b| b.batch).collect::<Vec<_>>(), [4, 5, 6]);
    assert!(got.iter().all(|b| b.len() == 4));
    assert_eq!(
        got[1].negative_ids.as_ref().unwrap()[3],
        vec![101, 3003, 102]
    );
    assert_eq!(got[2].positive_ids[0], vec![101, 2000, 2001, 102]);
    let owned: Vec<ShardBatch> = ShardReader::open(&path)
        .unwrap()
        .into_batches()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(owned, got);
}

#[test]
fn a_batch_mixing_datasets_or_arities_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00001.parquet");
    let mut bad = rows(2, 4, false);
    bad[2].dataset = "eli5".into();
    write(&path, &bad, 8);
    let err = ShardReader::open(&path)
        .unwrap()
        .batches()
        .find_map(Result::err)
        .expect("refused")
        .to_string();
    assert!(
        err.contains("shard-00001.parquet") && err.contains("mixes datasets"),
        "{err}"
    );

    let mut bad = rows(2, 4, true);
    bad[3].negative_ids = None;
    write(&path, &bad, 8);
    let results: Vec<_> = ShardReader::open(&path).unwrap().batches().collect();
    assert_eq!(results.len(), 1, "nothing after the error");
    let err = results[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("mixes pairs and triplets"), "{err}");

    // Not a shard at all: named at open.
    std::fs::write(&path, b"not parquet").unwrap();
    let err = ShardReader::open(&path).err().unwrap().to_string();
    assert!(err.contains("shard-00001.parquet"), "{err}");
}
