//! The candle graph as the trainer uses it: built over a VarMap, dropout masks replayable from a
//! cloned DropoutRng, and gradients reaching every parameter (no op without a backward).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use encoder::{l2_normalize, mean_pool, BertConfig, BertModel, Compute, DropoutRng, OpsPath};

fn tiny() -> BertConfig {
    BertConfig {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 20,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        ..BertConfig::minilm_l6()
    }
}

fn batch() -> (Tensor, Tensor) {
    let ids = Tensor::new(&[[1u32, 5, 9, 2, 0, 0], [1, 7, 3, 8, 4, 2]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
    (ids, mask)
}

fn model(varmap: &VarMap) -> BertModel {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &tiny()).unwrap()
}

fn vec3(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn varmap_holds_hf_names() {
    let varmap = VarMap::new();
    let _ = model(&varmap);
    let data = varmap.data().lock().unwrap();
    for name in [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.attention.output.LayerNorm.bias",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.bias",
        "encoder.layer.1.output.LayerNorm.weight",
    ] {
        assert!(data.contains_key(name), "missing {name}");
    }
    // 5 embedding tensors + 16 per layer.
    assert_eq!(data.len(), 5 + 16 * 2);
}

#[test]
fn dropout_replays_from_a_clone_and_state() {
    let varmap = VarMap::new();
    let m = model(&varmap);
    let (ids, mask) = batch();
    let eval = vec3(&m.forward(&ids, &mask, None).unwrap());
    assert_eq!(
        eval,
        vec3(&m.forward(&ids, &mask, None).unwrap()),
        "eval is deterministic"
    );

    let mut rng = DropoutRng::new(42);
    let mut replay = rng.clone();
    let a = vec3(&m.forward(&ids, &mask, Some(&mut rng)).unwrap());
    let b = vec3(&m.forward(&ids, &mask, Some(&mut replay)).unwrap());
    assert_eq!(a, b, "a clone replays the same masks");
    assert_ne!(a, eval, "dropout changes the output");
    assert_eq!(rng.state(), replay.state());

    // The stream moves on: the next forward differs; from_state resumes it exactly.
    let saved = rng.state();
    let c = vec3(&m.forward(&ids, &mask, Some(&mut rng)).unwrap());
    assert_ne!(a, c);
    let mut resumed = DropoutRng::from_state(saved);
    assert_eq!(
        c,
        vec3(&m.forward(&ids, &mask, Some(&mut resumed)).unwrap())
    );
    let json = serde_json::to_string(&saved).unwrap();
    assert_eq!(
        serde_json::from_str::<encoder::DropoutRngState>(&json).unwrap(),
        saved
    );
}

#[test]
fn dropout_keeps_about_1_minus_p_scaled() {
    let mut rng = DropoutRng::new(1);
    let m = rng.mask(&[100_000], 0.1, DType::F32, &Device::Cpu).unwrap();
    let v: Vec<f32> = m.to_vec1().unwrap();
    let kept = v.iter().filter(|&&x| x > 0.0).count() as f64 / v.len() as f64;
    assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
    assert!(v.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.9).abs() < 1e-6));
}

/// Pooling straight from the real tokens gives mean_pool's vectors and gradients, on the fused
/// path and the composed one (a row without tokens: zeros).
#[test]
fn mean_pooled_forward_equals_mean_pool_of_the_forward() {
    let varmap = VarMap::new();
    let mut m = model(&varmap);
    let (ids, mask) = batch();
    let mask = Tensor::cat(
        &[&mask, &mask.zeros_like().unwrap().narrow(0, 0, 1).unwrap()],
        0,
    )
    .unwrap();
    let ids = Tensor::cat(&[&ids, &ids.narrow(0, 0, 1).unwrap()], 0).unwrap();
    let w = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap();
    for ops in [OpsPath::Fused, OpsPath::Composed] {
        m.set_compute(Compute {
            ops,
            matmul: DType::F32,
        });
        let pooled = m.forward_mean_pooled(&ids, &mask, None).unwrap();
        let want = mean_pool(&m.forward(&ids, &mask, None).unwrap(), &mask).unwrap();
        let d = max_abs(&(&pooled - &want).unwrap());
        assert!(d < 1e-6, "{ops:?}: pooled vectors differ by {d}");
        let last: Vec<f32> = pooled
            .get(pooled.dim(0).unwrap() - 1)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            last.iter().all(|&v| v == 0.0),
            "a row without tokens pools to zeros"
        );
        let grads = |t: &Tensor| {
            let loss = t.broadcast_mul(&w).unwrap().sum_all().unwrap();
            loss.backward().unwrap()
        };
        let (g, gw) = (grads(&pooled), grads(&want));
        for var in varmap.all_vars() {
            let (a, b) = (g.get(&var).unwrap(), gw.get(&var).unwrap());
            let d = max_abs(&(a - b).unwrap());
            assert!(
                d <= 1e-5 * max_abs(b).max(1e-3),
                "{ops:?}: gradients differ by {d}"
            );
        }
    }
}

/// The flags are drawn in parallel blocks, each from a copy of the stream moved to its first
/// word: they must be the serial stream's, across block edges and from one call to the next.
#[test]
fn dropout_flags_are_the_serial_streams_draws() {
    use rand::{RngCore, SeedableRng};
    let p = 0.1;
    let threshold = (p * 4294967296.0f64).round() as u32;
    let mut serial = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut rng = DropoutRng::new(5);
    for n in [150_001usize, 3, 70_000] {
        let want: Vec<u8> = (0..n)
            .map(|_| u8::from(serial.next_u32() >= threshold))
            .collect();
        assert_eq!(rng.keep(n, p), want, "{n} flags");
    }
    assert_eq!(rng.state().word_pos, serial.get_word_pos() as u64);
}

/// A loss touching every output dimension unevenly, with dropout, and the gradient norm of
/// every parameter (panics where none flows).
fn loss_and_grad_norms(m: &BertModel, varmap: &VarMap) -> (f32, Vec<(String, f32)>) {
    let (ids, mask) = batch();
    let mut rng = DropoutRng::new(3);
    let hidden = m.forward(&ids, &mask, Some(&mut rng)).unwrap();
    let pooled = l2_normalize(&mean_pool(&hidden, &mask).unwrap()).unwrap();
    let w = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap();
    let loss = pooled.broadcast_mul(&w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut norms: Vec<(String, f32)> = data
        .iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (
                name.clone(),
                g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap(),
            )
        })
        .collect();
    norms.sort_by(|a, b| a.0.cmp(&b.0));
    (loss.to_scalar().unwrap(), norms)
}

#[test]
fn gradients_reach_every_parameter() {
    let varmap = VarMap::new();
    let m = model(&varmap);
    for (name, norm) in loss_and_grad_norms(&m, &varmap).1 {
        // The type embedding has 2 rows; only row 0 is used, but the tensor still gets a grad.
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}

/// The GPU's path (composed LayerNorm, softmax and GELU: candle's fused ones have no backward,
/// the CPU's `ops` run on the CPU only) built on the CPU: gradients everywhere, and the same
/// loss and gradients as the fused CPU path up to float noise.
#[test]
fn the_composed_path_is_differentiable_and_matches_the_fused_one() {
    let varmap = VarMap::new();
    let mut m = model(&varmap);
    assert_eq!(m.compute(), Compute::for_device(&Device::Cpu));
    assert_eq!(m.compute().ops, OpsPath::Fused);
    let (fused_loss, fused) = loss_and_grad_norms(&m, &varmap);
    m.set_compute(Compute {
        ops: OpsPath::Composed,
        matmul: DType::F32,
    });
    let (loss, composed) = loss_and_grad_norms(&m, &varmap);
    assert!(
        ((loss - fused_loss) / fused_loss).abs() < 1e-5,
        "loss {loss} (composed) vs {fused_loss} (fused)"
    );
    for ((name, n), (_, f)) in composed.iter().zip(&fused) {
        assert!(*n > 0.0, "zero gradient for {name} on the composed path");
        // The key bias's gradient is analytically zero (softmax ignores a per-query constant):
        // both paths give float noise there, ~1e-21 here, not comparable figures.
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        assert!((n - f).abs() <= 1e-4 * f, "{name}: |g|² {n} vs {f} (fused)");
    }
}

#[test]
fn bert_prefix_is_accepted() {
    let varmap = VarMap::new();
    let m = model(&varmap);
    let (ids, mask) = batch();
    let want = vec3(&m.forward(&ids, &mask, None).unwrap());
    let prefixed: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("bert.{k}"), v.as_tensor().clone()))
        .collect();
    let vb = VarBuilder::from_tensors(prefixed, DType::F32, &Device::Cpu);
    let m2 = BertModel::load(vb, &tiny()).unwrap();
    assert_eq!(want, vec3(&m2.forward(&ids, &mask, None).unwrap()));
}

/// The largest absolute value of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Attention runs over each sequence's own rows (the CPU's fused op) or per group of sequences
/// of similar lengths, each padded only to its group's longest (the composed path): either way,
/// every sequence's hidden states and gradients must be those it has alone. Lengths 3 to 210
/// make the grouping split the batch (one group would pad all five rows to 210).
#[test]
fn grouped_attention_gives_each_sequence_what_it_gets_alone() {
    for ops in [OpsPath::Fused, OpsPath::Composed] {
        each_sequence_gets_what_it_gets_alone(Compute {
            ops,
            matmul: DType::F32,
        });
    }
}

fn each_sequence_gets_what_it_gets_alone(compute: Compute) {
    let cfg = BertConfig {
        max_position_embeddings: 256,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        ..tiny()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut m = BertModel::load(vb, &cfg).unwrap();
    m.set_compute(compute);
    let lengths = [200usize, 4, 0, 3, 210, 5];
    let t = 210;
    let row = |len: usize, at: usize| -> Vec<u32> {
        (0..len)
            .map(|j| ((at * 7 + j * 3) % 49 + 1) as u32)
            .collect()
    };
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for (at, &len) in lengths.iter().enumerate() {
        let r = row(len, at);
        ids.extend(r.iter().copied().chain(std::iter::repeat_n(0, t - len)));
        mask.extend((0..t).map(|j| u32::from(j < len)));
    }
    let ids = Tensor::from_vec(ids, (lengths.len(), t), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (lengths.len(), t), &Device::Cpu).unwrap();
    let weights = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap();
    let loss_of = |hidden: &Tensor, mask: &Tensor| {
        let pooled = l2_normalize(&mean_pool(hidden, mask).unwrap()).unwrap();
        pooled.broadcast_mul(&weights).unwrap().sum_all().unwrap()
    };
    let batched = m.forward(&ids, &mask, None).unwrap();
    let real = mask.narrow(0, 0, 2).unwrap();
    let (kept_rows, kept_mask) = (
        Tensor::cat(
            &[
                &batched.narrow(0, 0, 2).unwrap(),
                &batched.narrow(0, 3, 3).unwrap(),
            ],
            0,
        )
        .unwrap(),
        Tensor::cat(&[&real, &mask.narrow(0, 3, 3).unwrap()], 0).unwrap(),
    );
    let grads = loss_of(&kept_rows, &kept_mask).backward().unwrap();
    assert!(
        vec3(&batched.get(2).unwrap()).iter().all(|&x| x == 0.0),
        "a row without tokens stays zeros"
    );

    let mut alone_grads: Vec<Option<Tensor>> = vec![None; varmap.all_vars().len()];
    for (at, &len) in lengths.iter().enumerate().filter(|(_, &l)| l > 0) {
        let one_ids = Tensor::new(row(len, at), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let one_mask = Tensor::ones((1, len), DType::U32, &Device::Cpu).unwrap();
        let alone = m.forward(&one_ids, &one_mask, None).unwrap();
        let got = batched.get(at).unwrap().narrow(0, 0, len).unwrap();
        let diff = max_abs(&(got - alone.get(0).unwrap()).unwrap());
        assert!(
            diff <= 1e-5,
            "{:?}: row {at} (length {len}): hidden states differ by {diff}",
            compute.ops
        );
        let g = loss_of(&alone, &one_mask).backward().unwrap();
        for (sum, var) in alone_grads.iter_mut().zip(varmap.all_vars()) {
            let Some(gv) = g.get(var.as_tensor()) else {
                continue;
            };
            *sum = Some(match sum.take() {
                Some(s) => (s + gv).unwrap(),
                None => gv.clone(),
            });
        }
    }
    for (sum, var) in alone_grads.iter().zip(varmap.all_vars()) {
        let (Some(want), Some(got)) = (sum, grads.get(var.as_tensor())) else {
            continue;
        };
        let (scale, diff) = (max_abs(want), max_abs(&(got - want).unwrap()));
        assert!(
            diff <= 1e-4 * scale.max(1e-3),
            "{:?}: {:?}: gradient differs by {diff} (scale {scale})",
            compute.ops,
            var.shape()
        );
    }
}
