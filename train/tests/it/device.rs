//! The GPU's side of training, checked on the CPU (this project's machines have no GPU): the
//! composed-ops graph a GPU trains (forced here on the CPU) gives every parameter a gradient and
//! the fused CPU path's loss; bf16 products keep f32 master weights and gradients; checkpoints
//! carry nothing of the device or ops path they were written from.

use crate::common;

use candle_core::{DType, Device, Tensor};
use encoder::{Compute, DropoutRng, OpsPath, Precision};
use loader::Column;
use schemas::NoProgress;
use train::{loss_and_grads, Columns, LossConfig, RunOptions, StepGrads, TrainConfig, Trainable};

fn tiny(dir: &std::path::Path) -> Trainable {
    common::tiny_model(dir);
    let config = encoder::BertConfig::from_file(&dir.join("config.json")).unwrap();
    Trainable::fresh(&config, 11, Some(0.1), &Device::Cpu).unwrap()
}

/// Two columns of 6 rows of uneven lengths (padding in every column).
fn columns(vocab: u32) -> (Column, Column) {
    let col = |seed: u32, max: usize| {
        let rows: Vec<Vec<u32>> = (0..6u32)
            .map(|i| {
                let len = 3 + ((i * 7 + seed) as usize % (max - 2));
                (0..len as u32)
                    .map(|j| 5 + (i * 31 + j * 17 + seed) % (vocab - 5))
                    .collect()
            })
            .collect();
        let (ids, mask, t) = loader::pad(&rows, 0);
        Column {
            ids: Tensor::from_vec(ids, (6, t), &Device::Cpu).unwrap(),
            mask: Tensor::from_vec(mask, (6, t), &Device::Cpu).unwrap(),
        }
    };
    (col(1, 10), col(4, 16))
}

/// Loss and gradients of the symmetric MNRL with dropout from a fixed seed.
fn step(model: &Trainable, a: &Column, p: &Column) -> StepGrads {
    let cols = Columns {
        anchor: a,
        positive: p,
        negatives: Vec::new(),
    };
    let mut rng = DropoutRng::new(9);
    loss_and_grads(model, &cols, LossConfig::default(), None, Some(&mut rng)).unwrap()
}

fn norm(t: &Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    norm(&(a - b).unwrap()).sqrt() / norm(b).sqrt().max(1e-30)
}

#[test]
fn the_gpu_graph_trains_every_parameter_and_matches_the_fused_cpu_path() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny(&tmp.path().join("model"));
    let (a, p) = columns(common::vocab_size(&tmp.path().join("model")));
    assert_eq!(
        model.model.compute().ops,
        OpsPath::Fused,
        "the CPU's own path"
    );
    let fused = step(&model, &a, &p);

    // What a GPU runs: composed ops (Compute::for_device of a CUDA device), forced on the CPU.
    model.model.set_compute(Compute {
        ops: OpsPath::Composed,
        matmul: DType::F32,
    });
    let composed = step(&model, &a, &p);
    for ((name, g), f) in model.names.iter().zip(&composed.grads).zip(&fused.grads) {
        assert!(
            norm(g) > 0.0,
            "no gradient reaches `{name}` on the composed path"
        );
        // Analytically zero (softmax ignores a per-query constant): float noise on both paths.
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let d = rel_diff(g, f);
        assert!(
            d < 1e-4,
            "`{name}`: composed vs fused gradients differ by {d:.1e}"
        );
    }
    let rel = (composed.loss - fused.loss).abs() / fused.loss;
    assert!(
        rel < 1e-5,
        "loss {} (composed) vs {} (fused)",
        composed.loss,
        fused.loss
    );
}

#[test]
fn bf16_products_keep_f32_weights_gradients_and_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny(&tmp.path().join("model"));
    let (a, p) = columns(common::vocab_size(&tmp.path().join("model")));
    let f32_step = step(&model, &a, &p);
    // The GPU's bf16 graph, on the CPU (candle's CPU runs bf16 products, slowly): the library
    // allows it; the command line refuses bf16 on the CPU.
    model.model.set_compute(Compute {
        ops: OpsPath::Composed,
        matmul: DType::BF16,
    });
    let bf16 = step(&model, &a, &p);
    let rel = (bf16.loss - f32_step.loss).abs() / f32_step.loss;
    assert!(
        rel < 1e-2,
        "bf16 loss {} vs f32 {}",
        bf16.loss,
        f32_step.loss
    );
    assert!(rel > 0.0, "bf16 products changed nothing: were they bf16?");
    for ((name, g), f) in model.names.iter().zip(&bf16.grads).zip(&f32_step.grads) {
        assert_eq!(g.dtype(), DType::F32, "`{name}`: gradient not f32");
        assert!(norm(g) > 0.0, "no gradient reaches `{name}` in bf16");
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let d = rel_diff(g, f);
        assert!(d < 0.1, "`{name}`: bf16 gradient off by {d:.1e}");
    }
    assert!(
        model.vars.iter().all(|v| v.dtype() == DType::F32),
        "master weights stay f32"
    );
}

#[test]
fn the_cpu_refuses_reduced_precision_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny(&tmp.path().join("model"));
    for p in [Precision::Tf32, Precision::Bf16] {
        let e = model.set_precision(p, None).unwrap_err().to_string();
        assert!(
            e.contains("not available on the CPU") && !e.contains('\n'),
            "{e}"
        );
    }
    model.set_precision(Precision::F32, None).unwrap();
}

fn config() -> TrainConfig {
    TrainConfig {
        lr: 1e-3,
        warmup: 2,
        steps: 6,
        dropout: Some(0.1),
        save_steps: Some(3),
        seed: 5,
        ..TrainConfig::default()
    }
}

/// A checkpoint holds plain tensors and settings: no device, no ops path. A run written by the
/// GPU's graph (composed ops, forced on the CPU) resumes on the CPU's fused path and continues
/// as a run that never left it, up to float noise. What this cannot show here: tensors read
/// back from a real GPU (candle copies them to the host to save; `safetensors::load` puts them
/// on whichever device the resume names).
#[test]
fn a_checkpoint_from_the_gpu_graph_resumes_on_the_cpu_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |p: &str| tmp.path().join(p);
    common::tiny_model(&path("model"));
    let vocab = common::vocab_size(&path("model"));
    common::write_shards(&path("shards"), vocab, 6, 6, 3);
    let cpu_run = train::train(
        &path("shards"),
        &path("model"),
        &config(),
        &RunOptions::new(path("a")),
        &NoProgress,
    )
    .unwrap();

    let mut gpu_graph = RunOptions::new(path("b"));
    gpu_graph.ops = Some(OpsPath::Composed);
    gpu_graph.stop_after = Some(4);
    let first = train::train(
        &path("shards"),
        &path("model"),
        &config(),
        &gpu_graph,
        &NoProgress,
    )
    .unwrap();
    let ck = path("b/checkpoint-3");
    assert_no_device_trace(&ck);
    let rest = train::resume(&ck, &RunOptions::new(path("b")), &NoProgress).unwrap();
    assert_eq!(rest.records.first().unwrap().step, 4);
    let resumed: Vec<f64> = first.records[..3]
        .iter()
        .chain(&rest.records)
        .map(|r| r.loss)
        .collect();
    for (i, (got, want)) in resumed.iter().zip(&cpu_run.records).enumerate() {
        let rel = (got - want.loss).abs() / want.loss;
        assert!(
            rel < 1e-4,
            "step {}: {got} vs {} (rel {rel:.1e})",
            i + 1,
            want.loss
        );
    }
}

/// Every file of a checkpoint: f32 tensors, and no word of a device or ops path.
fn assert_no_device_trace(dir: &std::path::Path) {
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let tensors = candle_core::safetensors::load(dir.join(file), &Device::Cpu).unwrap();
        assert!(
            tensors.values().all(|t| t.dtype() == DType::F32),
            "{file}: not all f32"
        );
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8_lossy(&bytes[8..8 + header_len]).to_lowercase();
        for word in ["cuda", "cpu", "device", "fused", "composed"] {
            assert!(!header.contains(word), "{file}'s header mentions {word}");
        }
    }
    let state = std::fs::read_to_string(dir.join("trainer_state.json"))
        .unwrap()
        .to_lowercase();
    for word in ["cuda", "\"device", "fused", "composed", "precision"] {
        assert!(!state.contains(word), "trainer_state.json mentions {word}");
    }
}
