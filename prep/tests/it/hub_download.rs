//! `prep download --dataset`, `prep download --source X --from hub`, `prep ingest --input hf://...`
//! and the root data_config workflow (`prep mix --pairs <snapshot>`), against a small local Hub on
//! 127.0.0.1 that speaks the protocol huggingface_hub uses: `/api/datasets/<repo>/revision/<rev>`
//! (the commit), `/api/datasets/<repo>/tree/<commit>?recursive=true&expand=false` (the listing),
//! `/datasets/<repo>/resolve/<commit>/<path>` (HEAD and GET; LFS files with `X-Linked-Etag`).
//! Every record is generated here (invented towns and appliances).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

type Routes = Arc<Mutex<HashMap<String, (u16, Vec<(String, String)>, Vec<u8>)>>>;

struct Hub {
    base: String,
    routes: Routes,
    log: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || serve(conn, &r, &l));
            }
        });
        Hub { base, routes, log }
    }

    /// Serves `files` (path, bytes) as dataset `repo` at COMMIT, `main` pointing there. Files
    /// ending in `.parquet` or `.gz` are LFS files (ETag = sha256), the rest small git files.
    fn serve_repo(&self, repo: &str, files: &[(String, Vec<u8>)]) {
        let mut routes = self.routes.lock().unwrap();
        let info = format!(r#"{{"id":"{repo}","sha":"{COMMIT}","siblings":[]}}"#);
        routes.insert(
            format!("/api/datasets/{repo}/revision/main"),
            (200, vec![], info.into_bytes()),
        );
        let mut tree = Vec::new();
        for (path, body) in files {
            let sha = sha256(body);
            let oid = &sha[..40];
            let lfs = path.ends_with(".parquet") || path.ends_with(".gz");
            let lfs_json = if lfs {
                format!(
                    r#","lfs":{{"oid":"{sha}","size":{},"pointerSize":130}}"#,
                    body.len()
                )
            } else {
                String::new()
            };
            tree.push(format!(
                r#"{{"type":"file","oid":"{oid}","size":{},"path":"{path}"{lfs_json}}}"#,
                body.len()
            ));
            let mut headers = vec![("X-Repo-Commit".to_owned(), COMMIT.to_owned())];
            if lfs {
                headers.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
                headers.push(("X-Linked-Size".into(), body.len().to_string()));
                headers.push(("Location".into(), format!("/storage/{sha}")));
                routes.insert(
                    format!("/datasets/{repo}/resolve/{COMMIT}/{path}"),
                    (302, headers, vec![]),
                );
                routes.insert(
                    format!("/storage/{sha}"),
                    (
                        200,
                        vec![("ETag".into(), format!("\"{sha}\""))],
                        body.clone(),
                    ),
                );
            } else {
                headers.push(("ETag".into(), format!("\"{oid}\"")));
                routes.insert(
                    format!("/datasets/{repo}/resolve/{COMMIT}/{path}"),
                    (200, headers, body.clone()),
                );
            }
        }
        routes.insert(
            format!("/api/datasets/{repo}/tree/{COMMIT}?recursive=true&expand=false"),
            (200, vec![], format!("[{}]", tree.join(",")).into_bytes()),
        );
    }

    fn gets_of(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&format!("GET {prefix}")))
            .count()
    }
}

fn serve(mut conn: TcpStream, routes: &Routes, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    log.lock().unwrap().push(format!("{method} {path}"));
    let (status, headers, body) = routes.lock().unwrap().get(&path).cloned().unwrap_or((
        404,
        vec![("X-Error-Code".into(), "EntryNotFound".into())],
        vec![],
    ));
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = conn.write_all(&body);
    }
}

/// Through the schemas crate's own hasher (prep has no sha2 of its own).
fn sha256(bytes: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    schemas::sha256_file(f.path()).unwrap()
}

fn prep(hub: &Hub, hf_home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prep"))
        .args(args)
        .env("HF_ENDPOINT", &hub.base)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("NO_PROXY", "*")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// `n` upstream-format pair lines about invented appliances of invented towns.
fn pair_lines(n: usize, tag: &str) -> String {
    let towns = ["Arnhollow", "Belcastra", "Corvale", "Dunmere"];
    (0..n)
        .map(|i| {
            format!(
                "[\"{tag} question {i}: where is the kettle of {}?\", \"{tag} answer {i}: by the {} well.\"]\n",
                towns[i % 4],
                towns[(i + 1) % 4]
            )
        })
        .collect()
}

/// A Parquet table (question, answer) written by the schemas crate's own Arrow/Parquet.
fn parquet_table(n: usize) -> Vec<u8> {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    let q: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("what does lantern {i} of Fennmoor light?")),
    ));
    let a: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("Lantern {i} lights the east gate.")),
    ));
    let batch = RecordBatch::try_from_iter([("question", q), ("answer", a)]).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

fn snapshot_of(stdout: &str) -> PathBuf {
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the snapshot folder is printed")
            .trim(),
    )
}

#[test]
fn download_dataset_prints_the_snapshot_and_filters_files() {
    let hub = Hub::start();
    let files = vec![
        ("README.md".to_owned(), b"# pairs\n".to_vec()),
        ("PAQ_pairs.jsonl.gz".to_owned(), gz(&pair_lines(30, "paq"))),
        (
            "squad_pairs.jsonl.gz".to_owned(),
            gz(&pair_lines(20, "squad")),
        ),
    ];
    hub.serve_repo("org/pairs", &files);
    let home = tempfile::tempdir().unwrap();
    let out = prep(
        &hub,
        home.path(),
        &[
            "download",
            "--dataset",
            "org/pairs",
            "--include",
            "*.jsonl.gz",
            "--exclude",
            "squad*",
        ],
    );
    let snap = snapshot_of(&ok(&out));
    assert_eq!(
        snap,
        home.path()
            .join("hub/datasets--org--pairs/snapshots")
            .join(COMMIT)
    );
    assert_eq!(
        std::fs::read(snap.join("PAQ_pairs.jsonl.gz")).unwrap(),
        files[1].1
    );
    assert!(!snap.join("squad_pairs.jsonl.gz").exists() && !snap.join("README.md").exists());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 files") && err.contains(COMMIT), "{err}");

    // Offline, the same folder with no request.
    let before = hub.log.lock().unwrap().len();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prep"));
    cmd.args([
        "download",
        "--dataset",
        "org/pairs",
        "--include",
        "*.jsonl.gz",
        "--exclude",
        "squad*",
    ])
    .env("HF_HOME", home.path())
    .env("HF_HUB_OFFLINE", "1");
    assert_eq!(snapshot_of(&ok(&cmd.output().unwrap())), snap);
    assert_eq!(hub.log.lock().unwrap().len(), before);
}

#[test]
fn ingest_reads_hf_urls_through_the_cache_and_records_the_commit() {
    let hub = Hub::start();
    let table = parquet_table(50);
    hub.serve_repo(
        "org/lanterns",
        &[(
            "pair/train-00000-of-00001.parquet".to_owned(),
            table.clone(),
        )],
    );
    let home = tempfile::tempdir().unwrap();
    let pairs = tempfile::tempdir().unwrap();
    let out = prep(
        &hub,
        home.path(),
        &[
            "ingest",
            "--source",
            "table",
            "--input",
            "hf://datasets/org/lanterns/pair",
            "--out",
            pairs.path().to_str().unwrap(),
        ],
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("columns: anchor=question,positive=answer (the first 2 string columns"),
        "{err}"
    );
    let m = schemas::Manifest::read(&pairs.path().join("lanterns")).unwrap();
    assert_eq!(m.rows, 50);
    assert_eq!(m.source, "table");
    let hubrec = &m.options["hub"][0];
    assert_eq!(hubrec["repository"], "org/lanterns");
    assert_eq!(hubrec["commit"], COMMIT);
    assert_eq!(hubrec["files"][0]["sha256"], sha256(&table));
    assert_eq!(m.inputs[0].sha256, sha256(&table));
}

#[test]
fn a_source_from_its_hub_mirror_is_ingested_with_no_more_flags() {
    let hub = Hub::start();
    // The gooaq mirror's layout and columns (catalogue: sentence-transformers/gooaq, pair/, question/answer).
    let table = parquet_table(40);
    hub.serve_repo(
        "sentence-transformers/gooaq",
        &[
            ("README.md".to_owned(), b"---\n---\n".to_vec()),
            ("pair/train-00000-of-00001.parquet".to_owned(), table),
        ],
    );
    let home = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pairs = tempfile::tempdir().unwrap();
    let d = dest.path().to_str().unwrap();
    ok(&prep(
        &hub,
        home.path(),
        &[
            "download", "--source", "gooaq", "--from", "hub", "--dest", d,
        ],
    ));
    assert_eq!(
        hub.gets_of("/datasets/sentence-transformers/gooaq/resolve/"),
        0,
        "LFS file fetched from storage"
    );
    assert_eq!(hub.gets_of("/storage/"), 1);
    let out = prep(
        &hub,
        home.path(),
        &[
            "ingest",
            "--source",
            "gooaq",
            "--dest",
            d,
            "--out",
            pairs.path().to_str().unwrap(),
        ],
    );
    ok(&out);
    let m = schemas::Manifest::read(&pairs.path().join("gooaq")).unwrap();
    assert_eq!((m.rows, m.source.as_str()), (40, "table"));
    assert_eq!(
        m.options["hub"][0]["repository"],
        "sentence-transformers/gooaq"
    );

    // A source without a confirmed mirror says so.
    let out = prep(
        &hub,
        home.path(),
        &[
            "download", "--source", "squad", "--from", "hub", "--dest", d,
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Hub mirror"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_data_config_workflow_mixes_upstream_files_from_a_dataset_snapshot() {
    let Some(model) = testdata::test_model_dir() else {
        return;
    };
    let hub = Hub::start();
    hub.serve_repo(
        "sentence-transformers/embedding-training-data",
        &[
            ("PAQ_pairs.jsonl.gz".to_owned(), gz(&pair_lines(120, "paq"))),
            (
                "squad_pairs.jsonl.gz".to_owned(),
                gz(&pair_lines(90, "squad")),
            ),
            (
                "stackexchange_title_body/cooking.stackexchange.com.jsonl.gz".to_owned(),
                gz(&pair_lines(80, "cooking")),
            ),
        ],
    );
    let home = tempfile::tempdir().unwrap();
    let snap = snapshot_of(&ok(&prep(
        &hub,
        home.path(),
        &[
            "download",
            "--dataset",
            "sentence-transformers/embedding-training-data",
        ],
    )));
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("data_config.json");
    std::fs::write(
        &config,
        r#"[{"name": "PAQ_pairs.jsonl.gz", "lines": 120, "weight": 3},
            {"name": "squad_pairs.jsonl.gz", "lines": 90, "weight": 2},
            {"name": "stackexchange_title_body/cooking.stackexchange.com.jsonl.gz", "lines": 80, "weight": 1}]"#,
    )
    .unwrap();
    let shards = tmp.path().join("shards");
    let out = prep(
        &hub,
        home.path(),
        &[
            "mix",
            "--config",
            config.to_str().unwrap(),
            "--pairs",
            snap.to_str().unwrap(),
            "--tokenizer",
            model.to_str().unwrap(),
            "--out",
            shards.to_str().unwrap(),
            "--steps",
            "12",
            "--batch-size",
            "4",
            "--batches-per-shard",
            "4",
            "--seed",
            "3",
            "--max-length-a",
            "16",
            "--max-length-b",
            "32",
        ],
    );
    ok(&out);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shards.join("index.json")).unwrap()).unwrap();
    let text = index.to_string();
    for name in [
        "PAQ_pairs.jsonl.gz",
        "squad_pairs.jsonl.gz",
        "cooking.stackexchange.com.jsonl.gz",
    ] {
        assert!(text.contains(name), "{name} resolved in the index: {text}");
    }
    assert_eq!(index["steps"], 12);
    // The snapshot itself is untouched: the mixer converts into its own --out.
    assert!(std::fs::read_dir(&snap).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}
