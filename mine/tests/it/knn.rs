//! Exact top-k search: the blocked search agrees with a full sort for every block shape.

use mine::embed::{dot, Embeddings};
use mine::knn::{better, top_k, Hit, Index, SearchOptions};

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
            ..Default::default()
        };
        for k in 1..=7 {
            let got = top_k(&e, &[6, 7], 0..6, k, opts, &schemas::NoProgress).unwrap();
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
    )
    .unwrap();
    assert_eq!(
        got[0][0].index, 1,
        "row 2 of emb is index 1 of the range 1..4"
    );
}

/// `n` unit vectors of `dim` dimensions in `clusters` seeded clusters (centre plus noise), the
/// shape sentence embeddings have: many near neighbours, most of the space empty.
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Embeddings {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut normal = move || -> f32 {
        // Box-Muller: a standard normal from two uniforms.
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| normal()).collect())
        .collect();
    let mut e = Embeddings::new(dim);
    for i in 0..n {
        let c = &centres[i % clusters];
        let v: Vec<f32> = c.iter().map(|x| x + 0.6 * normal()).collect();
        e.push_normalized(&v);
    }
    e
}

/// The graph index with `shard_size` over 3,800 clustered 64-dim vectors, 200 other queries,
/// k 10, on `threads` threads, checked against the exact search: best first, hits re-scored by
/// the exact product (equal to float rounding), recall@10 ≥ 0.95. Returns its hits.
fn checked_hnsw(shard_size: usize, threads: usize) -> Vec<Vec<Hit>> {
    let e = clustered(4_000, 64, 40, 7);
    let (corpus, k) = (0..3_800, 10);
    let queries: Vec<u32> = (3_800..4_000).collect();
    let search = |options| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            top_k(
                &e,
                &queries,
                corpus.clone(),
                k,
                options,
                &schemas::NoProgress,
            )
        })
        .unwrap()
    };
    let exact = search(SearchOptions::default());
    let approx = search(SearchOptions {
        index: Index::Hnsw {
            ef_construction: 100,
            ef_search: 64,
            shard_size,
        },
        ..Default::default()
    });
    let mut found = 0;
    for (a, x) in approx.iter().zip(&exact) {
        assert_eq!(a.len(), k);
        assert!(
            a.windows(2).all(|w| better(&w[0], &w[1]).is_lt()),
            "best first"
        );
        for h in a {
            if let Some(t) = x.iter().find(|t| t.index == h.index) {
                // The same product, another block shape: equal to float rounding.
                assert!(
                    (t.score - h.score).abs() <= 1e-6,
                    "re-scored: {} vs {}",
                    h.score,
                    t.score
                );
                found += 1;
            }
        }
    }
    let recall = found as f64 / (k * queries.len()) as f64;
    eprintln!("HNSW (shard size {shard_size}) recall@{k} against the exact search: {recall:.4}");
    assert!(
        recall >= 0.95,
        "recall@{k} {recall:.3} against the exact search"
    );
    approx
}

#[test]
fn hnsw_finds_nearly_every_exact_neighbour_reproducibly_with_exact_scores() {
    assert_eq!(
        checked_hnsw(0, 2),
        checked_hnsw(0, 2),
        "the same inputs and seed give the same neighbours"
    );
}

#[test]
fn sharded_hnsw_graphs_are_built_in_parallel_and_give_the_same_hits_on_any_thread_count() {
    // 4 graphs, the last one short.
    let (one, three) = (checked_hnsw(1_000, 1), checked_hnsw(1_000, 3));
    assert_eq!(
        differing(&one, &three),
        0,
        "the same graphs whatever the threads"
    );
    // Hits from every shard: some neighbours lie beyond the first graph's rows.
    assert!(three.iter().flatten().any(|h| h.index >= 3_000));
}

/// `e`'s rows set (normalised once more, as every store does) in memory and in a spilled store
/// in `dir`.
pub fn both_stores(e: &Embeddings, dir: &std::path::Path) -> (Embeddings, mine::SpilledVectors) {
    let mut memory = Embeddings::zeros(e.rows(), e.dim);
    let spilled = mine::SpilledVectors::create(dir, e.rows(), e.dim).unwrap();
    for i in 0..e.rows() {
        memory.set_normalized(i, e.row(i));
        spilled.set_normalized(i, e.row(i)).unwrap();
    }
    (memory, spilled)
}

/// Queries whose hits differ (by index or by score's bits).
fn differing(a: &[Vec<Hit>], b: &[Vec<Hit>]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn a_spilled_store_and_a_small_memory_budget_give_the_in_memory_searchs_exact_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (e, s) = both_stores(&clustered(3_000, 48, 30, 11), dir.path());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the spill file has no name: it goes away with the process"
    );
    let queries: Vec<u32> = (0..3_000).step_by(7).collect();
    let (qb, cb, k) = (16, 100, 12);
    let roomy = SearchOptions {
        query_block: qb,
        corpus_block: cb,
        ..Default::default()
    };
    let want = top_k(&e, &queries, 0..2_900, k, roomy, &schemas::NoProgress).unwrap();
    // Room for about 2 query blocks at a time: many groups, each reading the whole corpus back.
    let per_query = 48 * 4 + 2 * k * std::mem::size_of::<Hit>();
    let fixed = cb * 48 * 4 + rayon::current_num_threads() * qb * cb * 4;
    let tight = SearchOptions {
        memory: 2 * (fixed + 2 * qb * per_query),
        ..roomy
    };
    assert!(tight.queries_at_once(48, k) < queries.len() / 4);
    for (name, store, opts) in [
        ("in memory, small budget", &e as &dyn mine::Vectors, tight),
        ("spilled, small budget", &s, tight),
        ("spilled, whole budget", &s, roomy),
    ] {
        let got = top_k(store, &queries, 0..2_900, k, opts, &schemas::NoProgress).unwrap();
        assert_eq!(
            differing(&got, &want),
            0,
            "{name}: the same hits, bit for bit"
        );
    }
}
