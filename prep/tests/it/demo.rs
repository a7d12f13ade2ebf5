//! `prep demo` as a new user runs it: the built binary, started in an empty temporary folder
//! with no PREP_SHARED and no ../shared beside it, must run the whole pipeline on its embedded
//! samples and raise retrieval quality on queries it never trained on.

use std::path::Path;
use std::process::Command;

fn metric(summary: &serde_json::Value, part: &str, when: &str, name: &str) -> f64 {
    summary[part][when][name]
        .as_f64()
        .unwrap_or_else(|| panic!("demo-summary.json has no {part}.{when}.{name}: {summary}"))
}

/// `prep demo ARGS` run in `cwd` as a new user would: no PREP_SHARED, no device chosen.
fn demo_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prep"))
        .arg("demo")
        .args(args)
        .current_dir(cwd)
        .env_remove("PREP_SHARED")
        .env_remove("PREP_DEVICE")
        .output()
        .expect("running prep demo")
}

#[test]
fn demo_runs_anywhere_and_generalises_to_held_out_queries() {
    let cwd = tempfile::tempdir().unwrap();
    // The temp folder's parent must not offer a ../shared either (it is the system temp dir).
    assert!(
        !cwd.path().join("../shared/fixtures").exists(),
        "a ../shared/fixtures is reachable from {}: run with TMPDIR elsewhere",
        cwd.path().display()
    );
    let output = demo_in(cwd.path(), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "prep demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let out = cwd.path().join("demo-run");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("demo-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["samples"], "embedded");

    // Every source's sample was ingested: no source was skipped, and enough data was mixed.
    assert!(
        !stderr.contains("skipped:"),
        "a sample was rejected:\n{stderr}"
    );
    let datasets = summary["datasets"].as_array().unwrap();
    let rows: u64 = datasets.iter().map(|d| d["rows"].as_u64().unwrap()).sum();
    assert!(datasets.len() >= 14, "datasets: {datasets:?}");
    assert!(rows >= 400, "{rows} rows in all");
    assert!(summary["mixed"].as_array().unwrap().len() >= 4, "{summary}");
    assert!(Path::new(&out.join("samples/stackexchange/Posts.xml")).is_file());

    let queries = metric(&summary, "held_out", "before", "queries");
    assert!(queries >= 50.0, "{queries} held-out queries");
    let before = metric(&summary, "held_out", "before", "mrr_at_10");
    let after = metric(&summary, "held_out", "after", "mrr_at_10");
    assert!(
        after >= before + 0.15 && after >= 1.5 * before,
        "held-out MRR@10 {before:.4} -> {after:.4}: training did not generalise\n{stdout}"
    );
    let r1 = metric(&summary, "held_out", "after", "recall_at_1");
    assert!(
        r1 > metric(&summary, "held_out", "before", "recall_at_1"),
        "{stdout}"
    );
    // The printed report carries the same figures.
    assert!(stdout.contains("held-out queries"), "{stdout}");
    assert!(stdout.contains(&format!("MRR@10 {after:.4}")), "{stdout}");
}

fn records(dir: &Path) -> Vec<schemas::PairRecord> {
    schemas::DatasetReader::open(dir)
        .and_then(|r| r.read_all())
        .unwrap()
}

fn shard_rows(dir: &Path) -> Vec<schemas::shards::ShardRow> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            let reader = schemas::shards::ShardReader::open(&p).unwrap();
            rows.extend(reader.read_rows().unwrap());
        }
    }
    rows
}

/// `prep demo --mine-negatives` (issue 10's quality comparison), mechanics only: both runs
/// train the same steps on the same rows, only the mined run's shards carry negatives, those
/// negatives are other training positives, and held-out MRR@10 is reported for base, pairs and
/// mined. (Whether mined negatives help is measured with the real model, see the README; the
/// tiny untrained model here mines near-random negatives.)
#[test]
fn demo_compares_training_with_and_without_mined_negatives() {
    // At the default batch size the mined samples cannot fill a batch with distinct texts: the
    // demo says so and what to change, instead of the mixer's error about one dataset.
    let cwd = tempfile::tempdir().unwrap();
    let output = demo_in(
        cwd.path(),
        &["--mine-negatives", "--mine-no-margin", "--steps", "12"],
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("every training dataset was left out") && said.contains("--batch-size"),
        "{said}"
    );

    let cwd = tempfile::tempdir().unwrap();
    let args = [
        "--mine-negatives",
        "--mine-no-margin",
        "--steps",
        "12",
        "--batch-size",
        "8",
    ];
    let output = demo_in(cwd.path(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "prep demo --mine-negatives failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = cwd.path().join("demo-run");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("demo-summary.json")).unwrap()).unwrap();
    let mined = &summary["mined"];
    assert_eq!(mined["steps_trained"], 12, "{summary}");
    for log in ["train-log.jsonl", "train-log-mined.jsonl"] {
        let steps = std::fs::read_to_string(out.join(log))
            .unwrap()
            .lines()
            .count();
        assert_eq!(steps, 12, "{log}");
    }
    assert_eq!(
        summary["mixed"], mined["mixed"],
        "both runs mix the same datasets"
    );
    let mixed = summary["mixed"].as_array().unwrap();
    assert!(!mixed.is_empty());
    let mrr = |v: &serde_json::Value| v["mrr_at_10"].as_f64().unwrap();
    for m in [
        mrr(&summary["held_out"]["before"]),
        mrr(&summary["held_out"]["after"]),
        mrr(&mined["held_out"]["after"]),
    ] {
        assert!((0.0..=1.0).contains(&m), "{summary}");
    }
    assert!(stdout.contains(&format!(
        "mined    MRR@10 {:.4}",
        mrr(&mined["held_out"]["after"])
    )));

    for id in mixed.iter().map(|v| v.as_str().unwrap()) {
        let with = records(&out.join("train-pairs-mined").join(id));
        let without = records(&out.join("train-pairs").join(id));
        let positives: std::collections::HashSet<&str> =
            without.iter().map(|r| r.positive.as_str()).collect();
        assert_eq!(
            with.len(),
            without.len(),
            "{id}: the same rows in both runs"
        );
        for (w, p) in with.iter().zip(&without) {
            assert_eq!((&w.anchor, &w.positive), (&p.anchor, &p.positive), "{id}");
            assert!(p.negative.is_none(), "{id}: the pairs run has no negatives");
            let n = w.negative.as_deref().expect("a mined negative");
            assert_ne!(n, w.positive);
            assert!(
                positives.contains(n),
                "{id}: {n} is not a training positive"
            );
        }
    }
    let (plain, hard) = (
        shard_rows(&out.join("shards")),
        shard_rows(&out.join("shards-mined")),
    );
    assert_eq!(plain.len(), 12 * 8);
    assert_eq!(hard.len(), 12 * 8);
    assert!(plain.iter().all(|r| r.negative_columns() == 0));
    assert!(hard.iter().all(|r| r
        .negative_ids
        .as_ref()
        .is_some_and(|n| n != &r.positive_ids)));
}
