//! Stage folders on an S3 protocol server (moto, from PyPI, on 127.0.0.1): ingest -> mix ->
//! train with every folder on the store equals the same run on local folders, byte for byte, and
//! resumes on a fresh cache; a mix killed mid-upload leaves no object under a final name and
//! resumes to the same bytes on another machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use testdata::moto::{Fault, Moto, Proxy};

const BUCKET: &str = "prep-it";

fn prep(endpoint: &str, cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prep"));
    // Credentials and endpoint from the usual variables, as a user would set them.
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("PREP_CACHE_DIR", cache);
    c
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A tiny model folder (tokenizer.json included) whose vocab comes from the sample's texts.
fn tiny_model(root: &Path) -> PathBuf {
    let model = root.join("model");
    let sample = std::fs::read_to_string(sample_file()).unwrap();
    let texts: Vec<String> = sample
        .split('"')
        .filter(|s| s.len() > 20)
        .take(400)
        .map(str::to_owned)
        .collect();
    train::vocab::build_model_folder(&texts, 300, &model, |v| encoder::BertConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_attention_heads: 2,
        num_hidden_layers: 1,
        max_position_embeddings: 64,
        ..train::vocab::tiny_config(v, 64)
    })
    .unwrap();
    model
}

fn sample_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/squad2/train-v2.0.json")
}

/// The mix flags shared by both runs.
fn mix_args(config: &Path, model: &Path, steps: u64) -> Vec<String> {
    let mut a: Vec<String> = ["mix", "--config"].map(String::from).to_vec();
    a.push(config.to_string_lossy().into_owned());
    a.extend(["--tokenizer".into(), model.to_string_lossy().into_owned()]);
    for (k, v) in [
        ("--steps", steps.to_string()),
        ("--batch-size", "4".into()),
        ("--batches-per-shard", "2".into()),
        ("--max-length-a", "32".into()),
        ("--max-length-b", "48".into()),
        ("--threads", "1".into()),
    ] {
        a.extend([k.to_owned(), v]);
    }
    a
}

fn train_args(model: &Path, run: &Path) -> Vec<String> {
    [
        "--model",
        &model.to_string_lossy(),
        "--steps",
        "4",
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--seed",
        "3",
        "--save-steps",
        "2",
        "-o",
        &run.to_string_lossy(),
    ]
    .map(String::from)
    .to_vec()
}

/// Every file of `dir` (name, bytes), sorted; hidden ones (locks, markers) left out.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// index.json without the per-dataset source folder (a local path here, a cache path there).
fn index_without_sources(bytes: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    for d in v["datasets"].as_object_mut().unwrap().values_mut() {
        d.as_object_mut().unwrap().remove("source");
    }
    v
}

/// A remote folder's objects pulled down (checked by sha256) to compare with a local one.
fn pulled(url: &str, endpoint: &str, into: &Path, meta: &'static str) -> PathBuf {
    let s = store::Settings {
        options: vec![
            ("endpoint".into(), endpoint.into()),
            ("access_key_id".into(), "testing".into()),
            ("secret_access_key".into(), "testing".into()),
        ],
        ..store::Settings::default()
    };
    let store::Location::Remote(r) = store::Location::parse_with(url, &s).unwrap() else {
        panic!("{url} is not remote")
    };
    store::pull_dir(&r, into, meta).unwrap().expect("a listing");
    into.to_owned()
}

fn assert_same_shards(local: &Path, remote: &Path) {
    let (l, r) = (files(local), files(remote));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&l), names(&r));
    for ((name, a), (_, b)) in l.iter().zip(&r) {
        if name == "index.json" {
            assert_eq!(index_without_sources(a), index_without_sources(b));
        } else {
            assert!(a == b, "{name} differs between the local and the store run");
        }
    }
}

#[test]
fn ingest_mix_train_on_the_store_equals_the_local_run_byte_for_byte() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = tiny_model(root);
    let config = root.join("data_config.json");
    std::fs::write(&config, r#"[{"name": "squad", "weight": 1}]"#).unwrap();
    let (ep, cache) = (moto.endpoint(), root.join("cache"));
    let run =
        |args: &[String], what: &str| ok(prep(&ep, &cache).args(args).output().unwrap(), what);
    let sample = sample_file().to_string_lossy().into_owned();
    let ingest = |out: &str| {
        let a = [
            "ingest", "--source", "squad", "--input", &sample, "--out", out,
        ];
        run(&a.map(String::from), "ingest")
    };

    // Local folders.
    let l = root.join("local");
    ingest(&l.join("pairs").to_string_lossy());
    let mut mix = mix_args(&config, &model, 6);
    mix.extend(["--pairs".into(), l.join("pairs").to_string_lossy().into()]);
    mix.extend(["--out".into(), l.join("shards").to_string_lossy().into()]);
    run(&mix, "local mix");
    let mut train = vec![
        "train".to_owned(),
        l.join("shards").to_string_lossy().into(),
    ];
    train.extend(train_args(&model, &l.join("run")));
    run(&train, "local train");

    // The same, every stage folder on the store.
    let pairs = format!("s3://{BUCKET}/data/pairs");
    let shards = format!("s3://{BUCKET}/data/shards");
    let said = ingest(&pairs);
    assert!(said.contains("published"), "{said}");
    let mut mix = mix_args(&config, &model, 6);
    mix.extend([
        "--pairs".into(),
        pairs.clone(),
        "--out".into(),
        shards.clone(),
    ]);
    run(&mix, "store mix");
    let mut train = vec!["train".to_owned(), shards.clone()];
    train.extend(train_args(&model, &root.join("store-run")));
    run(&train, "store train");

    let got = pulled(
        &format!("{pairs}/squad"),
        &ep,
        &root.join("got-pairs"),
        "manifest.json",
    );
    assert_eq!(files(&got), files(&l.join("pairs/squad")));
    let got = pulled(&shards, &ep, &root.join("got-shards"), "index.json");
    assert_same_shards(&l.join("shards"), &got);
    let ckpt = |r: &Path| std::fs::read(r.join("checkpoint-4/model.safetensors")).unwrap();
    assert!(
        ckpt(&l.join("run")) == ckpt(&root.join("store-run")),
        "trained weights differ"
    );

    // Resumed on "another machine" (a fresh cache; the first run's mirror gone), the run reopens
    // the store and ends where the uninterrupted one did.
    std::fs::remove_dir_all(&cache).unwrap();
    let other = root.join("other-cache");
    let from = root
        .join("store-run/checkpoint-2")
        .to_string_lossy()
        .into_owned();
    let resumed = root.join("resumed-run").to_string_lossy().into_owned();
    ok(
        prep(&ep, &other)
            .args(["train", "--resume", &from, "-o", &resumed])
            .output()
            .unwrap(),
        "resume on a fresh cache",
    );
    assert!(
        ckpt(&l.join("run")) == ckpt(Path::new(&resumed)),
        "the resumed run's weights differ from the uninterrupted run's"
    );

    // inspect and eval read the store too.
    let said = run(&["inspect".into(), shards.clone()], "inspect");
    assert!(
        said.contains("batches") || said.contains("shards"),
        "{said}"
    );
}

#[test]
fn a_mix_killed_mid_upload_leaves_no_final_object_and_resumes_to_the_same_bytes() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = tiny_model(root);
    let config = root.join("data_config.json");
    std::fs::write(&config, r#"[{"name": "squad", "weight": 1}]"#).unwrap();
    let pairs = root.join("pairs");
    let sample = sample_file().to_string_lossy().into_owned();
    let (ep, cache) = (moto.endpoint(), root.join("cache"));
    let a = [
        "ingest",
        "--source",
        "squad",
        "--input",
        &sample,
        "--out",
        &pairs.to_string_lossy(),
    ];
    ok(prep(&ep, &cache).args(a).output().unwrap(), "ingest");
    let mut local = mix_args(&config, &model, 6);
    local.extend(["--pairs".into(), pairs.to_string_lossy().into()]);
    let mut remote = local.clone();
    local.extend(["--out".into(), root.join("shards").to_string_lossy().into()]);
    ok(
        prep(&ep, &cache).args(&local).output().unwrap(),
        "local mix",
    );
    let url = format!("s3://{BUCKET}/shards");
    remote.extend(["--out".into(), url.clone()]);

    // The second shard's upload stalls half-way; the mix is killed there.
    let proxy = Proxy::start(moto.port, |_, method, path| {
        if method == "PUT" && path.contains("shard-00001") {
            Fault::Stall
        } else {
            Fault::Forward
        }
    });
    let mut child = prep(&proxy.endpoint(), &cache)
        .args(&remote)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !proxy.stalled.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the stall"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "mix ended before the stall"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let keys = moto.keys(BUCKET);
    assert!(
        !keys.iter().any(|k| k.ends_with("shard-00001.parquet")),
        "a final name after a killed upload: {keys:?}"
    );
    // Shards are published as the mix goes: whatever listing went up names only shards that are
    // there whole (shard-00000 at most, finished before the stalled one).
    if keys.iter().any(|k| k.ends_with("shards/index.json")) {
        let listed = pulled(&url, &ep, &root.join("partial"), "index.json");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(listed.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["complete"], false, "{index}");
        assert!(index["shards"].as_array().unwrap().len() <= 1, "{index}");
    }

    // The rerun resumes on "another machine" (a fresh cache: the killed run's staging is gone)
    // from what the store holds, and completes byte for byte the local mix.
    ok(
        prep(&ep, &root.join("other-cache"))
            .args(&remote)
            .output()
            .unwrap(),
        "resumed mix",
    );
    let got = pulled(&url, &ep, &root.join("got"), "index.json");
    assert_same_shards(&root.join("shards"), &got);
}

/// `https://` (here plain http on 127.0.0.1) is read-only: a shard set and a dataset published by
/// copying the folders to a web server are inspected and trained on as locally, byte for byte;
/// an output there is refused before any work.
#[test]
fn a_web_server_serves_shards_and_datasets_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = tiny_model(root);
    let config = root.join("data_config.json");
    std::fs::write(&config, r#"[{"name": "squad", "weight": 1}]"#).unwrap();
    let www = root.join("www");
    let cache = root.join("cache");
    // No object store here: endpoint variables are irrelevant to http(s) locations.
    let run = |args: &[String], what: &str| ok(prep("", &cache).args(args).output().unwrap(), what);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let sample = s(&sample_file());
    let ingest = ["ingest", "--source", "squad", "--input", &sample, "--out"];
    let mut a: Vec<String> = ingest.map(String::from).to_vec();
    a.push(s(&www.join("pairs")));
    run(&a, "ingest");
    let mut mix = mix_args(&config, &model, 6);
    mix.extend(["--pairs".into(), s(&www.join("pairs")), "--out".into()]);
    let mut local_mix = mix.clone();
    local_mix.push(s(&www.join("shards")));
    run(&local_mix, "mix");
    let web = testdata::static_http::StaticServer::start(&www);

    let said = run(
        &["inspect".into(), format!("{}/shards", web.url())],
        "inspect over http",
    );
    assert!(said.contains("match index.json"), "{said}");
    let said = run(
        &["inspect".into(), format!("{}/pairs/squad", web.url())],
        "inspect a dataset over http",
    );
    assert!(said.contains("anchor"), "{said}");
    for (shards, out) in [
        (s(&www.join("shards")), root.join("local-run")),
        (format!("{}/shards", web.url()), root.join("web-run")),
    ] {
        let mut train = vec!["train".to_owned(), shards];
        train.extend(train_args(&model, &out));
        run(&train, "train");
    }
    let ckpt = |r: &Path| std::fs::read(r.join("checkpoint-4/model.safetensors")).unwrap();
    assert!(ckpt(&root.join("local-run")) == ckpt(&root.join("web-run")));
    let log = web.requests.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|r| r.ends_with("/shards/shard-00002.parquet")),
        "{log:?}"
    );

    let mut web_mix = mix;
    web_mix.push(format!("{}/out", web.url()));
    let out = prep("", &cache).args(&web_mix).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("read-only"), "{err}");
    assert!(!cache.join("stage").exists(), "refused before any work");
}
