//! The loss with several negative columns against a reference (`scripts/mnrl-reference.py`):
//! sentence-transformers' MultipleNegativesRankingLoss over `[positives; all negatives]`, on the
//! same seeded vectors, L2-normalised as the model's last module does. The reference holds only
//! numbers: loss, and per column the gradient's norm and its dot product with a seeded probe.

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use train::loss::{mnrl, LossKind};

/// `count` values in [-1, 1) with 24 significant bits (exact in f32), SplitMix64 as the script.
fn splitmix_values(seed: u64, count: usize) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
        })
        .collect()
}

/// Column `column` (0 anchor, 1 positive, 2.. negatives) of case `seed`, `[rows, dim]`.
fn matrix(seed: u64, column: u64, rows: usize, dim: usize) -> Tensor {
    let v = splitmix_values(seed * 1000 + column, rows * dim);
    Tensor::from_vec(v, (rows, dim), &Device::Cpu).unwrap()
}

fn l2_normalise(x: &Tensor) -> Tensor {
    let norm = x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    x.broadcast_div(&norm).unwrap()
}

fn reference() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnrl-negatives.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(err < rel, "{what}: {got} vs reference {want} ({err:.1e})");
}

#[test]
fn several_negative_columns_match_the_reference() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.iter().any(|c| c["negatives"].as_u64() == Some(3)));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let u = |k: &str| case[k].as_u64().unwrap();
        let (seed, rows, dim, negatives) = (
            u("seed"),
            u("rows") as usize,
            u("dim") as usize,
            u("negatives"),
        );
        let kind = if case["symmetric"].as_bool().unwrap() {
            LossKind::Symmetric
        } else {
            LossKind::OneWay
        };
        let raw: Vec<Var> = (0..2 + negatives)
            .map(|c| Var::from_tensor(&matrix(seed, c, rows, dim)).unwrap())
            .collect();
        let unit: Vec<Tensor> = raw.iter().map(|v| l2_normalise(v.as_tensor())).collect();
        let scale = case["scale"].as_f64().unwrap();
        let loss = mnrl(&unit[0], &unit[1], &unit[2..], scale, kind).unwrap();
        close(
            loss.to_scalar::<f32>().unwrap() as f64,
            case["loss"].as_f64().unwrap(),
            1e-5,
            &format!("{name}: loss"),
        );
        let grads = loss.backward().unwrap();
        for (c, v) in raw.iter().enumerate() {
            let g = grads.get(v.as_tensor()).unwrap();
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt();
            let probe = matrix(seed, 100 + c as u64, rows, dim);
            let dot = (g * probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let want = |k: &str| case[k][c].as_f64().unwrap();
            close(
                norm as f64,
                want("grad_norms"),
                1e-4,
                &format!("{name}: column {c} grad norm"),
            );
            close(
                dot as f64,
                want("grad_probes"),
                1e-4,
                &format!("{name}: column {c} grad probe"),
            );
        }
    }
}
