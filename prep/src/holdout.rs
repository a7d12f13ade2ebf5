//! The demo's held-out split: a seeded share of the distinct queries, with every record that
//! asks them, is kept out of training; so is every other record that contains one of their
//! queries or positives as any of its texts (the same question can come from two sources, and a
//! held-out answer can be another record's hard negative). What remains is the training data.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemas::PairRecord;

pub struct Split {
    /// Held-out records, in dataset then file order.
    pub held_out: Vec<PairRecord>,
    /// Per dataset (in the given order): its training records.
    pub train: Vec<(String, Vec<PairRecord>)>,
    /// Records dropped from training because they share a text with the held-out part.
    pub dropped: usize,
}

/// Splits `datasets` (id, records): `fraction` of the distinct anchors, chosen by `seed`, are held out.
pub fn split(datasets: Vec<(String, Vec<PairRecord>)>, fraction: f64, seed: u64) -> Split {
    let mut seen = HashSet::new();
    let mut anchors: Vec<&str> = Vec::new();
    for r in datasets.iter().flat_map(|(_, rs)| rs) {
        if seen.insert(r.anchor.as_str()) {
            anchors.push(&r.anchor);
        }
    }
    anchors.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = ((anchors.len() as f64) * fraction).round() as usize;
    let chosen: HashSet<String> = anchors[..n.min(anchors.len())]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut held_out = Vec::new();
    let mut hidden: HashSet<String> = chosen.clone();
    for r in datasets.iter().flat_map(|(_, rs)| rs) {
        if chosen.contains(&r.anchor) {
            hidden.insert(r.positive.clone());
            held_out.push(r.clone());
        }
    }
    let mut dropped = 0;
    let train = datasets
        .into_iter()
        .map(|(id, records)| {
            let keep: Vec<PairRecord> = records
                .into_iter()
                .filter(|r| !chosen.contains(&r.anchor))
                .filter(|r| {
                    // Every negative column too: a held-out text must not be trained on.
                    let shares = r.texts().any(|t| hidden.contains(t));
                    dropped += shares as usize;
                    !shares
                })
                .collect();
            (id, keep)
        })
        .collect();
    Split {
        held_out,
        train,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<(String, Vec<PairRecord>)> {
        let qa: Vec<PairRecord> = (0..50)
            .map(|i| PairRecord::pair(format!("q{i}"), format!("a{i}")))
            .collect();
        // The same questions in a second source, and triplets whose negatives are others' answers.
        let dup: Vec<PairRecord> = (0..50)
            .map(|i| {
                PairRecord::triplet(
                    format!("q{i}"),
                    format!("b{i}"),
                    format!("a{}", (i + 1) % 50),
                )
            })
            .collect();
        vec![("qa".into(), qa), ("dup".into(), dup)]
    }

    #[test]
    fn held_out_texts_never_reach_training() {
        let s = split(data(), 0.2, 7);
        let queries: HashSet<&str> = s.held_out.iter().map(|r| r.anchor.as_str()).collect();
        assert_eq!(queries.len(), 10, "a fifth of the 50 distinct queries");
        assert_eq!(
            s.held_out.len(),
            20,
            "both sources' records of each held-out query"
        );
        let hidden: HashSet<&str> = s
            .held_out
            .iter()
            .flat_map(|r| [r.anchor.as_str(), r.positive.as_str()])
            .collect();
        let train: Vec<&PairRecord> = s.train.iter().flat_map(|(_, rs)| rs).collect();
        for r in &train {
            for t in [Some(&r.anchor), Some(&r.positive), r.negative.as_ref()]
                .into_iter()
                .flatten()
            {
                assert!(
                    !hidden.contains(t.as_str()),
                    "{t} is held out but in training"
                );
            }
        }
        // Triplet j's negative is a{j+1}: dropped when q{j+1} is held out and q{j} is not.
        let expected = (0..50)
            .filter(|j| !queries.contains(format!("q{j}").as_str()))
            .filter(|j| queries.contains(format!("q{}", (j + 1) % 50).as_str()))
            .count();
        assert!(expected > 0);
        assert_eq!(s.dropped, expected);
        assert_eq!(train.len(), 100 - 20 - expected);
    }

    #[test]
    fn the_seed_chooses_the_split() {
        let anchors = |seed| {
            let mut a: Vec<String> = split(data(), 0.2, seed)
                .held_out
                .into_iter()
                .map(|r| r.anchor)
                .collect();
            a.sort();
            a
        };
        assert_eq!(anchors(1), anchors(1));
        assert_ne!(anchors(1), anchors(2));
    }
}
