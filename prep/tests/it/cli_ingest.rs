//! End to end: the `prep ingest` binary on real samples and on bad input.

use std::process::Command;

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

#[test]
fn ingest_writes_datasets_and_prints_counts() {
    let Some(fixtures) = testdata::fixture_dir("gooaq") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let res = prep()
        .args(["ingest", "--source", "gooaq", "--input"])
        .arg(fixtures.join("gooaq.jsonl"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("gooaq") && stdout.contains("3 rows"),
        "{stdout}"
    );
    assert!(
        res.stderr.is_empty(),
        "no progress bar drawn when stderr is not a terminal"
    );
    let manifest = schemas::Manifest::read(&out.path().join("gooaq")).unwrap();
    assert_eq!(manifest.rows, 3);
    assert_eq!(manifest.options["source"], "gooaq");
}

#[test]
fn bad_invocations_fail_with_one_readable_line() {
    let tmp = tempfile::tempdir().unwrap();
    let res = prep()
        .args(["ingest", "--source", "nope", "--input", "x"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).starts_with("error: unknown source `nope`"));

    let missing = tmp.path().join("missing.jsonl");
    let res = prep()
        .args(["ingest", "--source", "gooaq", "--input"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("missing.jsonl"), "{err}");
}

#[test]
fn help_lists_every_source() {
    let res = prep().args(["ingest", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&res.stdout);
    for source in ingest::sources() {
        assert!(
            help.contains(source.name()),
            "--help lacks {}",
            source.name()
        );
    }
}

#[test]
fn help_lists_the_text_policy_and_the_line_cap() {
    let res = prep().args(["ingest", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&res.stdout);
    assert!(help.contains("--max-line-bytes"), "{help}");
    assert!(help.contains("Text normalisation"), "{help}");
    for p in ingest::text::POLICY {
        assert!(
            help.contains(p.source),
            "--help lacks the policy of {}",
            p.source
        );
    }
}

#[test]
fn long_lines_warnings_and_empty_runs_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let row = |q: &str| {
        format!("{{\"id\": 1, \"question\": \"{q}\", \"answer\": \"a\", \"answer_type\": \"x\"}}\n")
    };
    let input = tmp.path().join("gooaq.jsonl");
    std::fs::write(&input, row("short?") + &row(&"q".repeat(500))).unwrap();
    let out = tmp.path().join("out");
    let res = prep()
        .args([
            "ingest",
            "--source",
            "gooaq",
            "--max-line-bytes",
            "200",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("gooaq.jsonl:line 2: line too long"), "{err}");
    let before = std::fs::read(out.join("gooaq").join(schemas::MANIFEST_FILE)).unwrap();

    // Nothing but bad lines: exit 1, and the earlier dataset stays as it was.
    std::fs::write(&input, "{\"q\": 1}\n").unwrap();
    let res = prep()
        .args(["ingest", "--source", "gooaq", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("no rows"), "{err}");
    assert_eq!(
        std::fs::read(out.join("gooaq").join(schemas::MANIFEST_FILE)).unwrap(),
        before
    );
}
