//! Several negative columns: pairs files and shards round trip them, and 2- and 3-column files
//! keep the schema they always had.

use schemas::shards::{shard_schema, shard_schema_for, ShardWriterOptions};
use schemas::{
    pairs_schema, pairs_schema_for, part_files, Arity, DatasetWriter, Manifest, PairReader,
    PairRecord, PairWriterOptions, ShardBatch, ShardReader, ShardRow, ShardWriter,
};

fn record(i: usize, negatives: usize) -> PairRecord {
    let negs = (0..negatives).map(|k| format!("neg {k} of {i}")).collect();
    PairRecord::with_negatives(format!("question {i}"), format!("answer {i}"), negs)
        .with_id(i.to_string())
}

#[test]
fn arity_counts_negatives_and_serializes_as_columns() {
    assert_eq!(Arity::with_negatives(0), Arity::Pair);
    assert_eq!(Arity::with_negatives(1), Arity::Triplet);
    let five = Arity::with_negatives(3);
    assert_eq!((five.columns(), five.negatives()), (5, 3));
    assert_eq!(serde_json::to_string(&five).unwrap(), "5");
    assert_eq!(serde_json::from_str::<Arity>("3").unwrap(), Arity::Triplet);
    let err = serde_json::from_str::<Arity>("1").unwrap_err().to_string();
    assert!(err.contains("not 1"), "{err}");
    assert_eq!(record(0, 3).arity(), five);
    assert_eq!(record(0, 3).texts().count(), 5);
}

#[test]
fn pair_and_triplet_schemas_are_unchanged() {
    assert_eq!(pairs_schema_for(Arity::Pair), pairs_schema());
    assert_eq!(pairs_schema_for(Arity::Triplet), pairs_schema());
    assert_eq!(shard_schema_for(false, 0), shard_schema(false));
    assert_eq!(shard_schema_for(true, 1), shard_schema(true));
    let names: Vec<String> = pairs_schema_for(Arity::with_negatives(3))
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let want = [
        "anchor",
        "positive",
        "negative",
        "source_id",
        "negative_2",
        "negative_3",
    ];
    assert_eq!(names, want);
}

#[test]
fn a_dataset_of_three_negatives_round_trips_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("squad_hn");
    let opts = PairWriterOptions {
        row_group_rows: 4,
        rows_per_file: 8,
        zstd_level: 1,
    };
    let arity = Arity::with_negatives(3);
    let mut w = DatasetWriter::create(&target, "squad_hn", "mine", arity, opts).unwrap();
    let recs: Vec<PairRecord> = (0..11).map(|i| record(i, 3)).collect();
    for r in &recs {
        w.push(r).unwrap();
    }
    let err = w.push(&record(99, 2)).unwrap_err().to_string();
    assert!(err.contains("4 columns written to a 5-column"), "{err}");
    let m = w.finish().unwrap();
    assert_eq!((m.columns, m.rows), (arity, 11));
    let json = std::fs::read_to_string(target.join("manifest.json")).unwrap();
    assert!(json.contains("\"columns\": 5"), "{json}");
    assert_eq!(Manifest::read(&target).unwrap(), m);
    let mut back = Vec::new();
    for f in part_files(&target).unwrap() {
        for r in PairReader::open(&f).unwrap().records().unwrap() {
            back.push(r.unwrap());
        }
    }
    assert_eq!(back, recs);
}

fn shard_row(batch: u64, i: u32, negatives: usize) -> ShardRow {
    let ids = |k: u32| vec![101, 1000 * k + i, 102];
    ShardRow {
        batch,
        dataset: format!("d{negatives}"),
        anchor_ids: ids(1),
        positive_ids: ids(2),
        negative_ids: (negatives > 0).then(|| ids(3)),
        extra_negative_ids: (1..negatives).map(|k| ids(3 + k as u32)).collect(),
        anchor: Some(format!("a{i}")),
        positive: Some(format!("p{i}")),
        negative: (negatives > 0).then(|| format!("n{i}")),
        extra_negatives: (1..negatives).map(|k| format!("n{k}-{i}")).collect(),
    }
}

#[test]
fn a_shard_holds_batches_of_different_negative_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let options = ShardWriterOptions {
        batch_size: 3,
        keep_text: true,
    };
    let batches: Vec<Vec<ShardRow>> = [0, 3, 1, 2]
        .iter()
        .enumerate()
        .map(|(b, &n)| (0..3).map(|i| shard_row(b as u64, i, n)).collect())
        .collect();
    let mut w = ShardWriter::create_for(&path, options, 3).unwrap();
    for b in &batches {
        w.write_batch(b).unwrap();
    }
    let err = w
        .write_batch(&[shard_row(9, 0, 4)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shard-00000.parquet") && err.contains("4 negative columns"),
        "{err}"
    );
    w.finish().unwrap();
    let r = ShardReader::open(&path).unwrap();
    assert_eq!(r.read_rows().unwrap(), batches.concat());
    let got: Vec<ShardBatch> = r.batches().collect::<Result<_, _>>().unwrap();
    let counts: Vec<usize> = got
        .iter()
        .map(|b| b.clone().into_negative_columns().len())
        .collect();
    assert_eq!(counts, [0, 3, 1, 2]);
    assert_eq!(got[1].extra_negative_ids[1][2], vec![101, 5002, 102]);

    // One shard written with the old one-negative layout refuses a 3-negative row.
    let old = dir.path().join("shard-00001.parquet");
    let mut w = ShardWriter::create(&old, options).unwrap();
    assert!(w.write_batch(&batches[1]).is_err());
}

#[test]
fn more_negative_columns_than_a_dataset_may_have_are_refused_naming_the_file() {
    use std::sync::Arc;
    let names: Vec<String> = ["anchor".to_owned(), "positive".to_owned()]
        .into_iter()
        .chain((0..=Arity::MAX_NEGATIVES).map(schemas::negative_column))
        .collect();
    let fields: Vec<arrow_schema::Field> = names
        .iter()
        .map(|n| arrow_schema::Field::new(n, arrow_schema::DataType::Utf8, false))
        .collect();
    let columns: Vec<arrow_array::ArrayRef> = names
        .iter()
        .map(|n| Arc::new(arrow_array::StringArray::from(vec![n.as_str()])) as _)
        .collect();
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let batch = arrow_array::RecordBatch::try_new(schema, columns).unwrap();
    let path = std::path::Path::new("wide/part-00000.parquet");
    let err = schemas::records_from_batch(path, &batch, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wide/part-00000.parquet") && err.contains("more than 64"),
        "{err}"
    );
}
