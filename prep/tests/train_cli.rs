//! `prep demo` and `prep train` through the binary: the offline pipeline end to end, the JSONL
//! log, checkpoints, and `--resume` reproducing an uninterrupted run's losses.

use std::path::Path;
use std::process::Command;

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

fn log_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn demo_then_train_and_resume() {
    let Some(shared) = schemas::testdata::shared_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let out = prep()
        .args([
            "demo",
            "--steps",
            "30",
            "--batch-size",
            "8",
            "--eval-limit",
            "100",
            "--fixtures",
        ])
        .arg(shared.join("fixtures"))
        .arg("--out")
        .arg(&demo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("before") && stdout.contains("after"),
        "{stdout}"
    );
    assert!(demo.join("run/checkpoint-30/model.safetensors").is_file());
    assert_eq!(log_lines(&demo.join("train-log.jsonl")).len(), 30);

    // A 10-step run saving every 5, then a resume from checkpoint-5 into another folder.
    let train = |args: &[&str]| {
        let out = prep().arg("train").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "prep train {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (shards, model) = (s(&demo.join("shards")), s(&demo.join("model-init")));
    let (run, log) = (s(&tmp.path().join("run")), s(&tmp.path().join("run.jsonl")));
    train(&[
        &shards,
        "--model",
        &model,
        "--steps",
        "10",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--save-steps",
        "5",
        "--mini-batch-size",
        "3",
        "--log",
        &log,
        "--output",
        &run,
    ]);
    let full = log_lines(Path::new(&log));
    assert_eq!(full.len(), 10);
    for (i, l) in full.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for k in ["loss", "lr", "grad_norm"] {
            assert!(l[k].as_f64().unwrap().is_finite(), "{k} in {l}");
        }
    }
    assert!(
        Path::new(&run).join("checkpoint-5").is_dir()
            && Path::new(&run).join("checkpoint-10").is_dir()
    );

    let (run2, log2) = (
        s(&tmp.path().join("run2")),
        s(&tmp.path().join("run2.jsonl")),
    );
    train(&[
        "--resume",
        &format!("{run}/checkpoint-5"),
        "--log",
        &log2,
        "--output",
        &run2,
    ]);
    let resumed = log_lines(Path::new(&log2));
    assert_eq!(resumed.len(), 5);
    for (r, f) in resumed.iter().zip(&full[5..]) {
        assert_eq!(r["step"], f["step"]);
        assert_eq!(
            r["loss"], f["loss"],
            "resumed loss differs at step {}",
            r["step"]
        );
        assert_eq!(r["grad_norm"], f["grad_norm"]);
    }
}
