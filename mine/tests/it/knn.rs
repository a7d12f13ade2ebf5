//! Exact top-k search: the blocked search agrees with a full sort for every block shape.

use mine::embed::{dot, Embeddings};
use mine::knn::{better, top_k, Hit, SearchOptions};

fn emb(rows: &[[f32; 2]]) -> Embeddings {
    let mut e = Embeddings::new(2);
    for r in rows {
        e.push_normalized(r);
    }
    e
}

#[test]
fn top_k_matches_a_full_sort_for_every_block_shape_with_ties_by_index() {
    // Corpus rows 0..6 with exact duplicates (ties); the queries are rows 6 and 7.
    let e = emb(&[
        [1.0, 0.0],
        [0.0, 1.0],
        [1.0, 0.0],
        [1.0, 1.0],
        [-1.0, 0.0],
        [1.0, 1.0],
        [1.0, 0.1],
        [0.0, 1.0],
    ]);
    for (qb, cb) in [(1, 1), (1, 2), (2, 3), (7, 100)] {
        let opts = SearchOptions {
            query_block: qb,
            corpus_block: cb,
        };
        for k in 1..=7 {
            let got = top_k(&e, &[6, 7], 0..6, k, opts, &schemas::NoProgress);
            for (q, hits) in [6usize, 7].iter().zip(&got) {
                let mut all: Vec<Hit> = (0..6)
                    .map(|j| Hit {
                        index: j as u32,
                        score: dot(e.row(*q), e.row(j)),
                    })
                    .collect();
                all.sort_by(better);
                all.truncate(k.min(6));
                let idx = |h: &[Hit]| h.iter().map(|h| h.index).collect::<Vec<_>>();
                assert_eq!(idx(hits), idx(&all), "q {q} k {k} blocks {qb}x{cb}");
            }
        }
    }
}

#[test]
fn a_corpus_range_counts_hits_from_its_start() {
    let e = emb(&[[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.0, 1.0]]);
    let got = top_k(
        &e,
        &[0],
        1..4,
        1,
        SearchOptions::default(),
        &schemas::NoProgress,
    );
    assert_eq!(
        got[0][0].index, 1,
        "row 2 of emb is index 1 of the range 1..4"
    );
}
