//! `prep demo` and `prep train` through the binary: the offline pipeline end to end, the JSONL
//! log, checkpoints, and `--resume` reproducing an uninterrupted run's losses.

use std::path::Path;
use std::process::Command;

use schemas::{ShardIndex, ShardRow, ShardWriter, ShardWriterOptions};

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
    let Some(shared) = testdata::shared_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let out = prep()
        .args(["demo", "--steps", "30", "--batch-size", "8", "--fixtures"])
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

/// A tiny model folder (no weights) and `batches` shards of 4 rows of ids from its vocab,
/// 2 batches per shard, written with the mixer's schema.
fn tiny_setup(root: &Path, batches: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = root.join("model");
    let texts: Vec<String> = [
        "how do i bake bread",
        "mix flour and water then bake",
        "what is the capital of australia",
        "canberra is the capital",
    ]
    .iter()
    .cycle()
    .take(16)
    .map(|s| s.to_string())
    .collect();
    train::vocab::build_model_folder(&texts, 120, &model, |v| encoder::BertConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_attention_heads: 2,
        num_hidden_layers: 1,
        max_position_embeddings: 32,
        ..train::vocab::tiny_config(v, 32)
    })
    .unwrap();
    let shards = root.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let mut entries = Vec::new();
    let options = ShardWriterOptions {
        batch_size: 4,
        keep_text: false,
    };
    for (i, first) in (0..batches).step_by(2).enumerate() {
        let path = shards.join(schemas::shards::shard_file_name(i));
        let mut w = ShardWriter::create(path, options).unwrap();
        for b in first..(first + 2).min(batches) {
            let rows: Vec<ShardRow> = (0..4u32)
                .map(|r| ShardRow {
                    batch: b,
                    dataset: "squad".into(),
                    anchor_ids: vec![2, 10 + r, 20 + b as u32 % 50, 3],
                    positive_ids: vec![2, 30 + r, 40 + b as u32 % 50, 11, 3],
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows).unwrap();
        }
        entries.push(w.finish().unwrap());
    }
    let index = ShardIndex::hand_made(4, 1, entries, 0);
    assert_eq!(index.steps, batches);
    index.write(&shards).unwrap();
    (shards, model)
}

fn run_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    prep()
        .current_dir(cwd)
        .arg("train")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn resume_without_output_continues_in_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, model) = tiny_setup(tmp.path(), 4);
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let run = tmp.path().join("runA");
    let out = run_in(
        &cwd,
        &[
            &s(&shards),
            "--model",
            &s(&model),
            "--steps",
            "4",
            "--save-steps",
            "2",
            "--warmup",
            "1",
            "-o",
            &s(&run),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As if killed after checkpoint-2.
    std::fs::remove_dir_all(run.join("checkpoint-4")).unwrap();

    let out = run_in(&cwd, &["--resume", &s(&run)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        run.join("checkpoint-4/trainer_state.json").is_file(),
        "the resumed run advanced"
    );
    assert!(!cwd.join("run").exists(), "nothing written to ./run");

    // From a checkpoint folder: its run folder; with -o: there.
    std::fs::remove_dir_all(run.join("checkpoint-4")).unwrap();
    let out = run_in(&cwd, &["--resume", &s(&run.join("checkpoint-2"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("checkpoint-4").is_dir());
    let other = tmp.path().join("other");
    let out = run_in(
        &cwd,
        &["--resume", &s(&run.join("checkpoint-2")), "-o", &s(&other)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(other.join("checkpoint-4").is_dir());
    assert!(!cwd.join("run").exists());
}

#[test]
fn incomplete_mix_needs_allow_incomplete_and_says_what_it_trains_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, model) = tiny_setup(tmp.path(), 4);
    let mut index = ShardIndex::read(&shards).unwrap();
    index.steps = 100;
    index.complete = false;
    index.write(&shards).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let run = s(&tmp.path().join("run"));
    let base = [s(&shards), "--model".into(), s(&model), "-o".into(), run];
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let out = run_in(tmp.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("incomplete") && err.contains("--allow-incomplete"),
        "{err}"
    );

    let mut allowed = args.clone();
    allowed.push("--allow-incomplete");
    let out = run_in(tmp.path(), &allowed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("training on the 4 batches"),
        "{err}"
    );
    assert!(tmp.path().join("run/checkpoint-4").is_dir());
}

/// Processes started one by one cannot exchange gradients, so `--rank/--world-size` without a
/// launcher (a plain shell loop) is refused before anything is written: it would otherwise
/// train W different models on W slices of every batch.
#[test]
fn rank_and_world_size_without_a_launcher_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, model) = tiny_setup(tmp.path(), 4);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let run = tmp.path().join("run");
    let base = [
        s(&shards),
        "--model".into(),
        s(&model),
        "-o".into(),
        s(&run),
    ];
    for (flags, needle) in [
        (&["--rank", "1", "--world-size", "2"][..], "mpirun -np 2"),
        (&["--world-size", "2"][..], "mpirun -np 2"),
        (&["--rank", "1"][..], "--rank 1 in a world of 1"),
    ] {
        let mut cmd = prep();
        cmd.current_dir(tmp.path())
            .arg("train")
            .args(&base)
            .args(flags);
        // As a plain shell loop would run it: no launcher's variables.
        for (k, _) in std::env::vars() {
            if ["OMPI_", "PMI_", "PMIX_", "SLURM_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted:\n{err}");
        assert!(err.contains(needle), "{flags:?}: no {needle:?} in:\n{err}");
        assert!(!run.exists(), "{flags:?}: the run folder was written");
    }
}
