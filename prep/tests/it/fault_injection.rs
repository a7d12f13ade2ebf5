//! Fault injection: `prep ingest`, `prep mix` and `prep train` are killed (SIGKILL) at seeded
//! random moments, then rerun; every rerun must end byte-identical to an uninterrupted run, and
//! after every kill nothing partial may sit under a final name.
//!
//! Trials per stage: `PREP_FAULT_TRIALS` (default 3, what CI runs); seed: `PREP_FAULT_SEED`
//! (default 1). `scripts/fault-injection.sh` runs many trials and prints the totals.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn prep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prep"));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// SplitMix64: the kill moments must be reproducible from the seed alone.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run_ok(mut cmd: Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// Starts `cmd`, kills it after `after` unless it finished first. True when it was killed.
fn run_and_kill(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if started.elapsed() >= after {
            child.kill().unwrap(); // SIGKILL on Unix: no cleanup code runs.
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every file under `dir` (relative path → bytes), hidden lock files left out.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().ends_with(".lock") {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn assert_same_tree(want: &Path, got: &Path, what: &str) {
    let (w, g) = (tree(want), tree(got));
    let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&w), names(&g), "{what}: different files");
    for (k, v) in &w {
        assert!(g[k] == *v, "{what}: {} differs", k.display());
    }
}

/// A normalized-jsonl dump big enough that a kill lands mid-run: synthetic, deterministic.
fn write_pairs_dump(path: &Path, lines: usize, salt: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let words = [
        "river", "copper", "lantern", "orchid", "harbor", "meadow", "falcon", "pepper", "quartz",
        "willow", "canyon", "ember", "glacier", "saffron", "thistle", "violet",
    ];
    for i in 0..lines {
        let w = |k: usize| words[(i / k + k) % words.len()];
        let anchor = format!("how does the {} {} {salt} {i} work", w(1), w(3));
        let positive = format!(
            "the {} {} {salt} {i} works by {} and {} near the {}",
            w(1),
            w(3),
            w(5),
            w(7),
            w(11)
        );
        serde_json::to_writer(&mut gz, &serde_json::json!([anchor, positive])).unwrap();
        gz.write_all(b"\n").unwrap();
    }
    gz.finish().unwrap();
}

fn ingest_cmd(input: &Path, out: &Path) -> Command {
    let mut c = prep();
    c.args(["ingest", "--source", "jsonl", "--threads", "1", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out);
    c
}

/// After a kill, a dataset folder under its final name is the complete one.
fn check_no_partial_dataset(reference: &Path, out: &Path) {
    for e in std::fs::read_dir(out).into_iter().flatten() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.file_type().unwrap().is_dir() {
            assert_same_tree(&reference.join(&name), &e.path(), "dataset after a kill");
        }
    }
}

#[test]
fn ingest_killed_at_random_then_rerun_is_byte_identical() {
    let trials = env_or("PREP_FAULT_TRIALS", 3);
    let mut rng = Rng(env_or("PREP_FAULT_SEED", 1));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("faults.jsonl.gz");
    write_pairs_dump(&input, 300_000, "x");
    let reference = tmp.path().join("reference");
    let full = run_ok(ingest_cmd(&input, &reference));
    let mut killed = 0;
    for t in 0..trials {
        let out = tmp.path().join(format!("trial-{t}"));
        let at = full.mul_f64(rng.next_f64() * 0.9);
        killed += run_and_kill(ingest_cmd(&input, &out), at) as u64;
        check_no_partial_dataset(&reference, &out);
        run_ok(ingest_cmd(&input, &out));
        assert_same_tree(&reference, &out, &format!("ingest trial {t}"));
    }
    eprintln!("ingest: {trials} trials, {killed} killed mid-run, 0 failures");
}

/// Two small datasets, a tiny model folder (vocab from their texts) and a config to mix them.
fn mix_inputs(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pairs = tmp.join("pairs");
    let mut texts = Vec::new();
    let mut config = Vec::new();
    for (name, salt, rows) in [("alpha", "a", 20_000), ("beta", "b", 12_000)] {
        let input = tmp.join(format!("{name}.jsonl.gz"));
        write_pairs_dump(&input, rows, salt);
        let mut c = ingest_cmd(&input, &pairs);
        c.args(["--dataset", name]);
        run_ok(c);
        config.push(serde_json::json!({"name": name, "lines": rows, "weight": rows}));
        texts.push(format!("how does the river copper {salt} work"));
    }
    for w in [
        "works",
        "by",
        "and",
        "near",
        "the",
        "lantern",
        "orchid",
        "0123456789",
    ] {
        texts.push(w.to_string());
    }
    let model = tmp.join("model");
    train::vocab::build_model_folder(&texts, 400, &model, |v| train::vocab::tiny_config(v, 64))
        .unwrap();
    let config_path = tmp.join("data_config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    (pairs, model, config_path)
}

fn mix_cmd(pairs: &Path, model: &Path, config: &Path, out: &Path, steps: u64) -> Command {
    let mut c = prep();
    c.arg("mix")
        .arg("--config")
        .arg(config)
        .arg("--pairs")
        .arg(pairs)
        .arg("--tokenizer")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(["--steps", &steps.to_string()])
        .args(["--batch-size", "32", "--batches-per-shard", "4"])
        .args([
            "--max-length-a",
            "32",
            "--max-length-b",
            "48",
            "--threads",
            "1",
        ]);
    c
}

/// After a kill, every shard the index lists is complete (its sha256 matches).
fn check_index_consistent(out: &Path) {
    let Ok(bytes) = std::fs::read(out.join("index.json")) else {
        return;
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).expect("index.json is whole");
    for shard in index["shards"].as_array().unwrap() {
        let file = out.join(shard["file"].as_str().unwrap());
        let sha = schemas::sha256_file(&file).unwrap();
        assert_eq!(sha, shard["sha256"].as_str().unwrap(), "{}", file.display());
    }
}

#[test]
fn mix_killed_at_random_then_resumed_is_byte_identical() {
    let trials = env_or("PREP_FAULT_TRIALS", 3);
    let mut rng = Rng(env_or("PREP_FAULT_SEED", 1) ^ 0x6d6978);
    let tmp = tempfile::tempdir().unwrap();
    let (pairs, model, config) = mix_inputs(tmp.path());
    let steps = 600;
    let reference = tmp.path().join("shards-reference");
    let full = run_ok(mix_cmd(&pairs, &model, &config, &reference, steps));
    let mut killed = 0;
    for t in 0..trials {
        let out = tmp.path().join(format!("shards-{t}"));
        // Up to two kills before the run that completes.
        for _ in 0..2 {
            let at = full.mul_f64(rng.next_f64() * 0.9);
            killed += run_and_kill(mix_cmd(&pairs, &model, &config, &out, steps), at) as u64;
            check_index_consistent(&out);
        }
        run_ok(mix_cmd(&pairs, &model, &config, &out, steps));
        assert_same_tree(&reference, &out, &format!("mix trial {t}"));
    }
    eprintln!("mix: {trials} trials, {killed} kills mid-run, 0 failures");
}

fn train_cmd(shards: &Path, model: &Path, run: &Path, resume: bool) -> Command {
    let mut c = prep();
    c.arg("train");
    if resume {
        c.arg("--resume").arg(run).arg("--output").arg(run);
    } else {
        c.arg(shards)
            .arg("--model")
            .arg(model)
            .arg("--output")
            .arg(run);
        c.args(["--steps", "24", "--save-steps", "3", "--warmup", "2"])
            .args(["--lr", "1e-3", "--max-seq-length", "64", "--threads", "1"]);
    }
    c
}

/// Whether `run` holds a complete checkpoint to resume from.
fn has_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run).into_iter().flatten().any(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        name.starts_with("checkpoint-")
    })
}

/// After a kill, every checkpoint under its final name equals the uninterrupted run's.
fn check_checkpoints(reference: &Path, run: &Path) {
    for e in std::fs::read_dir(run).into_iter().flatten() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") {
            let ours = tree(&e.path());
            let want = tree(&reference.join(&name));
            assert!(
                ours.get(Path::new("model.safetensors"))
                    == want.get(Path::new("model.safetensors")),
                "{name} after a kill differs from the uninterrupted run's"
            );
        }
    }
}

#[test]
fn train_killed_at_random_then_resumed_ends_byte_identical() {
    let trials = env_or("PREP_FAULT_TRIALS", 3);
    let mut rng = Rng(env_or("PREP_FAULT_SEED", 1) ^ 0x747261696e);
    let tmp = tempfile::tempdir().unwrap();
    let (pairs, model, config) = mix_inputs(tmp.path());
    let shards = tmp.path().join("shards");
    run_ok(mix_cmd(&pairs, &model, &config, &shards, 24));
    let reference = tmp.path().join("run-reference");
    let full = run_ok(train_cmd(&shards, &model, &reference, false));
    let final_weights = |run: &Path| std::fs::read(run.join("checkpoint-24/model.safetensors"));
    let mut killed = 0;
    for t in 0..trials {
        let run = tmp.path().join(format!("run-{t}"));
        let at = full.mul_f64(rng.next_f64() * 0.9);
        killed += run_and_kill(train_cmd(&shards, &model, &run, false), at) as u64;
        check_checkpoints(&reference, &run);
        let resume = has_checkpoint(&run);
        run_ok(train_cmd(&shards, &model, &run, resume));
        check_checkpoints(&reference, &run);
        assert!(
            final_weights(&run).unwrap() == final_weights(&reference).unwrap(),
            "train trial {t}: final weights differ from the uninterrupted run's"
        );
    }
    eprintln!("train: {trials} trials, {killed} killed mid-run, 0 failures");
}
