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

#[test]
fn demo_runs_anywhere_and_generalises_to_held_out_queries() {
    let cwd = tempfile::tempdir().unwrap();
    // The temp folder's parent must not offer a ../shared either (it is the system temp dir).
    assert!(
        !cwd.path().join("../shared/fixtures").exists(),
        "a ../shared/fixtures is reachable from {}: run with TMPDIR elsewhere",
        cwd.path().display()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_prep"))
        .arg("demo")
        .current_dir(cwd.path())
        .env_remove("PREP_SHARED")
        .env_remove("PREP_DEVICE")
        .output()
        .expect("running prep demo");
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
