//! Token ids equal the real all-MiniLM-L6-v2 tokenizer's (sentence-transformers 6.2.0).

use mixer::MixTokenizer;
use testdata::{reference_dir, test_model_dir};

#[test]
fn ids_match_reference_at_256_and_128() {
    let (Some(model), Some(reference)) = (test_model_dir(), reference_dir()) else {
        return;
    };
    let parity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("minilm_parity.json")).unwrap())
            .unwrap();
    let sentences: Vec<String> = serde_json::from_value(parity["sentences"].clone()).unwrap();
    for (key, a_max, b_max) in [
        ("input_ids_max256", 256, 128),
        ("input_ids_max128", 128, 256),
    ] {
        let want: Vec<Vec<u32>> = serde_json::from_value(parity[key].clone()).unwrap();
        // A model folder works as well as its tokenizer.json.
        let tok = MixTokenizer::open(&model, a_max, b_max).unwrap();
        assert_eq!(tok.pad_id(), 0);
        let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let got = tok.encode_many(&texts, true).unwrap();
        assert_eq!(got, want, "{key} via max_length_a");
        let tok = MixTokenizer::open(&model.join("tokenizer.json"), b_max, a_max).unwrap();
        let got = tok.encode_many(&texts, false).unwrap();
        assert_eq!(got, want, "{key} via max_length_b");
    }
    assert!(
        sentences.len() > 5,
        "the reference has long, unicode and blank sentences"
    );
}
