//! Config loading: our root data_config.json, upstream's verbatim configs, per-site merging and
//! the list of what is missing.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{make_dataset, MULTI_QA};
use mixer::{resolve, MixConfig, MixError, SourceKind};
use testdata::reference_dir;

fn all_datasets(pairs: &Path) {
    for (id, arity, _) in MULTI_QA {
        make_dataset(pairs, id, *arity, 5, 5);
    }
    // Ingested too, though multi-qa gives it no weight (all-MiniLM-L6-v2's config does).
    make_dataset(pairs, "yahoo_question_answer", schemas::Arity::Pair, 5, 5);
}

fn root_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data_config.json")
}

#[test]
fn root_config_uses_our_ids_with_upstream_weights() {
    let cfg = MixConfig::read(&root_config()).unwrap();
    assert_eq!(cfg.total_weight(), 6454, "Σweight of the multi-qa mix");
    let pairs = tempfile::tempdir().unwrap();
    all_datasets(pairs.path());
    let sources = resolve(&cfg, pairs.path()).unwrap();
    assert_eq!(sources.len(), MULTI_QA.len());
    for (id, _, w) in MULTI_QA {
        let s = sources.iter().find(|s| s.id == *id).unwrap();
        assert_eq!(s.weight, *w, "{id}");
        assert!(matches!(s.kind, SourceKind::Dataset { .. }));
    }
}

#[test]
fn upstream_multi_qa_config_merges_sites_into_our_datasets() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let cfg = MixConfig::read(&reference.join("data_config.multi-qa.json")).unwrap();
    assert_eq!(cfg.entries.len(), 188);
    let pairs = tempfile::tempdir().unwrap();
    all_datasets(pairs.path());
    let sources = resolve(&cfg, pairs.path()).unwrap();
    // Every weight lands somewhere: the merged weights are exactly our table's.
    assert_eq!(sources.iter().map(|s| s.weight).sum::<u64>(), 6454);
    for (id, _, w) in MULTI_QA {
        let s = sources.iter().find(|s| s.id == *id).unwrap();
        assert_eq!(s.weight, *w, "{id}");
    }
    let se = sources
        .iter()
        .find(|s| s.id == "stackexchange_title_body")
        .unwrap();
    assert_eq!(se.names.len(), 91, "one entry per upstream site file");
}

#[test]
fn missing_sources_are_listed_never_dropped() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let cfg = MixConfig::read(&reference.join("data_config.all-MiniLM-L6-v2.json")).unwrap();
    let pairs = tempfile::tempdir().unwrap();
    all_datasets(pairs.path());
    let err = resolve(&cfg, pairs.path()).unwrap_err();
    let MixError::Missing { missing, .. } = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    for name in ["S2ORC_title_abstract.jsonl.gz", "AllNLI.jsonl.gz", "reddit"] {
        assert!(text.contains(name), "{name} missing from: {text}");
    }
    // Exactly the entries whose data we do not ingest.
    let unresolved: Vec<_> = cfg
        .entries
        .iter()
        .filter(|e| mixer::upstream_dataset_id(&e.name).is_none())
        .collect();
    assert_eq!(missing.len(), unresolved.len());

    // With those files present as normalized jsonl.gz, the verbatim config loads in full.
    for e in &unresolved {
        let path = pairs.path().join(&e.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        writeln!(gz, r#"["a","b"]"#).unwrap();
        gz.finish().unwrap();
    }
    let sources = resolve(&cfg, pairs.path()).unwrap();
    assert_eq!(
        sources.iter().map(|s| s.weight).sum::<u64>(),
        cfg.total_weight()
    );
    assert!(sources
        .iter()
        .any(|s| matches!(s.kind, SourceKind::Jsonl { .. }) && s.id == "AllNLI"));
}

#[test]
fn weights_summing_past_the_limit_are_a_clear_error_not_a_panic() {
    let half = u64::MAX / 2 + 1; // two of these overflow u64
    let p = Path::new("big.json");
    let json = format!(r#"[{{"name":"squad","weight":{half}}},{{"name":"eli5","weight":{half}}}]"#);
    let err = MixConfig::from_slice(p, json.as_bytes()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("big.json") && msg.contains(&(2 * half as u128).to_string()),
        "{msg}"
    );
    assert!(msg.contains("above the limit"), "{msg}");
    // Just under the limit is fine and sums exactly.
    let max = mixer::MAX_TOTAL_WEIGHT;
    let json = format!(
        r#"[{{"name":"squad","weight":{}}},{{"name":"eli5","weight":{}}}]"#,
        max - 1,
        1
    );
    assert_eq!(
        MixConfig::from_slice(p, json.as_bytes())
            .unwrap()
            .total_weight(),
        max
    );

    // A config built in code skips that check: merging entries onto one dataset is checked too.
    let pairs = tempfile::tempdir().unwrap();
    make_dataset(pairs.path(), "squad", schemas::Arity::Pair, 5, 5);
    let entry = |w| mixer::ConfigEntry {
        name: "squad".into(),
        lines: None,
        weight: w,
    };
    let cfg = MixConfig {
        path: p.to_path_buf(),
        entries: vec![entry(half), entry(half)],
    };
    let err = resolve(&cfg, pairs.path()).unwrap_err().to_string();
    assert!(err.contains("`squad`") && err.contains("limit"), "{err}");
}
