//! Hub model resolution against a local server speaking the Hub's `resolve` protocol: small
//! files answered directly with an ETag, LFS files redirected to a separate storage host with
//! `X-Linked-Etag` (their sha256), every answer carrying `X-Repo-Commit`.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{payload, sha256_hex, Route, Server};
use fetch::hub::{cached_snapshot, resolve_model_with, HubConfig};
use fetch::{DownloadConfig, FetchError, NoMultiProgress};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "org/tiny-MiniLM";

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_path_buf(),
        offline: false,
        token: Some("hf_secret".into()),
        download: DownloadConfig {
            retries: 1,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            read_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            proxy_from_env: false,
            ..DownloadConfig::default()
        },
    }
}

/// A port nothing listens on.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

struct Repo {
    hub: Server,
    storage: Server,
    files: Vec<(&'static str, Vec<u8>)>,
    weights: Vec<u8>,
}

/// Serves `REPO` at revision `main` with a sentence-transformers file set minus
/// `special_tokens_map.json` and `config_sentence_transformers.json` (optional, 404).
fn serve_repo(weights_name: &str) -> Repo {
    let hub = Server::start();
    let storage = Server::start();
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "config.json",
            br#"{"model_type":"bert","hidden_size":384}"#.to_vec(),
        ),
        ("tokenizer.json", br#"{"version":"1.0"}"#.to_vec()),
        (
            "tokenizer_config.json",
            br#"{"do_lower_case":true}"#.to_vec(),
        ),
        ("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n".to_vec()),
        (
            "modules.json",
            br#"[{"idx":0,"type":"Transformer"}]"#.to_vec(),
        ),
        (
            "sentence_bert_config.json",
            br#"{"max_seq_length":512}"#.to_vec(),
        ),
        (
            "1_Pooling/config.json",
            br#"{"pooling_mode_mean_tokens":true}"#.to_vec(),
        ),
    ];
    for (i, (name, body)) in files.iter().enumerate() {
        let path = format!("/{REPO}/resolve/main/{name}");
        let etag = format!("\"{:040x}\"", i + 1); // git-blob-like, not a sha256
        hub.route(
            &path,
            Route::ok(body.clone())
                .header("ETag", &etag)
                .header("X-Repo-Commit", COMMIT),
        );
    }
    let weights = payload(300_000, 42);
    let sha = sha256_hex(&weights);
    hub.route(
        &format!("/{REPO}/resolve/main/{weights_name}"),
        Route::status(302)
            .header("Location", &storage.url(&format!("/lfs/{sha}")))
            .header("X-Linked-Etag", &format!("\"{sha}\""))
            .header("X-Linked-Size", &weights.len().to_string())
            .header("X-Repo-Commit", COMMIT),
    );
    storage.route(&format!("/lfs/{sha}"), Route::ok(weights.clone()));
    Repo {
        hub,
        storage,
        files,
        weights,
    }
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--org--tiny-MiniLM")
}

#[test]
fn hub_id_lands_in_the_hf_cache_layout_then_resolves_offline() {
    let repo = serve_repo("model.safetensors");
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&repo.hub.base, cache.path());

    let snap = resolve_model_with(REPO, &cfg, &NoMultiProgress).unwrap();
    let rd = repo_dir(cache.path());
    assert_eq!(snap, rd.join("snapshots").join(COMMIT));
    assert_eq!(fs::read_to_string(rd.join("refs/main")).unwrap(), COMMIT);
    for (name, body) in &repo.files {
        assert_eq!(&fs::read(snap.join(name)).unwrap(), body, "{name}");
    }
    assert_eq!(
        fs::read(snap.join("model.safetensors")).unwrap(),
        repo.weights
    );

    // Snapshot entries are relative links into blobs/, the weights blob named by its sha256.
    let sha = sha256_hex(&repo.weights);
    assert_eq!(
        fs::read_link(snap.join("model.safetensors")).unwrap(),
        PathBuf::from(format!("../../blobs/{sha}"))
    );
    assert_eq!(
        fs::read_link(snap.join("1_Pooling/config.json")).unwrap(),
        PathBuf::from(format!("../../../blobs/{:040x}", 7))
    );
    assert!(rd.join("blobs").join(&sha).is_file());
    for absent in [
        "special_tokens_map.json",
        "config_sentence_transformers.json",
    ] {
        assert!(
            rd.join(".no_exist").join(COMMIT).join(absent).is_file(),
            "{absent}"
        );
        assert!(!snap.join(absent).exists());
    }
    assert!(
        walk(&rd)
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".part")),
        "no partial files left"
    );

    // The token goes to the Hub, never to the storage host the weights redirect to.
    assert!(repo
        .hub
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    let storage_reqs = repo.storage.requests();
    assert_eq!(storage_reqs.len(), 1);
    assert_eq!(storage_reqs[0].authorization, None);

    // Offline: same folder, no request at all (the endpoint is dead, and the servers see nothing new).
    let before = repo.hub.requests().len() + repo.storage.requests().len();
    let offline = HubConfig {
        offline: true,
        endpoint: dead_endpoint(),
        ..cfg.clone()
    };
    assert_eq!(
        resolve_model_with(REPO, &offline, &NoMultiProgress).unwrap(),
        snap
    );
    assert_eq!(
        resolve_model_with(&format!("{REPO}@{COMMIT}"), &offline, &NoMultiProgress).unwrap(),
        snap
    );
    assert_eq!(
        repo.hub.requests().len() + repo.storage.requests().len(),
        before
    );

    // Online but unreachable, warm cache: resolves from the cache too.
    let unreachable = HubConfig {
        endpoint: dead_endpoint(),
        ..cfg.clone()
    };
    assert_eq!(
        resolve_model_with(REPO, &unreachable, &NoMultiProgress).unwrap(),
        snap
    );

    // A second online resolution re-checks metadata but downloads no blob again.
    let storage_before = repo.storage.requests().len();
    assert_eq!(
        resolve_model_with(REPO, &cfg, &NoMultiProgress).unwrap(),
        snap
    );
    assert_eq!(repo.storage.requests().len(), storage_before);
    assert_eq!(
        repo.hub
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        repo.files.len(),
        "small files fetched once"
    );
}

#[test]
fn offline_with_a_cold_cache_says_what_to_run() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        offline: true,
        ..config(&dead_endpoint(), cache.path())
    };
    let err = resolve_model_with(REPO, &cfg, &NoMultiProgress).unwrap_err();
    assert!(matches!(err, FetchError::NotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("HF_HUB_OFFLINE") && msg.contains(&format!("prep download --model {REPO}")),
        "{msg}"
    );
    assert!(cached_snapshot(&repo_dir(cache.path()), "main").is_none());
}

#[test]
fn pytorch_weights_are_the_fallback_for_old_repositories() {
    let repo = serve_repo("pytorch_model.bin");
    let cache = tempfile::tempdir().unwrap();
    let snap = resolve_model_with(
        REPO,
        &config(&repo.hub.base, cache.path()),
        &NoMultiProgress,
    )
    .unwrap();
    assert_eq!(
        fs::read(snap.join("pytorch_model.bin")).unwrap(),
        repo.weights
    );
    assert!(!snap.join("model.safetensors").exists());
    assert!(repo_dir(cache.path())
        .join(".no_exist")
        .join(COMMIT)
        .join("model.safetensors")
        .is_file());
}

#[test]
fn corrupt_lfs_blob_is_rejected() {
    let repo = serve_repo("model.safetensors");
    let sha = sha256_hex(&repo.weights);
    // The storage host now serves other bytes of the same length.
    repo.storage.route(
        &format!("/lfs/{sha}"),
        Route::ok(payload(repo.weights.len(), 7)),
    );
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(
        REPO,
        &config(&repo.hub.base, cache.path()),
        &NoMultiProgress,
    )
    .unwrap_err();
    assert!(
        matches!(err, FetchError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let rd = repo_dir(cache.path());
    assert!(!rd.join("blobs").join(&sha).exists());
    assert!(cached_snapshot(&rd, "main").is_none());
}

#[test]
fn unknown_repository_and_local_folders() {
    let hub = Server::start();
    hub.route(
        "/org/private/resolve/main/config.json",
        Route::status(401).header("X-Error-Code", "RepositoryNotFound"),
    );
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.base, cache.path());
    let err = resolve_model_with("org/private", &cfg, &NoMultiProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("repository not found") && err.contains("HF_TOKEN"),
        "{err}"
    );

    // No config.json at all: not a model repository.
    let err = resolve_model_with("org/empty", &cfg, &NoMultiProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no config.json"), "{err}");

    // A local folder is returned as it is, without any request.
    let before = hub.requests().len();
    let local = tempfile::tempdir().unwrap();
    let got = resolve_model_with(local.path().to_str().unwrap(), &cfg, &NoMultiProgress).unwrap();
    assert_eq!(got, local.path());
    assert_eq!(hub.requests().len(), before);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
