//! bf16 and int8 encoding on the CPU against f32, on the real all-MiniLM-L6-v2 weights: the
//! reference sentences' embeddings (cosine gates) and a retrieval set from the SQuAD 2.0 and
//! ELI5 fixtures (MRR@10 gate).

use candle_core::Device;
use encoder::{Backend, EvalSet, Precision, SentenceEncoder};

use crate::parity::{cosine, fixture, matrix, max_abs, sentences};

/// The accuracy gates: min cosine to the f32 embeddings.
fn gate(p: Precision) -> f64 {
    match p {
        Precision::Bf16 => 0.9999,
        _ => 0.995,
    }
}

#[test]
fn bf16_and_int8_embeddings_pass_the_cosine_gates() {
    let Some(f) = fixture() else { return };
    let mut enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    let sents = sentences(&f.reference);
    let refs: Vec<&str> = sents.iter().map(|s| s.as_str()).collect();
    let want: Vec<Vec<f32>> = matrix(&f.reference["embeddings"]);
    for p in [Precision::Bf16, Precision::Int8] {
        enc.set_precision(p).unwrap();
        assert_eq!(enc.precision(), p);
        let got = enc.encode(&refs, 32).unwrap();
        let cos: Vec<f64> = got.iter().zip(&want).map(|(a, b)| cosine(a, b)).collect();
        let min = cos.iter().copied().fold(1.0, f64::min);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| max_abs(a, b))
            .fold(0.0, f32::max);
        eprintln!("{p}: min cosine to f32 {min:.6}, max abs diff {diff:.2e}");
        assert!(min >= gate(p), "{p}: min cosine {min} below {}", gate(p));
        // The low-precision path really ran: f32 parity is ≤ 1e-4.
        assert!(
            diff > 1e-4,
            "{p}: vectors identical to f32 (max diff {diff})"
        );
        // Scales are per row, so a sentence's vector does not depend on its batch.
        let single = enc.encode(&refs[..6], 1).unwrap();
        for (i, (a, b)) in single.iter().zip(&got).enumerate() {
            assert!(max_abs(a, b) <= 1e-6, "{p} #{i}: batch of 1 vs 32");
        }
    }
    // Back to f32 restores the f32 weights.
    enc.set_precision(Precision::F32).unwrap();
    let got = enc.encode(&refs[..4], 4).unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| max_abs(a, b) <= 1e-4));
}

#[test]
fn low_precision_on_the_cpu_is_for_the_packed_encoder_only() {
    let Some(f) = fixture() else { return };
    let mut enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    enc.set_precision(Precision::Int8).unwrap();
    let err = enc.set_backend(Backend::Candle).unwrap_err().to_string();
    assert!(err.contains("packed backend"), "{err}");
    assert!(
        enc.set_precision(Precision::Tf32).is_err(),
        "tf32 is a GPU's"
    );
    // Training (the candle graph) stays f32 on the CPU.
    assert!(Precision::Bf16.check(&Device::Cpu).is_err());
    assert!(Precision::Bf16.check_inference(&Device::Cpu).is_ok());
}

/// Two fixture tasks in one candidate pool: SQuAD 2.0's answerable questions on the Normans
/// article, each to find its paragraph, and ELI5 titles, each to find its first answer.
fn retrieval_set() -> Option<EvalSet> {
    let squad = testdata::fixture_dir("squad2")?.join("dev-v2.0.Normans.pretty.json");
    let eli5 = testdata::fixture_dir("eli5")?.join("eli5-category-test.json");
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut records = Vec::new();
    for article in read(&squad)["data"].as_array().unwrap() {
        for para in article["paragraphs"].as_array().unwrap() {
            let context = para["context"].as_str().unwrap();
            for qa in para["qas"].as_array().unwrap() {
                if !qa["is_impossible"].as_bool().unwrap_or(false) {
                    let q = qa["question"].as_str().unwrap().to_owned();
                    records.push((q, context.to_owned(), None));
                }
            }
        }
    }
    for post in read(&eli5).as_array().unwrap() {
        if let Some(answer) = post["answers"]["text"][0].as_str() {
            let title = post["title"].as_str().unwrap().to_owned();
            records.push((title, answer.to_owned(), None));
        }
    }
    Some(EvalSet::from_records(records))
}

#[test]
fn bf16_and_int8_keep_retrieval_mrr_within_0_005_of_f32() {
    let (Some(f), Some(set)) = (fixture(), retrieval_set()) else {
        return;
    };
    assert!(set.queries.len() > 150 && set.candidates.len() > 100);
    let mut enc = SentenceEncoder::load(&f.model_dir, &Device::Cpu).unwrap();
    let mut mrr = Vec::new();
    for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
        enc.set_precision(p).unwrap();
        let m = set.evaluate(|t| enc.encode(t, 32)).unwrap();
        eprintln!(
            "{p}: MRR@10 {:.4}, R@1 {:.4} ({} queries, {} candidates)",
            m.mrr_at_10, m.recall_at_1, m.queries, m.candidates
        );
        mrr.push(m.mrr_at_10);
    }
    assert!(mrr[0] > 0.5, "f32 retrieves: MRR@10 {}", mrr[0]);
    for (p, m) in [(Precision::Bf16, mrr[1]), (Precision::Int8, mrr[2])] {
        assert!(
            (m - mrr[0]).abs() <= 0.005,
            "{p}: MRR@10 {m} vs f32 {}",
            mrr[0]
        );
    }
}
