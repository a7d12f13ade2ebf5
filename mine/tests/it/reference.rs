//! Agreement with sentence-transformers' `mine_hard_negatives` (`sampling_strategy="top"`) on the
//! same model and fixture datasets. The reference was generated once by
//! `scripts/mine-reference.py` (PyTorch is too heavy for CI) and is committed as sha256 hashes
//! of the anchors and their chosen negatives only: `mine/tests/data/reference-*.json`.

use std::collections::{BTreeMap, BTreeSet};

use mine::knn::SearchOptions;
use mine::negatives::{choose, NegativeOptions};
use mine::{Problem, TextStore};
use schemas::NoProgress;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common;

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn options(v: &Value) -> NegativeOptions {
    let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
    let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
    NegativeOptions {
        range_min: u("range_min").unwrap_or(0),
        range_max: u("range_max"),
        absolute_margin: f("absolute_margin"),
        relative_margin: f("relative_margin"),
        max_score: f("max_score"),
        min_score: f("min_score"),
        num_negatives: u("num_negatives").unwrap_or(3),
        ..Default::default()
    }
}

fn agreement(fixture: Option<common::Fixture>, reference: &str) {
    let Some(fx) = fixture else { return };
    let Some(embedder) = common::embedder() else {
        return;
    };
    let path = common::data_file(reference);
    let name = reference;
    let reference: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let weights = common::model_dir().unwrap().join("model.safetensors");
    assert_eq!(
        reference["model_sha256"].as_str().unwrap(),
        schemas::sha256_file(&weights).unwrap(),
        "the reference was made with another model than the test model"
    );
    assert_eq!(
        reference["rows"].as_u64().unwrap(),
        fx.records.len() as u64,
        "same fixture rows"
    );
    let p = Problem::build(&fx.records, None, TextStore::in_memory()).unwrap();
    let emb = embedder.embed(&p.texts, &NoProgress).unwrap();
    for cfg in reference["configs"].as_array().unwrap() {
        let o = options(&cfg["options"]);
        let (chosen, _, _) = choose(&p, &emb, &o, SearchOptions::default(), &NoProgress).unwrap();
        let ours: BTreeMap<String, BTreeSet<String>> = chosen
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .map(|(q, c)| {
                let anchor = sha(&p.texts.text(p.queries[q]).unwrap());
                (
                    anchor,
                    c.iter()
                        .map(|h| sha(&p.texts.text(h.index).unwrap()))
                        .collect(),
                )
            })
            .collect();
        let theirs: BTreeMap<String, BTreeSet<String>> = cfg["negatives"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(a, n)| {
                let set = n
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h.as_str().unwrap().to_owned());
                (a.clone(), set.collect())
            })
            .collect();
        let anchors: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        let same = anchors
            .iter()
            .filter(|a| ours.get(**a) == theirs.get(**a))
            .count();
        let share = same as f64 / anchors.len() as f64;
        eprintln!(
            "{name}: {}: {same}/{} anchors with identical negative sets",
            cfg["options"],
            anchors.len()
        );
        assert!(anchors.len() > 50, "a real comparison");
        assert!(
            share >= 0.95,
            "{:?}: only {same} of {} anchors agree",
            cfg["options"],
            anchors.len()
        );
    }
}

#[test]
fn negatives_agree_with_sentence_transformers_on_squad() {
    agreement(common::squad(), "reference-squad.json");
}

#[test]
fn negatives_agree_with_sentence_transformers_on_amazon_qa() {
    agreement(common::amazon(), "reference-amazon_qa.json");
}
