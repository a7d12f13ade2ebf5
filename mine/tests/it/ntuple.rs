//! `--num-negatives N --output-format n-tuple` (the default): one row per input row with N
//! negative columns, the same negatives the triplet format spreads over N rows.

use mine::io::{write_dataset, Provenance};
use mine::negatives::{NegativeOptions, OutputFormat};
use mine::{curate, Curated, Mode, SearchOptions};
use parquet::file::reader::{FileReader, SerializedFileReader};
use schemas::{Arity, Manifest, NoProgress, PairRecord};

use crate::common;

fn mined(fx: &common::Fixture, e: &mine::Embedder<'_>, format: OutputFormat) -> Curated {
    let o = NegativeOptions {
        num_negatives: 3,
        output_format: format,
        ..Default::default()
    };
    let mode = Mode::Negatives(o);
    curate(
        e,
        &fx.records,
        None,
        &mode,
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap()
}

#[test]
fn three_negatives_become_three_columns_on_the_squad_fixture() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let tuples = mined(&fx, &embedder, OutputFormat::NTuple);
    let triplets = mined(&fx, &embedder, OutputFormat::Triplet);
    assert_eq!(tuples.arity, Arity::with_negatives(3));
    assert_eq!(triplets.arity, Arity::Triplet);
    let dropped: u64 = tuples.dropped.values().sum();
    assert_eq!(tuples.len() as u64 + dropped, fx.records.len() as u64);
    assert!(tuples.len() > fx.records.len() / 2, "{:?}", tuples.dropped);

    // Row by row, the n-tuple's negatives are the triplet rows' negatives, best first.
    let mut positives: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for r in &fx.records {
        positives.entry(&r.anchor).or_default().push(&r.positive);
    }
    let triplet_rows: Vec<PairRecord> = triplets.records(&fx.records).unwrap();
    let mut at = 0;
    for r in tuples.records(&fx.records).unwrap() {
        let negs: Vec<&String> = r.negatives().collect();
        assert_eq!(negs.len(), 3);
        while triplet_rows[at].anchor != r.anchor || triplet_rows[at].positive != r.positive {
            at += 1;
        }
        let spread: Vec<&String> = triplet_rows[at..at + 3]
            .iter()
            .map(|t| t.negative.as_ref().unwrap())
            .collect();
        assert_eq!(negs, spread, "anchor {:?}", r.anchor);
        at += 3;
        let distinct: std::collections::HashSet<_> = negs.iter().collect();
        assert_eq!(distinct.len(), 3, "three different negatives");
        for n in negs {
            assert!(!positives[r.anchor.as_str()].contains(&n.as_str()));
            assert_ne!(n, &r.anchor);
        }
    }

    // On disk: manifest says 5 columns, the part file has negative, negative_2, negative_3.
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("squad_hn3");
    let m = write_dataset(&out, &tuples, &fx.records, &Provenance::default()).unwrap();
    assert_eq!((m.columns.columns(), m.columns.negatives()), (5, 3));
    assert_eq!(Manifest::read(&out).unwrap().columns, m.columns);
    let back = schemas::DatasetReader::open(&out)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(back, tuples.records(&fx.records).unwrap());
    let part = schemas::part_files(&out).unwrap().remove(0);
    let file = SerializedFileReader::new(std::fs::File::open(part).unwrap()).unwrap();
    let names: Vec<String> = file
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
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
fn one_negative_is_a_triplet_in_either_format() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let one = |format| {
        let o = NegativeOptions {
            output_format: format,
            ..Default::default()
        };
        let mode = Mode::Negatives(o);
        curate(
            &embedder,
            &fx.records,
            None,
            &mode,
            SearchOptions::default(),
            &NoProgress,
        )
        .unwrap()
    };
    let (a, b) = (one(OutputFormat::NTuple), one(OutputFormat::Triplet));
    assert_eq!(a.arity, Arity::Triplet);
    assert_eq!(
        a.records(&fx.records).unwrap(),
        b.records(&fx.records).unwrap()
    );
    assert_eq!(a.dropped, b.dropped);
}
