//! Statistics of the sampler over long mixes on real Parquet datasets: realised shares match
//! the weights (chi-square), exact mixing stays within one batch of every share at every prefix.

use crate::common;

use std::path::Path;

use common::{make_dataset, MULTI_QA};
use mixer::{DatasetStream, Mixing, Sampler, Schedule};
use schemas::{part_files, Arity};

fn sampler(
    pairs: &Path,
    datasets: &[(&str, Arity, u64)],
    mixing: Mixing,
    seed: u64,
) -> (Sampler, Vec<u64>) {
    let mut streams = Vec::new();
    for (id, arity, _) in datasets {
        make_dataset(pairs, id, *arity, 64, 16);
        let files = part_files(&pairs.join(id)).unwrap();
        streams.push(DatasetStream::open(id, files, *arity, seed, 32).unwrap());
    }
    let weights: Vec<u64> = datasets.iter().map(|d| d.2).collect();
    let arities = datasets.iter().map(|d| d.1).collect();
    let schedule = Schedule::new(weights.clone(), arities, mixing, 2, 4, seed).unwrap();
    (Sampler::new(streams, schedule, &weights, 2), weights)
}

/// Chi-square statistic of `counts` against `weights`.
fn chi_square(counts: &[u64], weights: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let total: u64 = weights.iter().sum();
    counts
        .iter()
        .zip(weights)
        .map(|(&c, &w)| {
            let e = n as f64 * w as f64 / total as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn random_mixing_shares_pass_chi_square() {
    // Pair datasets only: draws are then independent, so draw counts are multinomial.
    let pairs_only: Vec<_> = MULTI_QA
        .iter()
        .copied()
        .filter(|d| d.1 == Arity::Pair)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, weights) = sampler(tmp.path(), &pairs_only, Mixing::Random, 11);
    let draws = 30_000;
    for _ in 0..draws * 4 {
        s.next_batch().unwrap();
    }
    let counts: Vec<u64> = s.stats().iter().map(|st| st.batches / 4).collect();
    assert_eq!(counts.iter().sum::<u64>(), draws);
    let chi2 = chi_square(&counts, &weights);
    // 13 degrees of freedom: P(χ² > 34.53) = 0.001.
    assert!(chi2 < 34.53, "chi-square {chi2:.2} over {counts:?}");
}

#[test]
fn random_mixing_with_triplets_keeps_marginal_shares() {
    // The second draw of a round is redrawn until its arity matches the first, which keeps
    // each dataset's marginal share at weight/Σweight.
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, weights) = sampler(tmp.path(), MULTI_QA, Mixing::Random, 12);
    let batches = 120_000u64;
    for _ in 0..batches {
        s.next_batch().unwrap();
    }
    let total: u64 = weights.iter().sum();
    for (i, st) in s.stats().iter().enumerate() {
        let share = weights[i] as f64 / total as f64;
        let draws = batches as f64 / 4.0;
        // Rounds (2 draws) are the independent unit: 5 standard deviations of a round's share.
        let sd = (share * (1.0 - share) * 2.0 / draws).sqrt();
        let got = st.batches as f64 / batches as f64;
        assert!(
            (got - share).abs() < 5.0 * sd + 1e-9,
            "{}: {got:.4} vs {share:.4}",
            MULTI_QA[i].0
        );
    }
}

#[test]
fn exact_mixing_is_within_one_batch_at_every_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, weights) = sampler(tmp.path(), MULTI_QA, Mixing::Exact, 13);
    let total: u64 = weights.iter().sum();
    let mut counts = vec![0u64; weights.len()];
    for n in 1..=50_000u64 {
        let b = s.next_batch().unwrap();
        counts[b.dataset] += 1;
        for (i, c) in counts.iter().enumerate() {
            let dev = (*c as f64 - weights[i] as f64 * n as f64 / total as f64).abs();
            assert!(
                dev < 1.0,
                "{} off by {dev} after {n} batches",
                MULTI_QA[i].0
            );
        }
    }
    let d = s.deviation();
    assert!(d.max_abs_batches < 1.0 && d.max_abs_batches > 0.5, "{d:?}");
}

#[test]
fn every_epoch_is_a_fresh_full_permutation() {
    let tmp = tempfile::tempdir().unwrap();
    make_dataset(tmp.path(), "squad", Arity::Pair, 500, 37);
    let files = part_files(&tmp.path().join("squad")).unwrap();
    let mut s = DatasetStream::open("squad", files.clone(), Arity::Pair, 5, 50).unwrap();
    let epoch = |s: &mut DatasetStream| -> Vec<String> {
        (0..500).map(|_| s.next_record().unwrap().anchor).collect()
    };
    let (e0, e1) = (epoch(&mut s), epoch(&mut s));
    assert_eq!(s.stats().epoch, 1);
    let mut sorted = e0.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 500, "each row exactly once per epoch");
    assert_ne!(e0, e1, "reshuffled each epoch");
    // Far from file order: few neighbours in the output were neighbours in the file.
    let index = |t: &str| {
        t.split(' ')
            .nth(3)
            .unwrap()
            .trim_end_matches('?')
            .parse::<i64>()
            .unwrap()
    };
    let adjacent = e0
        .windows(2)
        .filter(|w| (index(&w[0]) - index(&w[1])).abs() == 1)
        .count();
    assert!(adjacent < 25, "{adjacent} adjacent pairs kept");
    // The same seed gives the same stream.
    let mut again = DatasetStream::open("squad", files, Arity::Pair, 5, 50).unwrap();
    assert_eq!(epoch(&mut again), e0);
}
