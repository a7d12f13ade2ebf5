//! Consistency filter and semantic dedup on real fixtures with the real model.

use mine::embed::dot;
use mine::filter::{dedup_texts, keep_distinct, positive_ranks};
use mine::knn::{top_k, SearchOptions};
use mine::{curate, DedupOn, Mode, Problem, TextStore};
use schemas::NoProgress;

use crate::common;

#[test]
fn consistency_keeps_exactly_the_rows_whose_positive_ranks_in_the_top_k() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    let emb = embedder.embed(&p.texts, &NoProgress).unwrap();
    let full = top_k(
        &emb,
        &p.queries,
        0..p.corpus_len,
        p.corpus_len,
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    for k in [1, 3] {
        let ranks = positive_ranks(
            &p,
            &emb,
            k,
            SearchOptions {
                query_block: 5,
                corpus_block: 3,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        for (row, &rank) in ranks.iter().enumerate() {
            // Brute force: other texts (not positives of this anchor) scoring above the positive.
            let q = p.row_query[row] as usize;
            let pos = p.row_positive[row];
            let s = full[q].iter().find(|h| h.index == pos).unwrap().score;
            let above = full[q]
                .iter()
                .filter(|h| h.score > s && !p.positives[q].contains(&h.index))
                .count();
            assert_eq!(
                rank < k,
                above < k,
                "row {row}: rank {rank}, {above} above, k {k}"
            );
        }
    }
    let run = |k| {
        curate(
            &embedder,
            &fx.records,
            None,
            &Mode::Consistency { top_k: k },
            SearchOptions::default(),
            &NoProgress,
        )
        .unwrap()
    };
    let (k1, k3, all) = (run(1), run(3), run(p.corpus_len));
    assert!(k1.len() < k3.len(), "a wider top keeps more");
    assert!(
        {
            let k3 = k3.records(&fx.records).unwrap();
            k1.records(&fx.records)
                .unwrap()
                .iter()
                .all(|r| k3.contains(r))
        },
        "K=1 keeps a subset of K=3"
    );
    assert_eq!(
        all.records(&fx.records).unwrap(),
        fx.records,
        "top-k over the whole corpus keeps every row"
    );
    for out in [&k1, &k3] {
        let dropped: u64 = out.dropped.values().sum();
        assert_eq!(out.len() as u64 + dropped, fx.records.len() as u64);
        assert!(
            dropped > 0,
            "real data has pairs the model cannot match: {:?}",
            out.dropped
        );
    }
}

#[test]
fn dedup_keeps_no_two_close_texts_and_drops_only_close_ones() {
    let Some(fx) = common::amazon() else { return };
    let Some(embedder) = common::embedder() else {
        return;
    };
    let d = dedup_texts(&fx.records, DedupOn::Anchor, TextStore::in_memory()).unwrap();
    let (table, ids) = (d.texts, d.ids);
    assert!(
        table.len() < fx.records.len(),
        "the fixture repeats questions"
    );
    let emb = embedder.embed(&table, &NoProgress).unwrap();
    let t = 0.8;
    let keep = keep_distinct(
        &emb,
        t,
        SearchOptions {
            query_block: 4,
            corpus_block: 3,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let kept: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    for (a, &i) in kept.iter().enumerate() {
        for &j in &kept[..a] {
            assert!(
                dot(emb.row(i), emb.row(j)) < t + 1e-5,
                "kept {j} and {i} are close"
            );
        }
    }
    for i in (0..keep.len()).filter(|&i| !keep[i]) {
        let close = kept
            .iter()
            .filter(|&&j| j < i)
            .any(|&j| dot(emb.row(i), emb.row(j)) >= t - 1e-5);
        assert!(close, "text {i} dropped without a close earlier kept text");
    }
    assert!(kept.len() < table.len(), "some near-duplicates at {t}");
    assert_eq!(
        keep,
        keep_distinct(&emb, t, SearchOptions::default(), &NoProgress).unwrap(),
        "block sizes do not matter"
    );

    let out = curate(
        &embedder,
        &fx.records,
        None,
        &Mode::Dedup {
            threshold: t,
            on: DedupOn::Anchor,
        },
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let exact = out
        .dropped
        .get("exact duplicate anchor")
        .copied()
        .unwrap_or(0);
    let near = out
        .dropped
        .get("near-duplicate anchor")
        .copied()
        .unwrap_or(0);
    assert_eq!(out.len(), kept.len(), "one row per kept text");
    assert_eq!(exact + near + out.len() as u64, fx.records.len() as u64);
    assert!(exact > 0 && near > 0, "{:?}", out.dropped);
    let _ = ids;
}

#[test]
fn dedup_at_threshold_one_drops_only_exact_copies_and_refuses_bad_thresholds() {
    let Some(fx) = common::amazon() else { return };
    let Some(embedder) = common::embedder() else {
        return;
    };
    let out = curate(
        &embedder,
        &fx.records,
        None,
        &Mode::Dedup {
            threshold: 1.0,
            on: DedupOn::Positive,
        },
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    // At 1.0 only texts that embed identically are duplicates: the same text, or texts the
    // uncased tokenizer turns into the same token ids ("Yes." and "yes.").
    let distinct: std::collections::HashSet<&str> =
        fx.records.iter().map(|r| r.positive.as_str()).collect();
    let texts: Vec<&str> = distinct.iter().copied().collect();
    let ids: std::collections::HashSet<Vec<u32>> = embedder
        .encoder
        .tokenize(&texts)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(out.len(), ids.len(), "{:?}", out.dropped);
    assert!(
        ids.len() < distinct.len(),
        "the fixture has case-only variants"
    );
    for t in [1.5, -1.0, f32::NAN] {
        let err = curate(
            &embedder,
            &fx.records,
            None,
            &Mode::Dedup {
                threshold: t,
                on: DedupOn::Anchor,
            },
            SearchOptions::default(),
            &NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--threshold"), "{err}");
    }
}

#[test]
fn dedup_in_groups_over_spilled_vectors_keeps_what_dedup_in_memory_keeps() {
    let Some(fx) = common::amazon() else { return };
    let Some(embedder) = common::embedder() else {
        return;
    };
    let table = dedup_texts(&fx.records, DedupOn::Anchor, TextStore::in_memory())
        .unwrap()
        .texts;
    let dir = tempfile::tempdir().unwrap();
    let raw = embedder.embed(&table, &NoProgress).unwrap();
    let (emb, spilled) = crate::knn::both_stores(&raw, dir.path());
    let roomy = SearchOptions {
        query_block: 4,
        corpus_block: 3,
        ..Default::default()
    };
    for t in [0.6, 0.8] {
        let want = keep_distinct(&emb, t, roomy, &NoProgress).unwrap();
        assert!(want.iter().any(|k| !k), "some near-duplicates at {t}");
        // Groups of one query block: kept chunks fill up and are read back between groups.
        for memory in [1, 256 << 10] {
            let tight = SearchOptions { memory, ..roomy };
            for (name, v) in [
                ("in memory", &emb as &dyn mine::Vectors),
                ("spilled", &spilled),
            ] {
                let got = keep_distinct(v, t, tight, &NoProgress).unwrap();
                assert_eq!(got, want, "{name}, threshold {t}, memory {memory}");
            }
        }
    }
}
