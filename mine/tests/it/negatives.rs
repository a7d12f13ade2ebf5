//! Hard-negative selection on a real fixture with the real model: every rule of
//! `mine_hard_negatives` checked against a brute-force pass over the full ranking.

use mine::embed::{dot, Embeddings};
use mine::knn::{top_k, Hit, SearchOptions};
use mine::negatives::{choose, NegativeOptions, OutputFormat, Sampling};
use mine::{curate, Mode, Problem, TextStore};
use schemas::NoProgress;

use crate::common;

/// What the rules say the negatives of query `q` are, from its full ranking (same scores as the
/// search computes, so ties and rounding agree).
fn expected(
    p: &Problem,
    emb: &Embeddings,
    full: &[Hit],
    q: usize,
    o: &NegativeOptions,
) -> Vec<u32> {
    let range_max = o.effective_range_max(p.max_positives());
    let qv = emb.row(p.queries[q] as usize);
    let pos = &p.positives[q];
    let min_pos = pos
        .iter()
        .map(|&c| dot(qv, emb.row(c as usize)))
        .fold(f32::INFINITY, f32::min);
    let window = &full[..(range_max + p.max_positives() + 1).min(full.len())];
    let ok = |h: &&Hit| {
        let s = h.score;
        !pos.contains(&h.index)
            && h.index != p.queries[q]
            && o.absolute_margin.is_none_or(|m| s + m <= min_pos)
            && o.relative_margin
                .is_none_or(|m| s <= min_pos - min_pos.abs() * m)
            && o.max_score.is_none_or(|m| s <= m)
            && o.min_score.is_none_or(|m| s >= m)
    };
    let valid: Vec<u32> = window
        .iter()
        .filter(ok)
        .take(range_max)
        .map(|h| h.index)
        .collect();
    valid
        .into_iter()
        .skip(o.range_min)
        .take(o.num_negatives)
        .collect()
}

/// The squad fixture and the vectors of its problem's texts (`Problem::new` on the same rows
/// gives the same table again).
fn setup() -> Option<(common::Fixture, Embeddings)> {
    let (fx, embedder) = common::squad_and_model()?;
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    let emb = embedder.embed(&p.texts, &NoProgress).unwrap();
    Some((fx, emb))
}

#[test]
fn top_negatives_follow_every_rule_of_mine_hard_negatives() {
    let Some((fx, emb)) = setup() else { return };
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    assert!(fx.records.len() > 50 && p.corpus_len > 20, "a real dataset");
    let full = top_k(
        &emb,
        &p.queries,
        0..p.corpus_len,
        p.corpus_len,
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let cases = [
        NegativeOptions::default(),
        NegativeOptions {
            num_negatives: 3,
            range_min: 2,
            range_max: Some(12),
            ..Default::default()
        },
        NegativeOptions {
            num_negatives: 2,
            absolute_margin: Some(0.05),
            ..Default::default()
        },
        NegativeOptions {
            num_negatives: 2,
            relative_margin: Some(0.1),
            ..Default::default()
        },
        NegativeOptions {
            num_negatives: 4,
            max_score: Some(0.5),
            min_score: Some(0.2),
            ..Default::default()
        },
    ];
    for o in &cases {
        // Small blocks, so the search crosses block edges.
        let search = SearchOptions {
            query_block: 7,
            corpus_block: 5,
            ..Default::default()
        };
        let (chosen, skipped, _) = choose(&p, &emb, o, search, &NoProgress).unwrap();
        let mut got_some = 0;
        for q in 0..p.queries.len() {
            let got: Vec<u32> = chosen[q].iter().map(|h| h.index).collect();
            assert_eq!(got, expected(&p, &emb, &full[q], q, o), "query {q}, {o:?}");
            assert!(
                got.iter().all(|c| !p.positives[q].contains(c)),
                "a positive chosen"
            );
            assert!(
                chosen[q].windows(2).all(|w| w[0].score >= w[1].score),
                "best first"
            );
            got_some += usize::from(!got.is_empty());
        }
        assert!(
            got_some > p.queries.len() / 2,
            "most anchors get negatives: {o:?}"
        );
        let pairs: usize = p.positives.iter().map(Vec::len).sum();
        assert!(
            skipped.positive > 0 && skipped.positive <= pairs as u64,
            "positives found in windows are skipped, each at most once: {skipped:?}"
        );
    }
}

#[test]
fn option_combinations_that_cannot_work_are_refused_by_name() {
    let Some((fx, emb)) = setup() else { return };
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    let bad = [
        (
            NegativeOptions {
                num_negatives: 0,
                ..Default::default()
            },
            "--num-negatives",
        ),
        (
            NegativeOptions {
                range_min: 5,
                range_max: Some(5),
                ..Default::default()
            },
            "--range-min",
        ),
        (
            NegativeOptions {
                num_negatives: 4,
                range_min: 2,
                range_max: Some(5),
                ..Default::default()
            },
            "cannot mine 4",
        ),
    ];
    for (o, want) in bad {
        let err = choose(&p, &emb, &o, SearchOptions::default(), &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn random_sampling_is_seeded_inside_the_window_and_thread_count_free() {
    let Some((fx, emb)) = setup() else { return };
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    let o = NegativeOptions {
        num_negatives: 2,
        range_min: 1,
        range_max: Some(10),
        sampling: Sampling::Random,
        seed: 7,
        ..Default::default()
    };
    let run = |o: &NegativeOptions, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            choose(&p, &emb, o, SearchOptions::default(), &NoProgress)
                .unwrap()
                .0
        })
    };
    let a = run(&o, 1);
    assert_eq!(a, run(&o, 2), "same seed, other thread count: same draw");
    let other = run(
        &NegativeOptions {
            seed: 8,
            ..o.clone()
        },
        2,
    );
    assert_ne!(a, other, "another seed draws otherwise");
    // Every draw lies in the window the top strategy would take all of.
    let window = NegativeOptions {
        num_negatives: 9,
        sampling: Sampling::Top,
        ..o.clone()
    };
    let all = run(&window, 2);
    for (drawn, win) in a.iter().zip(&all) {
        assert_eq!(drawn.len(), 2.min(win.len()));
        assert!(
            drawn.iter().all(|h| win.contains(h)),
            "{drawn:?} outside {win:?}"
        );
        assert!(drawn.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn triplets_keep_input_order_and_never_use_a_positive_of_the_anchor() {
    let Some((fx, embedder)) = common::squad_and_model() else {
        return;
    };
    let o = NegativeOptions {
        num_negatives: 2,
        output_format: OutputFormat::Triplet,
        ..Default::default()
    };
    let out = curate(
        &embedder,
        &fx.records,
        None,
        &Mode::Negatives(o),
        SearchOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(out.arity, schemas::Arity::Triplet);
    let mut positives: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for r in &fx.records {
        positives.entry(&r.anchor).or_default().push(&r.positive);
    }
    let written_rows = out.len() as u64;
    let no_neg = out.dropped.values().sum::<u64>();
    assert!(written_rows > 0);
    // Each input row appears num_negatives times (or is dropped, counted), in input order.
    let mut next = 0;
    for r in out.records(&fx.records).unwrap() {
        while fx.records[next].anchor != r.anchor || fx.records[next].positive != r.positive {
            next += 1;
        }
        let neg = r.negative.as_deref().unwrap();
        assert!(
            !positives[r.anchor.as_str()].contains(&neg),
            "positive used as negative"
        );
        assert_eq!(r.source_id, fx.records[next].source_id);
    }
    assert_eq!(
        written_rows + 2 * no_neg,
        2 * fx.records.len() as u64,
        "{:?}",
        out.dropped
    );
    assert_eq!(out.counts["anchors"], positives.len() as u64);
}
