//! Curated datasets on disk: same layout as ingest's, atomic, byte-identical on rerun.

use mine::io::{open_pairs, write_dataset, Provenance};
use mine::knn::Index;
use mine::negatives::{NegativeOptions, OutputFormat, Sampling};
use mine::{curate, Mode, SearchOptions};
use schemas::{Manifest, NoProgress};

use crate::common;

fn folder_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn mined_datasets_are_written_whole_and_identical_on_rerun() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let mode = Mode::Negatives(NegativeOptions {
        num_negatives: 2,
        range_max: Some(8),
        sampling: Sampling::Random,
        seed: 3,
        output_format: OutputFormat::Triplet,
        ..Default::default()
    });
    let mut prov = Provenance::default();
    prov.options
        .insert("mode".into(), serde_json::to_value(&mode).unwrap());
    let out_root = tempfile::tempdir().unwrap();
    let out = out_root.path().join("squad_mined");
    let mut bytes = Vec::new();
    for _ in 0..2 {
        let c = curate(
            &embedder,
            &fx.records,
            None,
            &mode,
            SearchOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let m = write_dataset(&out, &c, &fx.records, &prov).unwrap();
        assert_eq!(m.rows, c.len() as u64);
        assert_eq!(m.columns, schemas::Arity::Triplet);
        assert_eq!(m.source, "mine");
        assert_eq!(m.dataset, "squad_mined");
        bytes.push(folder_bytes(&out));
    }
    assert_eq!(
        bytes[0], bytes[1],
        "same inputs and seed: byte-identical dataset"
    );
    let back = schemas::DatasetReader::open(&out)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(back.len() as u64, Manifest::read(&out).unwrap().rows);
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.options["mode"]["num_negatives"], 2);
    assert!(m.options["counts"]["anchors"].as_u64().unwrap() > 0);
    let leftovers: Vec<_> = std::fs::read_dir(out_root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_run_that_keeps_nothing_fails_and_leaves_the_earlier_dataset() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let out_root = tempfile::tempdir().unwrap();
    let out = out_root.path().join("squad_mined");
    let ok = curate(
        &embedder,
        &fx.records,
        None,
        &Mode::Consistency { top_k: 3 },
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    write_dataset(&out, &ok, &fx.records, &Provenance::default()).unwrap();
    let before = folder_bytes(&out);
    // min_score above any cosine: no candidate survives, no row is written.
    let none = Mode::Negatives(NegativeOptions {
        min_score: Some(1.5),
        ..Default::default()
    });
    let empty = curate(
        &embedder,
        &fx.records,
        None,
        &none,
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(empty.is_empty());
    let err = write_dataset(&out, &empty, &fx.records, &Provenance::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no rows left") && err.contains("no negative candidate left"),
        "{err}"
    );
    assert_eq!(folder_bytes(&out), before, "earlier output untouched");
}

#[test]
fn reading_a_folder_without_parts_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_pairs(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("not a pairs dataset"),
        "{err}"
    );
}

#[test]
fn the_hnsw_index_writes_the_exact_searchs_dataset_on_a_small_fixture() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let mode = Mode::Negatives(NegativeOptions {
        num_negatives: 2,
        ..Default::default()
    });
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("squad_mined");
    let hnsw = Index::Hnsw {
        ef_construction: 200,
        ef_search: 128,
        shard_size: 0,
    };
    let mut bytes = Vec::new();
    for index in [Index::Exact, hnsw] {
        let search = SearchOptions {
            index,
            ..Default::default()
        };
        let c = curate(&embedder, &fx.records, None, &mode, search, &NoProgress).unwrap();
        write_dataset(&out, &c, &fx.records, &Provenance::default()).unwrap();
        bytes.push(folder_bytes(&out));
    }
    // A graph over a few dozen candidates finds every true neighbour, and its hits are
    // re-scored by the exact search's product: the same negatives, the same bytes.
    assert_eq!(bytes[0], bytes[1]);
}

#[test]
fn a_spilling_run_with_a_tiny_memory_budget_writes_the_same_bytes_in_every_mode() {
    let Some((fx, mut embedder)) = common::squad_and_model() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("curated");
    let spill = root.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let roomy = SearchOptions {
        query_block: 4,
        corpus_block: 8,
        ..Default::default()
    };
    // One byte: every text and vector spills, and each search holds one query block at a time.
    let tiny = SearchOptions { memory: 1, ..roomy };
    let modes = [
        Mode::Negatives(NegativeOptions {
            num_negatives: 2,
            ..Default::default()
        }),
        Mode::Consistency { top_k: 2 },
        Mode::Dedup {
            threshold: 0.75,
            on: mine::DedupOn::Positive,
        },
    ];
    for mode in &modes {
        let mut bytes = Vec::new();
        for (search, spill_dir) in [(roomy, None), (tiny, Some(spill.clone()))] {
            embedder.spill_dir = spill_dir;
            let c = curate(&embedder, &fx.records, None, mode, search, &NoProgress).unwrap();
            write_dataset(&out, &c, &fx.records, &Provenance::default()).unwrap();
            bytes.push(folder_bytes(&out));
        }
        assert_eq!(bytes[0], bytes[1], "{mode:?}");
        assert_eq!(
            std::fs::read_dir(&spill).unwrap().count(),
            0,
            "nothing left"
        );
    }
    // The spill really happens, texts first: a folder that cannot take it is named in the error.
    embedder.spill_dir = Some(root.path().join("missing"));
    let err = curate(&embedder, &fx.records, None, &modes[0], tiny, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing") && err.contains("-texts"), "{err}");
}
