//! Data-parallel step (issue 15): W ranks exchanging embeddings and gradients give the global
//! batch's loss and gradients. Ranks run as threads over an in-process collective, so this runs
//! without MPI; the MPI implementation plugs into the same trait.

use std::sync::{Barrier, Mutex};

use crate::common;

use loader::{Loader, LoaderOptions, LoaderState};
use train::{
    clip_per_rank_and_average, loss_and_grads, loss_and_grads_distributed, rank_loss_and_grads,
    Collective, Columns, Dropout, LossConfig, LossKind, Single, Trainable,
};

/// Threads as ranks: each call deposits its buffer, waits for all, and reads the others'.
struct Threads {
    world: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f32>>>,
}

struct Rank<'a> {
    rank: usize,
    shared: &'a Threads,
}

impl Rank<'_> {
    fn exchange(&self, local: &[f32]) -> Vec<Vec<f32>> {
        let s = self.shared;
        s.slots.lock().unwrap()[self.rank] = local.to_vec();
        s.barrier.wait();
        let all = s.slots.lock().unwrap().clone();
        s.barrier.wait();
        all
    }
}

impl Collective for Rank<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }
    fn all_gather(&self, local: &[f32]) -> train::Result<Vec<f32>> {
        Ok(self.exchange(local).concat())
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> train::Result<()> {
        let all = self.exchange(buf);
        for (i, x) in buf.iter_mut().enumerate() {
            // Rank order, identical on every rank: bit-identical sums.
            *x = all.iter().map(|v| v[i]).sum();
        }
        Ok(())
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) -> train::Result<()> {
        let f: Vec<f32> = buf.iter().map(|&b| b as f32).collect();
        let all = self.exchange(&f);
        for (b, v) in buf.iter_mut().zip(&all[root]) {
            *b = *v as u8;
        }
        Ok(())
    }
    fn barrier(&self) -> train::Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

fn batch(dir: &std::path::Path, index: usize, rank: usize, world_size: usize) -> loader::Batch {
    let opts = LoaderOptions {
        rank,
        world_size,
        ..LoaderOptions::default()
    };
    Loader::open(dir, LoaderState::default(), &opts)
        .unwrap()
        .nth(index)
        .unwrap()
        .unwrap()
}

#[test]
fn two_ranks_give_the_global_batch_loss_and_gradients() {
    global_batch_on_two_ranks(1);
}

/// Every negative column is all-gathered: three of them give the global batch's loss and
/// gradients on two ranks too.
#[test]
fn two_ranks_with_three_negative_columns_give_the_global_batch() {
    global_batch_on_two_ranks(3);
}

/// One process, the data-parallel step on one rank and on two ranks agree, for pair batches
/// and batches of `negatives` negative columns.
fn global_batch_on_two_ranks(negatives: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    common::tiny_model(&model_dir);
    let shards = tmp.path().join("shards");
    let vocab = common::vocab_size(&model_dir);
    common::write_shards_with_negatives(&shards, vocab, 3, 10, 3, negatives);
    let cfg = encoder::BertConfig::from_file(&model_dir.join("config.json")).unwrap();
    let model = || Trainable::fresh(&cfg, 3, Some(0.0), &common::cpu()).unwrap();
    let reference_model = model();
    // Batch 0: pairs; batch 2: triplets.
    for (b, kind, mini) in [
        (0usize, LossKind::Symmetric, None),
        (0, LossKind::OneWay, Some(2)),
        (2, LossKind::Symmetric, Some(3)),
    ] {
        let loss = LossConfig { kind, scale: 20.0 };
        let whole = batch(&shards, b, 0, 1);
        let full =
            loss_and_grads(&reference_model, &Columns::of(&whole), loss, None, None).unwrap();
        let single = loss_and_grads_distributed(
            &reference_model,
            &Columns::of(&whole),
            loss,
            mini,
            Dropout::Off,
            &Single,
        )
        .unwrap();
        let shared = Threads {
            world: 2,
            barrier: Barrier::new(2),
            slots: Mutex::new(vec![Vec::new(); 2]),
        };
        let ranks: Vec<train::StepGrads> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    let (shared, shards, model) = (&shared, &shards, &model);
                    s.spawn(move || {
                        let m = model();
                        let slice = batch(shards, b, rank, 2);
                        let coll = Rank { rank, shared };
                        loss_and_grads_distributed(
                            &m,
                            &Columns::of(&slice),
                            loss,
                            mini,
                            Dropout::Off,
                            &coll,
                        )
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(whole.negatives.len(), if b == 2 { negatives } else { 0 });
        let what = format!("batch {b} {kind:?} mini-batch {mini:?}, {negatives} negatives");
        for got in std::iter::once(&single).chain(&ranks) {
            let rel = (got.loss - full.loss).abs() / full.loss.abs();
            assert!(rel < 1e-5, "{what}: loss {} vs {}", got.loss, full.loss);
            for ((g, f), n) in got
                .grads
                .iter()
                .zip(&full.grads)
                .zip(&reference_model.names)
            {
                let d = common::max_abs_diff(g, f);
                assert!(d < 1e-4, "{what}: gradient of {n} differs by {d:e}");
            }
        }
        // Both ranks hold the same summed gradient, bit for bit.
        for (a, c) in ranks[0].grads.iter().zip(&ranks[1].grads) {
            assert_eq!(common::max_abs_diff(a, c), 0.0, "{what}: ranks disagree");
        }
        assert_eq!(ranks[0].loss, ranks[1].loss, "{what}: ranks' losses differ");
    }
}

/// Runs `f(rank, collective)` on 2 threads as ranks of one world; results in rank order.
fn on_two_ranks<T: Send>(f: impl Fn(usize, &Rank) -> T + Sync) -> Vec<T> {
    let shared = Threads {
        world: 2,
        barrier: Barrier::new(2),
        slots: Mutex::new(vec![Vec::new(); 2]),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let (shared, f) = (&shared, &f);
                s.spawn(move || f(rank, &Rank { rank, shared }))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn norm(grads: &[candle_core::Tensor]) -> f64 {
    grads
        .iter()
        .map(|g| {
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        })
        .sum::<f64>()
        .sqrt()
}

/// `--clip-scope per-rank` (upstream's TPU step): each rank's share of the gradient (the global
/// loss through its rows only; the shares sum to the global gradient) is clipped on its own
/// norm, then the ranks average.
#[test]
fn per_rank_clipping_clips_each_share_then_averages() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    common::tiny_model(&model_dir);
    let shards = tmp.path().join("shards");
    common::write_shards(&shards, common::vocab_size(&model_dir), 3, 10, 3);
    let cfg = encoder::BertConfig::from_file(&model_dir.join("config.json")).unwrap();
    let model = || Trainable::fresh(&cfg, 3, Some(0.0), &common::cpu()).unwrap();
    let loss = LossConfig::default();
    let whole = batch(&shards, 0, 0, 1);
    let full = loss_and_grads(&model(), &Columns::of(&whole), loss, None, None).unwrap();
    let shares = on_two_ranks(|rank, coll| {
        let slice = batch(&shards, 0, rank, 2);
        rank_loss_and_grads(
            &model(),
            &Columns::of(&slice),
            loss,
            None,
            Dropout::Off,
            coll,
        )
        .unwrap()
        .grads
    });
    // The shares sum to the global-batch gradient.
    for (i, f) in full.grads.iter().enumerate() {
        let sum = (&shares[0][i] + &shares[1][i]).unwrap();
        assert!(common::max_abs_diff(&sum, f) < 1e-4, "parameter {i}");
    }
    let norms = [norm(&shares[0]), norm(&shares[1])];
    // A limit below both norms, so both shares are clipped.
    let max = 0.5 * norms[0].min(norms[1]);
    let out = on_two_ranks(|rank, coll| {
        clip_per_rank_and_average(shares[rank].clone(), max, coll).unwrap()
    });
    let want_norm = (norms[0] + norms[1]) / 2.0;
    for (rank, (grads, mean_norm)) in out.iter().enumerate() {
        assert!(
            (mean_norm - want_norm).abs() < 1e-5 * want_norm,
            "rank {rank}: mean norm {mean_norm} vs {want_norm}"
        );
        for (i, g) in grads.iter().enumerate() {
            let clipped = |r: usize| (&shares[r][i] * (max / (norms[r] + 1e-6))).unwrap();
            let want = ((clipped(0) + clipped(1)).unwrap() / 2.0).unwrap();
            assert!(
                common::max_abs_diff(g, &want) < 1e-6,
                "rank {rank}: parameter {i}"
            );
        }
    }
    for (a, b) in out[0].0.iter().zip(&out[1].0) {
        assert_eq!(common::max_abs_diff(a, b), 0.0, "ranks disagree");
    }
    // Each clipped share has norm `max`, so their average has norm at most `max`.
    assert!(norm(&out[0].0) <= max * (1.0 + 1e-5));
}
