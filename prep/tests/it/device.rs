//! `--device` and `--precision` through the binary (issue 14), on a machine with no GPU: the
//! commands refuse a GPU or a reduced precision in one readable line before doing any work, and
//! `prep bench parity` (what scripts/gpu-check.sh runs on a GPU) passes on the CPU.

use std::process::{Command, Output};

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

/// The one `error:` line of a failed run (and no `caused by`).
fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    errors[0].to_owned()
}

#[cfg(not(feature = "cuda"))]
#[test]
fn every_command_refuses_cuda_without_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_string_lossy().into_owned();
    let commands: [&[&str]; 7] = [
        &["train", &t, "--model", &t],
        &["embed", "--model", &t, "--input", &t, "--out", "x.npy"],
        &["search", "--model", &t, "--corpus", &t, "--query", "q"],
        &["eval", "--model", &t, "--pairs", &t],
        &["demo", "--out", &t],
        &["bench", "encode", "--model", &t],
        &["bench", "train", "--model", &t],
    ];
    for args in commands {
        let out = prep()
            .args(args)
            .args(["--device", "cuda:1"])
            .output()
            .unwrap();
        let line = one_error_line(&out);
        assert!(
            line.contains("cuda:1") && line.contains("built without CUDA"),
            "prep {args:?}: {line}"
        );
    }
    // PREP_DEVICE is the fallback, --device wins over it.
    let out = prep()
        .args(["bench", "train", "--model", &t])
        .env("PREP_DEVICE", "cuda")
        .output()
        .unwrap();
    assert!(one_error_line(&out).contains("cuda:0"));
    let out = prep()
        .args(["bench", "train", "--model", &t, "--device", "cpu"])
        .env("PREP_DEVICE", "cuda")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("CUDA"));
}

#[test]
fn the_cpu_refuses_reduced_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_string_lossy().into_owned();
    for p in ["tf32", "bf16"] {
        let out = prep()
            .args(["train", &t, "--model", &t, "--precision", p])
            .env_remove("PREP_DEVICE")
            .output()
            .unwrap();
        let line = one_error_line(&out);
        assert!(line.contains("not available on the CPU"), "{p}: {line}");
    }
    let out = prep()
        .args([
            "embed", "--model", &t, "--input", &t, "--out", "x.npy", "--device", "gpu",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected cpu, cuda or cuda:N"));
}

#[test]
fn bench_parity_passes_on_the_cpu() {
    let (Some(model), Some(reference)) = (testdata::test_model_dir(), testdata::reference_dir())
    else {
        return;
    };
    let out = prep()
        .args(["bench", "parity", "--device", "cpu", "--model"])
        .arg(&model)
        .arg("--reference")
        .arg(reference.join("minilm_parity.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("embeddings min cosine"), "{stdout}");
    assert_eq!(stdout.matches(": AdamW step ").count(), 3, "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
