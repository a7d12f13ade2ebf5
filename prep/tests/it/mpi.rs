//! Data-parallel `prep train` over MPI (issue 15): `mpirun -np 2` against one process on the same
//! global batches, resume across world sizes, and the failures that must stop every rank.
//! Needs a build with `--features mpi` and Open MPI's `mpirun`: under `CI=true` a missing
//! `mpirun` fails the test, otherwise it is skipped with a message.

#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use schemas::{ShardIndex, ShardRow, ShardWriter, ShardWriterOptions};

const BATCH: usize = 16;

/// `mpirun` on the PATH, or `None` (skip) outside CI.
fn mpirun() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mpirun"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping: {msg}");
    }
    found
}

fn prep_bin() -> &'static str {
    env!("CARGO_BIN_EXE_prep")
}

/// `mpirun -np 2 prep train ARGS` (every rank the same arguments).
fn mpi_train(mpirun: &Path, args: &[String]) -> Output {
    let out = Command::new(mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            prep_bin(),
            "train",
        ])
        .args(args)
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .output()
        .unwrap();
    out
}

fn single_train(args: &[String]) -> Output {
    Command::new(prep_bin())
        .arg("train")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tiny model folder (vocab from a few sentences, weights drawn from --seed).
fn tiny_model(dir: &Path) {
    let texts: Vec<String> = [
        "how do i bake bread at home",
        "mix flour and water then bake it",
        "what is the capital of australia",
        "canberra is the capital city",
    ]
    .iter()
    .cycle()
    .take(32)
    .map(|s| s.to_string())
    .collect();
    train::vocab::build_model_folder(&texts, 150, dir, |v| encoder::BertConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_attention_heads: 4,
        num_hidden_layers: 2,
        max_position_embeddings: 32,
        ..train::vocab::tiny_config(v, 32)
    })
    .unwrap();
}

fn seq(rng: &mut rand_chacha::ChaCha8Rng, max: usize) -> Vec<u32> {
    let len = rng.random_range(3..=max);
    let mut v = vec![2u32];
    v.extend((1..len - 1).map(|_| rng.random_range(5..100)));
    v.push(3);
    v
}

/// `batches` global batches of 16 random rows (ids below 100), 4 batches per shard; triplets
/// (a `negative` column) when `triplets`.
fn shards(dir: &Path, batches: u64, triplets: bool, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let options = ShardWriterOptions {
        batch_size: BATCH,
        keep_text: false,
    };
    let mut entries = Vec::new();
    for (i, first) in (0..batches).step_by(4).enumerate() {
        let path = dir.join(schemas::shards::shard_file_name(i));
        let mut w = ShardWriter::create(path, options).unwrap();
        for b in first..(first + 4).min(batches) {
            let rows: Vec<ShardRow> = (0..BATCH)
                .map(|_| ShardRow {
                    batch: b,
                    dataset: if triplets { "quora" } else { "squad" }.into(),
                    anchor_ids: seq(&mut rng, 10),
                    positive_ids: seq(&mut rng, 16),
                    negative_ids: triplets.then(|| seq(&mut rng, 16)),
                    ..Default::default()
                })
                .collect();
            w.write_batch(&rows).unwrap();
        }
        entries.push(w.finish().unwrap());
    }
    ShardIndex::hand_made(BATCH as u64, seed, entries, 0)
        .write(dir)
        .unwrap();
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The flags of every run here: dropout off, a learning rate that moves the weights.
fn train_args(shards: &Path, model: &Path, out: &Path, log: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        s(shards),
        "--model".into(),
        s(model),
        "--output".into(),
        s(out),
        "--log".into(),
        s(log),
    ];
    v.extend(
        [
            "--steps",
            "5",
            "--lr",
            "1e-3",
            "--warmup",
            "1",
            "--dropout",
            "0",
            "--seed",
            "3",
            "--threads",
            "1",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string()),
    );
    v
}

fn losses(log: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Every f32 tensor's L2 norm in a safetensors file (header: u64 length, JSON, then data).
fn param_norms(file: &Path) -> BTreeMap<String, f64> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(t["dtype"], "F32", "{name}");
        let off = &t["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let sq: f64 = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .map(|x| x * x)
            .sum();
        out.insert(name.clone(), sq.sqrt());
    }
    out
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Same per-step losses (1e-5 rel) and the same final parameters (every norm 1e-5 rel).
fn assert_same_run(what: &str, got: (&Path, &Path), want: (&Path, &Path)) {
    let (g, w) = (losses(got.0), losses(want.0));
    assert_eq!(
        g.iter().map(|x| x.0).collect::<Vec<_>>(),
        w.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: steps logged"
    );
    for ((step, a), (_, b)) in g.iter().zip(&w) {
        assert!(rel(*a, *b) < 1e-5, "{what}: step {step} loss {a} vs {b}");
    }
    let (g, w) = (param_norms(got.1), param_norms(want.1));
    assert_eq!(g.len(), w.len(), "{what}: parameter count");
    for (name, b) in &w {
        let a = g[name];
        if name.ends_with("attention.self.key.bias") {
            // Softmax ignores the per-query constant q·b_k: the key biases' gradient is
            // analytically zero, so they start at 0 and only take float noise (~1e-9 here).
            assert!(
                a < 1e-6 && *b < 1e-6,
                "{what}: {name} left the noise floor: {a} vs {b}"
            );
            continue;
        }
        assert!(rel(a, *b) < 1e-5, "{what}: norm of {name} {a} vs {b}");
    }
}

/// The final-weights sha256 every rank prints; they must all be the same. Found by pattern, not
/// by line: the ranks share mpirun's stderr, so another rank's output may sit on the same line.
fn ranks_hashes(stderr: &str) -> Vec<String> {
    const NEEDLE: &str = "final weights sha256 ";
    stderr
        .match_indices(NEEDLE)
        .map(|(at, _)| {
            let hex = &stderr[at + NEEDLE.len()..];
            let end = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len())
                .min(64);
            hex[..end].to_owned()
        })
        .collect()
}

#[test]
fn two_ranks_train_the_one_process_model_bit_identically_on_both_ranks() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let (pairs, triplets) = (tmp.path().join("pairs"), tmp.path().join("triplets"));
    shards(&pairs, 5, false, 11);
    shards(&triplets, 5, true, 12);
    let cases: [(&str, &Path, &[&str]); 3] = [
        ("pairs", &pairs, &[]),
        (
            "pairs, --mini-batch-size 4",
            &pairs,
            &["--mini-batch-size", "4"],
        ),
        ("triplets", &triplets, &[]),
    ];
    for (i, (what, data, extra)) in cases.into_iter().enumerate() {
        let one = (
            tmp.path().join(format!("one{i}")),
            tmp.path().join(format!("one{i}.jsonl")),
        );
        let two = (
            tmp.path().join(format!("two{i}")),
            tmp.path().join(format!("two{i}.jsonl")),
        );
        ok(
            single_train(&train_args(data, &model, &one.0, &one.1, extra)),
            what,
        );
        let out = ok(
            mpi_train(&mpirun, &train_args(data, &model, &two.0, &two.1, extra)),
            what,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hashes = ranks_hashes(&stderr);
        assert_eq!(
            hashes.len(),
            2,
            "{what}: every rank reports its weights:\n{stderr}"
        );
        assert!(
            hashes.iter().all(|h| h.len() == 64),
            "{what}: a rank's sha256 is cut short:\n{stderr}"
        );
        assert_eq!(
            hashes[0], hashes[1],
            "{what}: the ranks' weights differ:\n{stderr}"
        );
        let ck = |run: &Path| run.join("checkpoint-5/model.safetensors");
        assert_same_run(what, (&two.1, &ck(&two.0)), (&one.1, &ck(&one.0)));
    }
}

#[test]
fn a_run_stopped_at_step_3_resumes_at_the_other_world_size() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let data = tmp.path().join("pairs");
    shards(&data, 5, false, 21);
    let t = |n: &str| tmp.path().join(n);
    let save3 = ["--save-steps", "3"];
    // Uninterrupted, one process.
    ok(
        single_train(&train_args(
            &data,
            &model,
            &t("full"),
            &t("full.jsonl"),
            &save3,
        )),
        "full run",
    );
    let ck = |run: &Path| run.join("checkpoint-5/model.safetensors");
    let resume = |from: &Path, out: &Path, log: &Path| -> Vec<String> {
        // The log as the interrupted run left it; the resume keeps steps 1-3 and appends.
        std::fs::copy(from.with_extension("jsonl"), log).unwrap();
        vec![
            "--resume".into(),
            s(&from.join("checkpoint-3")),
            "--output".into(),
            s(out),
            "--log".into(),
            s(log),
            "--threads".into(),
            "1".into(),
        ]
    };
    // 2 ranks to step 3 (the checkpoint a stopped run leaves), then 1 process to the end.
    ok(
        mpi_train(
            &mpirun,
            &train_args(&data, &model, &t("two"), &t("two.jsonl"), &save3),
        ),
        "2 ranks",
    );
    ok(
        single_train(&resume(&t("two"), &t("two-then-one"), &t("a.jsonl"))),
        "resume on 1",
    );
    assert_same_run(
        "2 ranks, then 1",
        (&t("a.jsonl"), &ck(&t("two-then-one"))),
        (&t("full.jsonl"), &ck(&t("full"))),
    );
    // 1 process to step 3, then 2 ranks.
    let args = resume(&t("full"), &t("one-then-two"), &t("b.jsonl"));
    ok(mpi_train(&mpirun, &args), "resume on 2 ranks");
    assert_same_run(
        "1 process, then 2 ranks",
        (&t("b.jsonl"), &ck(&t("one-then-two"))),
        (&t("full.jsonl"), &ck(&t("full"))),
    );
}

/// Runs `mpirun` with an MPMD command line (`-np 1 A : -np 1 B`) and returns its output, and
/// how long it took.
fn mpmd(mpirun: &Path, a: &[String], b: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "1",
            prep_bin(),
            "train",
        ])
        .args(a)
        .args([":", "-np", "1", prep_bin(), "train"])
        .args(b)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn ranks_that_disagree_on_shards_or_settings_all_stop_naming_the_mismatch() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    shards(&a, 5, false, 31);
    shards(&b, 5, false, 32);
    let t = |n: &str| tmp.path().join(n);
    let args =
        |data: &Path, extra: &[&str]| train_args(data, &model, &t("run"), &t("run.jsonl"), extra);
    for (what, second, needle) in [
        (
            "other shards",
            args(&b, &[]),
            "rank 1 disagrees with rank 0 on the shards' fingerprint",
        ),
        (
            "another scale",
            args(&a, &["--scale", "10"]),
            "config.scale (10.0 here, 20.0 on rank 0)",
        ),
    ] {
        let (out, took) = mpmd(&mpirun, &args(&a, &[]), &second);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: mpirun exited 0:\n{stderr}");
        assert!(took < Duration::from_secs(60), "{what}: took {took:?}");
        assert!(
            stderr.contains(needle),
            "{what}: no {needle:?} in:\n{stderr}"
        );
        assert!(
            !t("run").join("checkpoint-5").exists(),
            "{what}: a run was saved"
        );
    }
}

/// Pids of the running `prep` ranks of `mpirun` (its children, by their rank variable).
fn rank_pids(mpirun_pid: u32) -> BTreeMap<usize, u32> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let after = stat.rsplit(')').next().unwrap_or("");
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != mpirun_pid {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                out.insert(String::from_utf8_lossy(r).parse().unwrap(), pid);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: only its status is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Starts a long 2-rank run, waits until rank 0 logged a step, sends `signal` to rank 1, and
/// returns mpirun's stderr once every rank is gone (panicking after 60 s).
fn signal_a_rank(signal: &str) -> Option<String> {
    let mpirun = mpirun()?;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let data = tmp.path().join("pairs");
    shards(&data, 400, false, 41);
    let log = tmp.path().join("run.jsonl");
    let mut args = train_args(
        &data,
        &model,
        &tmp.path().join("run"),
        &log,
        &["--collective-timeout", "10"],
    );
    let steps = args.iter().position(|a| a == "--steps").unwrap();
    args[steps + 1] = "400".into();
    let mut child = Command::new(&mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            prep_bin(),
            "train",
        ])
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(&log).map_or(true, |l| l.lines().count() < 2) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never logged a step"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = rank_pids(child.id());
    assert_eq!(ranks.len(), 2, "ranks of mpirun {}: {ranks:?}", child.id());
    let status = Command::new("kill")
        .args([signal, &ranks[&1].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mpirun still running 60 s after rank 1 got {signal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "mpirun exited 0 after rank 1 got {signal}:\n{stderr}"
    );
    // mpirun may exit while the ranks it signalled are still being torn down: give them a
    // moment, then none may be left running.
    let grace = Instant::now() + Duration::from_secs(10);
    for (r, pid) in ranks {
        while alive(pid) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !alive(pid),
            "rank {r} (pid {pid}) still running 10 s after mpirun exited"
        );
    }
    Some(stderr)
}

#[test]
fn a_killed_rank_ends_every_rank_with_an_error() {
    let Some(stderr) = signal_a_rank("-KILL") else {
        return;
    };
    assert!(
        stderr.contains("signal 9") || stderr.contains("Killed"),
        "mpirun does not say rank 1 was killed:\n{stderr}"
    );
}

#[test]
fn a_hung_rank_trips_the_collective_watchdog() {
    // SIGSTOP: the rank is alive but never answers; rank 0's collective times out and aborts.
    let Some(stderr) = signal_a_rank("-STOP") else {
        return;
    };
    assert!(
        stderr.contains("did not complete within 10 s") && stderr.contains("aborting the MPI job"),
        "no watchdog message:\n{stderr}"
    );
}

/// `--clip-scope per-rank` (upstream's clip of each rank's share, then the average) reaches the
/// step: with a limit that binds, 2 ranks stay bit-identical but follow another path than the
/// global clip from step 2 on (step 1's loss is taken before any update).
#[test]
fn per_rank_clipping_keeps_the_ranks_identical_and_changes_the_updates() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let data = tmp.path().join("pairs");
    shards(&data, 5, false, 51);
    let t = |n: &str| tmp.path().join(n);
    let clip = ["--max-grad-norm", "0.01"];
    let global = train_args(&data, &model, &t("global"), &t("global.jsonl"), &clip);
    ok(mpi_train(&mpirun, &global), "global clip");
    let mut per_rank_flags = clip.to_vec();
    per_rank_flags.extend(["--clip-scope", "per-rank"]);
    let per_rank = train_args(&data, &model, &t("per"), &t("per.jsonl"), &per_rank_flags);
    let out = ok(mpi_train(&mpirun, &per_rank), "per-rank clip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hashes = ranks_hashes(&stderr);
    assert_eq!(hashes.len(), 2, "{stderr}");
    assert_eq!(hashes[0], hashes[1], "the ranks' weights differ:\n{stderr}");
    let (g, p) = (losses(&t("global.jsonl")), losses(&t("per.jsonl")));
    assert_eq!(g.len(), 5);
    assert_eq!(g[0], p[0], "step 1 runs before any update");
    assert!(
        g[1..].iter().zip(&p[1..]).any(|(a, b)| a.1 != b.1),
        "per-rank clipping changed nothing: {g:?} vs {p:?}"
    );
}

/// `--device cuda` in an mpirun job is each rank's own GPU (`cuda:<local rank>`); this test
/// binary has no CUDA, so every rank must stop at once naming its own GPU, never hang.
#[test]
fn plain_cuda_gives_each_rank_its_local_gpu() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let data = tmp.path().join("shards");
    shards(&data, 2, false, 41);
    let t = |n: &str| tmp.path().join(n);
    let args = train_args(
        &data,
        &model,
        &t("run"),
        &t("run.jsonl"),
        &["--device", "cuda"],
    );
    let start = std::time::Instant::now();
    let out = mpi_train(&mpirun, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mpirun exited 0:\n{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    for rank in 0..2 {
        let needle = format!("device cuda:{rank}: this binary was built without CUDA");
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }
}
