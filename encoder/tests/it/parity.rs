//! Parity with sentence-transformers on the real all-MiniLM-L6-v2 weights
//! (`shared/reference/minilm_parity.json`; weights from `scripts/fetch-test-model.sh`).

use candle_core::{Device, Tensor};
use encoder::{Backend, SentenceEncoder};
use rand::{Rng, SeedableRng};
use serde_json::Value;

pub(crate) struct Fixture {
    pub reference: Value,
    pub model_dir: std::path::PathBuf,
}

pub(crate) fn fixture() -> Option<Fixture> {
    let model_dir = testdata::test_model_dir()?;
    let reference_dir = testdata::reference_dir()?;
    let text = std::fs::read_to_string(reference_dir.join("minilm_parity.json")).unwrap();
    Some(Fixture {
        reference: serde_json::from_str(&text).unwrap(),
        model_dir,
    })
}

pub(crate) fn sentences(r: &Value) -> Vec<String> {
    r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn matrix<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub(crate) fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every vector within cosine ≥ 0.99999 and max |diff| ≤ 1e-4 of the reference.
fn assert_parity(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: count");
    let (mut worst_cos, mut worst_diff) = (1.0f64, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: dim of #{i}");
        let cos = cosine(g, w);
        let diff = max_abs(g, w);
        assert!(cos >= 0.99999, "{what}: sentence #{i} cosine {cos}");
        assert!(diff <= 1e-4, "{what}: sentence #{i} max abs diff {diff}");
        worst_cos = worst_cos.min(cos);
        worst_diff = worst_diff.max(diff);
    }
    eprintln!("{what}: worst cosine {worst_cos:.9}, worst max abs diff {worst_diff:.2e}");
}

#[test]
fn token_ids_match_reference_at_256_and_128() {
    let Some(f) = fixture() else { return };
    let mut enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    assert_eq!(enc.max_seq_length(), 256, "sentence_bert_config.json");
    let sents = sentences(&f.reference);
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).collect();
    let ids = enc.tokenize(&refs).unwrap();
    let want: Vec<Vec<u32>> = matrix(&f.reference["input_ids_max256"]);
    assert_eq!(ids, want, "max 256");
    assert!(
        ids.iter().any(|s| s.len() == 256),
        "the long text is truncated"
    );
    enc.set_max_seq_length(128).unwrap();
    let ids = enc.tokenize(&refs).unwrap();
    let want: Vec<Vec<u32>> = matrix(&f.reference["input_ids_max128"]);
    assert_eq!(ids, want, "max 128");
}

#[test]
fn packed_cpu_embeddings_match_reference() {
    let Some(f) = fixture() else { return };
    let enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    assert_eq!(enc.backend(), Backend::Packed);
    assert!(enc.normalize(), "modules.json has a Normalize module");
    let sents = sentences(&f.reference);
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).collect();
    let want: Vec<Vec<f32>> = matrix(&f.reference["embeddings"]);
    let batched = enc.encode(&refs, 32).unwrap();
    assert_parity(&batched, &want, "packed, batch 32");
    // Batches of 5 and one by one give the same vectors as one batch.
    for bs in [1, 5] {
        let other = enc.encode(&refs, bs).unwrap();
        for (i, (a, b)) in batched.iter().zip(&other).enumerate() {
            assert!(
                max_abs(a, b) <= 1e-6,
                "packed batch {bs} vs 32, #{i}: {}",
                max_abs(a, b)
            );
        }
    }
}

#[test]
fn candle_graph_embeddings_match_reference_batched_and_single() {
    let Some(f) = fixture() else { return };
    let mut enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    enc.set_backend(Backend::Candle).unwrap();
    let sents = sentences(&f.reference);
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).collect();
    let want: Vec<Vec<f32>> = matrix(&f.reference["embeddings"]);
    let batched = enc.encode(&refs, 32).unwrap();
    assert_parity(&batched, &want, "candle, batch 32");
    let single = enc.encode(&refs, 1).unwrap();
    assert_parity(&single, &want, "candle, one by one");
    for (i, (a, b)) in batched.iter().zip(&single).enumerate() {
        assert!(
            max_abs(a, b) <= 1e-5,
            "candle batched vs single #{i}: {}",
            max_abs(a, b)
        );
    }
}

#[test]
fn padding_anywhere_gives_the_same_vectors() {
    let Some(f) = fixture() else { return };
    let enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    let sents = sentences(&f.reference);
    // The shorter sentences keep the test quick; the 256-token one is covered above.
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).take(12).collect();
    let ids = enc.tokenize(&refs).unwrap();
    let want: Vec<Vec<f32>> = matrix(&f.reference["embeddings"]);
    let want = &want[..refs.len()];
    let t = ids.iter().map(|s| s.len()).max().unwrap() + 7;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Layouts: right, left, and pads scattered at random positions (even inside the text).
    for layout in ["right", "left", "scattered"] {
        let mut flat_ids = Vec::new();
        let mut flat_mask = Vec::new();
        for s in &ids {
            let pads = t - s.len();
            let mut row: Vec<(u32, u32)> = s.iter().map(|&id| (id, 1)).collect();
            match layout {
                "right" => row.extend(std::iter::repeat_n((0, 0), pads)),
                "left" => {
                    let mut r: Vec<(u32, u32)> = std::iter::repeat_n((0, 0), pads).collect();
                    r.extend(row);
                    row = r;
                }
                _ => {
                    for _ in 0..pads {
                        let at = rng.random_range(0..=row.len());
                        // Pad ids need not be [PAD]: the mask alone must hide them.
                        row.insert(at, (rng.random_range(0..30000), 0));
                    }
                }
            }
            flat_ids.extend(row.iter().map(|p| p.0));
            flat_mask.extend(row.iter().map(|p| p.1));
        }
        let ids_t = Tensor::from_vec(flat_ids, (ids.len(), t), &Device::Cpu).unwrap();
        let mask_t = Tensor::from_vec(flat_mask, (ids.len(), t), &Device::Cpu).unwrap();
        let got = enc.embed_padded(&ids_t, &mask_t).unwrap();
        assert_parity(&got, want, layout);
    }
}

/// A copy of the model folder (weights linked) with some files replaced or removed.
fn variant(model: &std::path::Path, remove: &[&str], pooling: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "model.safetensors",
    ] {
        if remove.contains(&name) {
            continue;
        }
        std::os::unix::fs::symlink(model.join(name), dir.path().join(name)).unwrap();
    }
    if let Some(mode) = pooling {
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        let cfg = serde_json::json!({
            "word_embedding_dimension": 384,
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": mode == "max",
        });
        std::fs::write(dir.path().join("1_Pooling/config.json"), cfg.to_string()).unwrap();
    }
    dir
}

#[test]
fn plain_hf_folder_is_mean_pooled_without_normalize() {
    let Some(f) = fixture() else { return };
    let dir = variant(
        &f.model_dir,
        &["modules.json", "sentence_bert_config.json"],
        None,
    );
    let enc = SentenceEncoder::load(dir.path(), &Device::Cpu).unwrap();
    assert!(!enc.normalize());
    assert_eq!(
        enc.max_seq_length(),
        512,
        "tokenizer_config.json model_max_length"
    );
    let sents = sentences(&f.reference);
    let want: Vec<Vec<f32>> = matrix(&f.reference["embeddings"]);
    let short: Vec<usize> = (0..sents.len()).filter(|&i| sents[i].len() < 400).collect();
    let refs: Vec<&str> = short.iter().map(|&i| sents[i].as_str()).collect();
    let got = enc.encode(&refs, 16).unwrap();
    for (v, &i) in got.iter().zip(&short) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() > 1e-3, "not normalised");
        assert!(
            cosine(v, &want[i]) >= 0.99999,
            "same direction as the reference"
        );
    }
}

#[test]
fn cls_and_max_pooling_agree_between_packed_and_candle_graph() {
    let Some(f) = fixture() else { return };
    let sents = sentences(&f.reference);
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).take(10).collect();
    for mode in ["cls", "max"] {
        let dir = variant(&f.model_dir, &[], Some(mode));
        let mut enc = SentenceEncoder::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(format!("{:?}", enc.pooling()).to_lowercase(), mode);
        let packed = enc.encode(&refs, 4).unwrap();
        enc.set_backend(Backend::Candle).unwrap();
        let graph = enc.encode(&refs, 4).unwrap();
        for (i, (a, b)) in packed.iter().zip(&graph).enumerate() {
            assert!(max_abs(a, b) <= 1e-5, "{mode} #{i}: {}", max_abs(a, b));
        }
    }
}
