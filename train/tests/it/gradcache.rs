//! GradCache (`--mini-batch-size`) gives the full batch's loss and gradients.

use crate::common;

use candle_core::Tensor;
use encoder::DropoutRng;
use loader::{Loader, LoaderOptions, LoaderState};
use train::{loss_and_grads, Columns, LossConfig, LossKind, Trainable};

fn batches(dir: &std::path::Path) -> Vec<loader::Batch> {
    Loader::open(dir, LoaderState::default(), &LoaderOptions::default())
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn setup(dropout: f64) -> (tempfile::TempDir, Trainable, Vec<loader::Batch>) {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    common::tiny_model(&model_dir);
    let shards = tmp.path().join("shards");
    common::write_shards(&shards, common::vocab_size(&model_dir), 3, 10, 3);
    let cfg = encoder::BertConfig::from_file(&model_dir.join("config.json")).unwrap();
    let model = Trainable::fresh(&cfg, 3, Some(dropout), &common::cpu()).unwrap();
    let b = batches(&shards);
    (tmp, model, b)
}

fn assert_close(full: &train::StepGrads, cached: &train::StepGrads, names: &[String], what: &str) {
    assert!(
        (full.loss - cached.loss).abs() < 1e-5,
        "{what}: loss {} vs {}",
        full.loss,
        cached.loss
    );
    let mut worst = 0f32;
    for ((g, c), n) in full.grads.iter().zip(&cached.grads).zip(names) {
        let d = common::max_abs_diff(g, c);
        worst = worst.max(d);
        assert!(d < 1e-4, "{what}: gradient of {n} differs by {d:e}");
    }
    eprintln!(
        "{what}: loss {:.6}, largest gradient difference {worst:.2e}",
        full.loss
    );
}

#[test]
fn mini_batches_give_the_full_batch_gradients() {
    let (_tmp, model, batches) = setup(0.0);
    // Batch 0: pairs (symmetric and one-way); batch 2: triplets. Chunks of 3 leave a remainder.
    for (b, kind) in [
        (0usize, LossKind::Symmetric),
        (0, LossKind::OneWay),
        (2, LossKind::Symmetric),
    ] {
        let cols = Columns::of(&batches[b]);
        let loss = LossConfig { kind, scale: 20.0 };
        let full = loss_and_grads(&model, &cols, loss, None, None).unwrap();
        for m in [1usize, 3, 4] {
            let cached = loss_and_grads(&model, &cols, loss, Some(m), None).unwrap();
            assert_close(
                &full,
                &cached,
                &model.names,
                &format!("batch {b} {kind:?} mini-batch {m}"),
            );
        }
        // Nothing is zero that should not be.
        let nonzero = full
            .grads
            .iter()
            .filter(|g| common::max_abs_diff(g, &g.zeros_like().unwrap()) > 0.0)
            .count();
        assert!(
            nonzero >= full.grads.len() - 1,
            "only {nonzero} of {} gradients nonzero",
            full.grads.len()
        );
    }
}

/// Three negative columns: the loss is over `[positives; negatives_1..3]` and GradCache (chunks
/// of every column, each with its cached gradient) still gives the full batch's gradients.
#[test]
fn three_negative_columns_through_gradcache() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    common::tiny_model(&model_dir);
    let shards = tmp.path().join("shards");
    let vocab = common::vocab_size(&model_dir);
    common::write_shards_with_negatives(&shards, vocab, 3, 10, 3, 3);
    let cfg = encoder::BertConfig::from_file(&model_dir.join("config.json")).unwrap();
    let model = Trainable::fresh(&cfg, 3, Some(0.0), &common::cpu()).unwrap();
    let all = batches(&shards);
    let cols = Columns::of(&all[2]);
    assert_eq!(cols.negatives.len(), 3);
    let loss = LossConfig::default();
    let full = loss_and_grads(&model, &cols, loss, None, None).unwrap();
    for m in [1usize, 3, 4] {
        let cached = loss_and_grads(&model, &cols, loss, Some(m), None).unwrap();
        assert_close(
            &full,
            &cached,
            &model.names,
            &format!("3 negatives, mini-batch {m}"),
        );
    }
    // Each negative column counts: without the last two the loss is another number (fewer
    // candidates per anchor: a lower loss).
    let one = Columns {
        negatives: cols.negatives[..1].to_vec(),
        ..Columns::of(&all[2])
    };
    let fewer = loss_and_grads(&model, &one, loss, None, None).unwrap();
    assert!(fewer.loss < full.loss, "{} vs {}", fewer.loss, full.loss);
}

/// With dropout on, GradCache must replay each chunk's masks: its gradients equal those of one
/// graph over the same chunks drawing masks in the same order.
#[test]
fn dropout_masks_are_replayed() {
    let (_tmp, model, batches) = setup(0.1);
    let cols = Columns::of(&batches[0]);
    let m = 4;
    let loss = LossConfig::default();

    let mut rng = DropoutRng::new(11);
    let cached = loss_and_grads(&model, &cols, loss, Some(m), Some(&mut rng)).unwrap();

    // Reference: chunks embedded with a graph, same RNG sequence, one backward.
    let mut rng_ref = DropoutRng::new(11);
    let mut embs = Vec::new();
    for col in [cols.anchor, cols.positive] {
        let n = col.ids.dims()[0];
        let mut parts = Vec::new();
        for s in (0..n).step_by(m) {
            let len = m.min(n - s);
            let ids = col.ids.narrow(0, s, len).unwrap();
            let mask = col.mask.narrow(0, s, len).unwrap();
            // The trainer trims each chunk to its longest row; do the same.
            let t = mask
                .sum(1)
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap() as usize;
            let (ids, mask) = (ids.narrow(1, 0, t).unwrap(), mask.narrow(1, 0, t).unwrap());
            parts.push(model.embed(&ids, &mask, Some(&mut rng_ref)).unwrap());
        }
        embs.push(Tensor::cat(&parts, 0).unwrap());
    }
    let l = train::loss::mnrl(&embs[0], &embs[1], &[], 20.0, LossKind::Symmetric).unwrap();
    let store = l.backward().unwrap();
    let reference = train::StepGrads {
        loss: l.to_scalar::<f32>().unwrap() as f64,
        grads: model
            .vars
            .iter()
            .map(|v| store.get(v.as_tensor()).unwrap().clone())
            .collect(),
    };
    assert_close(
        &reference,
        &cached,
        &model.names,
        "dropout 0.1, mini-batch 4",
    );
    // Both consumed the same masks, so the RNGs end in the same place.
    assert_eq!(rng.state(), rng_ref.state());
    // And dropout did something: the eval-mode loss differs.
    let eval = loss_and_grads(&model, &cols, loss, None, None).unwrap();
    assert!((eval.loss - cached.loss).abs() > 1e-6);
}
