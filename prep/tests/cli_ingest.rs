//! End to end: the `prep ingest` binary on real samples and on bad input.

use std::process::Command;

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

#[test]
fn ingest_writes_datasets_and_prints_counts() {
    let Some(fixtures) = schemas::testdata::fixture_dir("gooaq") else {
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
