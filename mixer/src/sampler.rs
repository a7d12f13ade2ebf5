//! Batch formation as upstream's train_script did it, with a seed.
//!
//! `Random` mixing: a round draws `datasets_per_batch` datasets with probability weight/Σweight,
//! every later draw redrawn until its column count equals the first's; each draw fills
//! `batches_per_draw` consecutive batches from its dataset, so every batch comes from one dataset.
//! `Exact` mixing: each batch goes to the dataset furthest behind its share (largest
//! `share·(n+1) − count`, Megatron-style blending), which keeps every prefix of the stream within
//! one batch of each share; rounds are then `datasets_per_batch × batches_per_draw` batches.
//! In both, a row is skipped when any of its texts (exact string) already appeared in the round.

use std::collections::{HashSet, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use schemas::{Arity, PairRecord};
use serde::{Deserialize, Serialize};

use crate::error::{MixError, Result};
use crate::rng::named_rng;
use crate::stream::{DatasetStream, StreamStats};

/// How batches pick their datasets; recorded in index.json, so it lives in `schemas`.
pub use schemas::Mixing;

/// Picks the dataset of every batch; knows weights and arities, nothing of rows.
#[derive(Debug, Clone)]
pub struct Schedule {
    weights: Vec<u64>,
    arities: Vec<Arity>,
    total: u64,
    mixing: Mixing,
    datasets_per_batch: usize,
    batches_per_draw: usize,
    rng: ChaCha8Rng,
    counts: Vec<u64>,
    assigned: u64,
}

impl Schedule {
    /// Fails when there are no weights, one is 0, or they sum past
    /// [`crate::config::MAX_TOTAL_WEIGHT`] (checked, never wrapped).
    pub fn new(
        weights: Vec<u64>,
        arities: Vec<Arity>,
        mixing: Mixing,
        datasets_per_batch: usize,
        batches_per_draw: usize,
        seed: u64,
    ) -> Result<Self> {
        let total = weights
            .iter()
            .try_fold(0u64, |a, w| a.checked_add(*w))
            .filter(|t| *t <= crate::config::MAX_TOTAL_WEIGHT)
            .ok_or_else(|| {
                MixError::Options(format!(
                    "the weights sum past the limit of {} (2^63 - 1): divide them all by a \
                     common factor",
                    crate::config::MAX_TOTAL_WEIGHT
                ))
            })?;
        if weights.is_empty() || weights.contains(&0) {
            return Err(MixError::Options(
                "every dataset needs a weight of at least 1".into(),
            ));
        }
        let n = weights.len();
        Ok(Schedule {
            weights,
            arities,
            total,
            mixing,
            datasets_per_batch: datasets_per_batch.max(1),
            batches_per_draw: batches_per_draw.max(1),
            rng: named_rng(seed, &["schedule"]),
            counts: vec![0; n],
            assigned: 0,
        })
    }

    fn weighted(&mut self) -> usize {
        let mut u = self.rng.random_range(0..self.total);
        for (i, w) in self.weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        unreachable!("u < total weight")
    }

    fn most_behind(&self) -> usize {
        let n = self.assigned as i128 + 1;
        let t = self.total as i128;
        // share·(n+1) − count, scaled by the total weight to stay in integers. Exact in i128:
        // weight, count and n stay below 2^63 (Σweight and --steps are bounded), products < 2^126.
        (0..self.weights.len())
            .max_by_key(|&i| {
                let deficit = self.weights[i] as i128 * n - self.counts[i] as i128 * t;
                (deficit, self.weights[i], std::cmp::Reverse(i))
            })
            .expect("at least one dataset")
    }

    /// The dataset of each batch of the next round.
    pub fn next_round(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        match self.mixing {
            Mixing::Random => {
                let first = self.weighted();
                for d in 0..self.datasets_per_batch {
                    let pick = if d == 0 {
                        first
                    } else {
                        loop {
                            let i = self.weighted();
                            if self.arities[i] == self.arities[first] {
                                break i;
                            }
                        }
                    };
                    out.extend(std::iter::repeat_n(pick, self.batches_per_draw));
                }
                for &i in &out {
                    self.counts[i] += 1;
                    self.assigned += 1;
                }
            }
            Mixing::Exact => {
                for _ in 0..self.datasets_per_batch * self.batches_per_draw {
                    let i = self.most_behind();
                    self.counts[i] += 1;
                    self.assigned += 1;
                    out.push(i);
                }
            }
        }
        out
    }
}

/// One batch: `batch_size` rows of one dataset.
#[derive(Debug, Clone)]
pub struct PlannedBatch {
    pub index: u64,
    pub dataset: usize,
    pub records: Vec<PairRecord>,
    /// Rows skipped as duplicates while filling this batch.
    pub skipped: u64,
    /// The dataset stream's counters once this batch was filled.
    pub stream: StreamStats,
}

/// Per-dataset counters, as recorded in the index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub rows_drawn: u64,
    pub rows_skipped_duplicate: u64,
    pub batches: u64,
    /// Current epoch of the dataset's stream (0 = first pass).
    pub epoch: u64,
    /// Rows taken from the stream (drawn + skipped) over the dataset's rows: passes made.
    pub epochs: f64,
}

/// How far realised batch counts strayed from the weights, over every prefix of the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deviation {
    /// max over prefixes n and datasets i of |count_i(n) − share_i·n|, in batches.
    pub max_abs_batches: f64,
    /// The same maximum per dataset (index order of the sources).
    pub per_dataset: Vec<f64>,
}

pub struct Sampler {
    streams: Vec<DatasetStream>,
    schedule: Schedule,
    batch_size: usize,
    next_index: u64,
    queue: VecDeque<PlannedBatch>,
    stats: Vec<DatasetStats>,
    shares: Vec<f64>,
    batch_counts: Vec<u64>,
    deviation: Deviation,
}

impl Sampler {
    pub fn new(
        streams: Vec<DatasetStream>,
        schedule: Schedule,
        weights: &[u64],
        batch_size: usize,
    ) -> Self {
        // In f64: the same shares as u64 division for any sum below 2^53, and no overflow.
        let total: f64 = weights.iter().map(|w| *w as f64).sum();
        let n = streams.len();
        Sampler {
            streams,
            schedule,
            batch_size,
            next_index: 0,
            queue: VecDeque::new(),
            stats: vec![DatasetStats::default(); n],
            shares: weights.iter().map(|w| *w as f64 / total).collect(),
            batch_counts: vec![0; n],
            deviation: Deviation {
                max_abs_batches: 0.0,
                per_dataset: vec![0.0; n],
            },
        }
    }

    pub fn stats(&self) -> &[DatasetStats] {
        &self.stats
    }

    pub fn deviation(&self) -> &Deviation {
        &self.deviation
    }

    fn fill_round(&mut self) -> Result<()> {
        let plan = self.schedule.next_round();
        let mut seen: HashSet<String> = HashSet::new();
        for d in plan {
            let stream = &mut self.streams[d];
            let mut records = Vec::with_capacity(self.batch_size);
            let mut skipped_in_row = 0u64;
            let mut skipped = 0u64;
            while records.len() < self.batch_size {
                let r = stream.next_record()?;
                // Anchor, positive and every negative column.
                let texts: Vec<&String> = r.texts().collect();
                // Also skips a row repeating a text within itself, so no text ever appears
                // twice in a round (upstream kept such rows).
                let repeats = texts
                    .iter()
                    .enumerate()
                    .any(|(i, t)| texts[..i].contains(t));
                if repeats || texts.iter().any(|t| seen.contains(t.as_str())) {
                    skipped += 1;
                    skipped_in_row += 1;
                    // A whole pass without one usable row: the dataset cannot fill this round.
                    if skipped_in_row > stream.rows() {
                        return Err(MixError::dataset(
                            stream.id(),
                            format!(
                                "too few distinct texts for a round of batches of {}",
                                self.batch_size
                            ),
                        ));
                    }
                    continue;
                }
                skipped_in_row = 0;
                for t in texts {
                    seen.insert(t.clone());
                }
                records.push(r);
            }
            self.queue.push_back(PlannedBatch {
                index: self.next_index,
                dataset: d,
                records,
                skipped,
                stream: stream.stats(),
            });
            self.next_index += 1;
        }
        Ok(())
    }

    /// The next batch of the stream.
    pub fn next_batch(&mut self) -> Result<PlannedBatch> {
        while self.queue.is_empty() {
            self.fill_round()?;
        }
        let b = self.queue.pop_front().expect("filled above");
        // Counters follow the batches handed out, not the round filled ahead of them.
        let d = b.dataset;
        let s = &mut self.stats[d];
        s.rows_drawn += b.records.len() as u64;
        s.rows_skipped_duplicate += b.skipped;
        s.batches += 1;
        s.epoch = b.stream.epoch;
        s.epochs = b.stream.consumed as f64 / self.streams[d].rows() as f64;
        self.batch_counts[d] += 1;
        let n = (b.index + 1) as f64;
        for (i, c) in self.batch_counts.iter().enumerate() {
            let dev = (*c as f64 - self.shares[i] * n).abs();
            let slot = &mut self.deviation.per_dataset[i];
            *slot = slot.max(dev);
            self.deviation.max_abs_batches = self.deviation.max_abs_batches.max(dev);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_schedule_stays_within_one_batch() {
        let weights = vec![
            150, 150, 1719, 1512, 1000, 451, 451, 226, 149, 263, 147, 69, 47, 46, 40, 34,
        ];
        let arities = vec![Arity::Pair; weights.len()];
        let mut s = Schedule::new(weights.clone(), arities, Mixing::Exact, 2, 4, 1).unwrap();
        let total: u64 = weights.iter().sum();
        let mut counts = vec![0u64; weights.len()];
        let mut n = 0u64;
        for _ in 0..5_000 {
            for d in s.next_round() {
                counts[d] += 1;
                n += 1;
                for (i, c) in counts.iter().enumerate() {
                    let dev = (*c as f64 - weights[i] as f64 * n as f64 / total as f64).abs();
                    assert!(dev < 1.0, "dataset {i} off by {dev} after {n} batches");
                }
            }
        }
    }

    #[test]
    fn random_rounds_never_mix_arities() {
        let weights = vec![5, 3, 2];
        let arities = vec![Arity::Pair, Arity::Triplet, Arity::Pair];
        let mut s = Schedule::new(weights, arities.clone(), Mixing::Random, 3, 2, 9).unwrap();
        for _ in 0..2_000 {
            let round = s.next_round();
            assert_eq!(round.len(), 6);
            assert!(round.iter().all(|&d| arities[d] == arities[round[0]]));
            // Each draw fills batches_per_draw consecutive batches.
            assert!(round.chunks(2).all(|c| c[0] == c[1]));
        }
    }
}
