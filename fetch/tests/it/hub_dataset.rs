//! Dataset repositories against a local server speaking the Hub's protocol as huggingface_hub
//! uses it: `GET /api/datasets/<repo>/revision/<rev>` (the commit `sha`), the paginated
//! `GET /api/datasets/<repo>/tree/<commit>?recursive=true&expand=false` (`Link: rel="next"`),
//! and `resolve/<commit>/<path>` (small files answered directly with their git blob id as ETag,
//! LFS files redirected to a storage host with `X-Linked-Etag`/`X-Linked-Size`).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{payload, sha256_hex, Route, Server};
use fetch::hub::HubConfig;
use fetch::hub_dataset::{download_dataset, DatasetRequest};
use fetch::{DownloadConfig, FetchError, NoMultiProgress};

const REPO: &str = "org/qa-pairs";
const COMMIT: &str = "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd";
const COMMIT2: &str = "1111111111222222222233333333334444444444";

fn config(endpoint: &str, cache: &Path, token: Option<&str>) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_path_buf(),
        offline: false,
        token: token.map(str::to_owned),
        download: DownloadConfig {
            retries: 2,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            read_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            proxy_from_env: false,
            ..DownloadConfig::default()
        },
    }
}

fn request(spec: &str, include: &[&str], exclude: &[&str]) -> DatasetRequest {
    DatasetRequest {
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..DatasetRequest::parse(spec).unwrap()
    }
}

struct File {
    path: &'static str,
    body: Vec<u8>,
    lfs: bool,
}

impl File {
    fn oid(&self) -> String {
        // A git-blob-like id derived from the path and contents (the test only needs it unique).
        sha256_hex(&[self.path.as_bytes(), &self.body].concat())[..40].to_owned()
    }
}

struct Hub {
    hub: Server,
    storage: Server,
    files: Vec<File>,
}

fn files() -> Vec<File> {
    vec![
        File {
            path: ".gitattributes",
            body: b"*.parquet filter=lfs diff=lfs merge=lfs -text\n".to_vec(),
            lfs: false,
        },
        File {
            path: "README.md",
            body: b"---\nlicense: apache-2.0\n---\n# qa pairs\n".to_vec(),
            lfs: false,
        },
        File {
            path: "data/train-00000-of-00002.parquet",
            body: payload(200_000, 1),
            lfs: true,
        },
        File {
            path: "data/train-00001-of-00002.parquet",
            body: payload(150_000, 2),
            lfs: true,
        },
        File {
            path: "pairs/PAQ pairs.jsonl.gz",
            body: payload(90_000, 3),
            lfs: true,
        },
    ]
}

/// Serves `files` as REPO at `commit`, `main` pointing there; the tree in two pages.
fn serve(files: Vec<File>, commit: &str, gated: Option<&str>) -> Hub {
    let hub = Server::start();
    let storage = Server::start();
    route_commit(&hub, &storage, &files, commit, gated);
    Hub {
        hub,
        storage,
        files,
    }
}

fn route_commit(hub: &Server, storage: &Server, files: &[File], commit: &str, gated: Option<&str>) {
    hub.route(
        &format!("/api/datasets/{REPO}/revision/main"),
        Route::ok(format!(
            r#"{{"_id":"x","id":"{REPO}","sha":"{commit}","private":false,"gated":{},"siblings":[]}}"#,
            if gated.is_some() { "\"manual\"" } else { "false" }
        )),
    );
    let entry = |f: &File| {
        let lfs = if f.lfs {
            format!(
                r#","lfs":{{"oid":"{}","size":{},"pointerSize":134}}"#,
                sha256_hex(&f.body),
                f.body.len()
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"type":"file","oid":"{}","size":{},"path":"{}"{lfs}}}"#,
            f.oid(),
            f.body.len(),
            f.path
        )
    };
    let (first, second) = files.split_at(2);
    let tree = format!("/api/datasets/{REPO}/tree/{commit}?recursive=true&expand=false");
    let page2 = format!("{tree}&cursor=page2");
    let mut p1: Vec<String> = first.iter().map(entry).collect();
    p1.push(r#"{"type":"directory","oid":"d0","size":0,"path":"data"}"#.to_owned());
    hub.route(
        &tree,
        Route::ok(format!("[{}]", p1.join(",")))
            .header("Link", &format!("<{}>; rel=\"next\"", hub.url(&page2))),
    );
    let p2: Vec<String> = second.iter().map(entry).collect();
    hub.route(&page2, Route::ok(format!("[{}]", p2.join(","))));
    for f in files {
        let resolve = format!(
            "/datasets/{REPO}/resolve/{commit}/{}",
            f.path.replace(' ', "%20")
        );
        let mut route = if f.lfs {
            let sha = sha256_hex(&f.body);
            storage.route(&format!("/lfs/{sha}"), Route::ok(f.body.clone()));
            Route::status(302)
                .header("Location", &storage.url(&format!("/lfs/{sha}")))
                .header("X-Linked-Etag", &format!("\"{sha}\""))
                .header("X-Linked-Size", &f.body.len().to_string())
        } else {
            Route::ok(f.body.clone()).header("ETag", &format!("\"{}\"", f.oid()))
        };
        route = route.header("X-Repo-Commit", commit);
        route.gated = gated.map(|t| format!("Bearer {t}"));
        hub.route(&resolve, route);
    }
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("datasets--org--qa-pairs")
}

fn gets(s: &Server) -> usize {
    s.requests().iter().filter(|r| r.method == "GET").count()
}

#[test]
fn a_dataset_lands_in_the_hf_layout_listed_over_pages_and_filtered() {
    let hub = serve(files(), COMMIT, None);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.hub.base, cache.path(), Some("hf_secret"));
    let req = request(REPO, &["data/", "*.jsonl.gz"], &["*00001*"]);
    let snap = download_dataset(&req, &cfg, &NoMultiProgress).unwrap();

    let rd = repo_dir(cache.path());
    assert_eq!(snap.commit, COMMIT);
    assert_eq!(snap.dir, rd.join("snapshots").join(COMMIT));
    assert_eq!(fs::read_to_string(rd.join("refs/main")).unwrap(), COMMIT);
    let got: Vec<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "data/train-00000-of-00002.parquet",
            "pairs/PAQ pairs.jsonl.gz"
        ],
        "include `data/` and `*.jsonl.gz` (across `/`), exclude `*00001*`"
    );
    for f in &hub.files {
        let there = snap.dir.join(f.path);
        if got.contains(&f.path) {
            assert_eq!(fs::read(&there).unwrap(), f.body, "{}", f.path);
            let sha = sha256_hex(&f.body);
            let depth = "../".repeat(f.path.matches('/').count() + 2);
            assert_eq!(
                fs::read_link(&there).unwrap(),
                PathBuf::from(format!("{depth}blobs/{sha}"))
            );
            assert!(snap.files.iter().any(|s| s.path == f.path
                && s.sha256.as_deref() == Some(sha.as_str())
                && s.fetched));
        } else {
            assert!(!there.exists(), "{} was filtered out", f.path);
        }
    }
    // The whole listing is cached as huggingface_hub caches it (trees/<commit>.json, format 1).
    let tree: serde_json::Value =
        serde_json::from_slice(&fs::read(rd.join("trees").join(format!("{COMMIT}.json"))).unwrap())
            .unwrap();
    assert_eq!(tree["format_version"], 1);
    assert_eq!(tree["files"].as_object().unwrap().len(), hub.files.len());
    assert_eq!(
        tree["files"]["data/train-00001-of-00002.parquet"]["lfs_sha256"],
        sha256_hex(&hub.files[3].body)
    );
    assert_eq!(tree["files"]["README.md"]["blob_id"], hub.files[1].oid());
    // Only what was asked for was fetched; the token went to the Hub, never to storage.
    assert_eq!(gets(&hub.storage), 2);
    assert!(hub
        .storage
        .requests()
        .iter()
        .all(|r| r.authorization.is_none()));
    assert!(hub
        .hub
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    assert!(walk(&rd)
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".part")));

    // A rerun asks for the commit only: files and listing are in the cache.
    let (hub_before, storage_before) = (hub.hub.requests().len(), hub.storage.requests().len());
    let again = download_dataset(&req, &cfg, &NoMultiProgress).unwrap();
    assert_eq!(again.dir, snap.dir);
    assert!(again.files.iter().all(|f| !f.fetched));
    assert_eq!(hub.storage.requests().len(), storage_before);
    assert_eq!(
        hub.hub.requests().len(),
        hub_before + 1,
        "one revision lookup"
    );
}

#[test]
fn blobs_already_in_the_cache_are_linked_without_a_request() {
    let hub = serve(files(), COMMIT, None);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.hub.base, cache.path(), None);
    // As Python's huggingface_hub leaves it: a blob under its sha256 (LFS) or git id (small file).
    let blobs = repo_dir(cache.path()).join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        blobs.join(sha256_hex(&hub.files[2].body)),
        &hub.files[2].body,
    )
    .unwrap();
    fs::write(blobs.join(hub.files[1].oid()), &hub.files[1].body).unwrap();

    let snap = download_dataset(&request(REPO, &[], &[]), &cfg, &NoMultiProgress).unwrap();
    assert_eq!(snap.files.len(), hub.files.len());
    for f in &hub.files {
        assert_eq!(
            fs::read(snap.dir.join(f.path)).unwrap(),
            f.body,
            "{}",
            f.path
        );
    }
    let heads: Vec<String> = hub
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads
        .iter()
        .all(|p| !p.ends_with("README.md") && !p.contains("00000-of")));
    assert_eq!(gets(&hub.storage), 2);

    // `main` moves to a new commit where one LFS file changed: the unchanged ones are linked
    // from their blobs, only the changed one is fetched.
    let mut next = files();
    next[3].body = payload(150_000, 99);
    route_commit(&hub.hub, &hub.storage, &next, COMMIT2, None);
    let storage_before = gets(&hub.storage);
    let snap2 = download_dataset(&request(REPO, &[], &[]), &cfg, &NoMultiProgress).unwrap();
    assert_eq!(snap2.commit, COMMIT2);
    assert_eq!(gets(&hub.storage), storage_before + 1);
    assert_eq!(
        fs::read(snap2.dir.join(next[3].path)).unwrap(),
        next[3].body
    );
    let fetched: Vec<&str> = snap2
        .files
        .iter()
        .filter(|f| f.fetched)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(fetched, [next[3].path]);
    // The old snapshot is untouched.
    assert_eq!(
        fs::read(snap.dir.join(next[3].path)).unwrap(),
        hub.files[3].body
    );
}

#[test]
fn offline_resolves_a_complete_snapshot_and_names_what_is_missing() {
    let hub = serve(files(), COMMIT, None);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.hub.base, cache.path(), None);
    let req = request(REPO, &["*.parquet"], &[]);
    let snap = download_dataset(&req, &cfg, &NoMultiProgress).unwrap();

    let before = hub.hub.requests().len() + hub.storage.requests().len();
    let offline = HubConfig {
        offline: true,
        endpoint: dead_endpoint(),
        ..cfg.clone()
    };
    let got = download_dataset(&req, &offline, &NoMultiProgress).unwrap();
    assert_eq!(got.dir, snap.dir);
    assert_eq!(got.files.len(), 2);
    let by_commit = download_dataset(
        &request(&format!("{REPO}@{COMMIT}"), &["*.parquet"], &[]),
        &offline,
        &NoMultiProgress,
    )
    .unwrap();
    assert_eq!(by_commit.dir, snap.dir);
    assert_eq!(
        hub.hub.requests().len() + hub.storage.requests().len(),
        before,
        "no request offline"
    );

    // Files the cached listing has but the snapshot lacks are named, with the command to run.
    let err = download_dataset(&request(REPO, &[], &[]), &offline, &NoMultiProgress).unwrap_err();
    assert!(matches!(err, FetchError::NotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("3 file(s) missing") && msg.contains("README.md"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("prep download --dataset {REPO}")),
        "{msg}"
    );

    // Online but unreachable with a warm cache: the cached snapshot.
    let unreachable = HubConfig {
        endpoint: dead_endpoint(),
        ..cfg.clone()
    };
    assert_eq!(
        download_dataset(&req, &unreachable, &NoMultiProgress)
            .unwrap()
            .dir,
        snap.dir
    );

    // A cold cache offline says what to run.
    let cold = tempfile::tempdir().unwrap();
    let err = download_dataset(
        &req,
        &HubConfig {
            cache_dir: cold.path().into(),
            ..offline
        },
        &NoMultiProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn a_gated_dataset_needs_the_token_and_says_so() {
    let hub = serve(files(), COMMIT, Some("hf_ok"));
    let cache = tempfile::tempdir().unwrap();
    let req = request(REPO, &["README.md"], &[]);
    for token in [None, Some("hf_wrong")] {
        let err = download_dataset(
            &req,
            &config(&hub.hub.base, cache.path(), token),
            &NoMultiProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gated") && err.contains("HF_TOKEN"),
            "{token:?}: {err}"
        );
        assert!(
            err.contains(if token.is_none() { "401" } else { "403" }),
            "{err}"
        );
    }
    assert!(!repo_dir(cache.path())
        .join("snapshots")
        .join(COMMIT)
        .join("README.md")
        .exists());
    let snap = download_dataset(
        &req,
        &config(&hub.hub.base, cache.path(), Some("hf_ok")),
        &NoMultiProgress,
    )
    .unwrap();
    assert_eq!(
        fs::read(snap.dir.join("README.md")).unwrap(),
        hub.files[1].body
    );
}

#[test]
fn an_interrupted_lfs_download_resumes_where_it_stopped() {
    let hub = serve(files(), COMMIT, None);
    let sha = sha256_hex(&hub.files[2].body);
    let mut cut = Route::ok(hub.files[2].body.clone());
    cut.drop_after = Some(120_000);
    cut.drops = 1;
    hub.storage.route(&format!("/lfs/{sha}"), cut);
    let cache = tempfile::tempdir().unwrap();
    // No retry within the run: the first run fails with the part kept, the second resumes it.
    let mut cfg = config(&hub.hub.base, cache.path(), None);
    cfg.download.retries = 0;
    let req = request(REPO, &["data/train-00000-of-00002.parquet"], &[]);
    let err = download_dataset(&req, &cfg, &NoMultiProgress).unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err:?}");
    let part = repo_dir(cache.path())
        .join("blobs")
        .join(format!("{sha}.part"));
    assert_eq!(fs::metadata(&part).unwrap().len(), 120_000);

    let snap = download_dataset(&req, &cfg, &NoMultiProgress).unwrap();
    assert_eq!(
        fs::read(snap.dir.join(req.include[0].as_str())).unwrap(),
        hub.files[2].body
    );
    let ranges: Vec<Option<String>> = hub
        .storage
        .requests()
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, [None, Some("bytes=120000-".to_owned())]);
    assert!(!part.exists());
}

#[test]
fn unknown_repositories_revisions_and_empty_selections_are_named() {
    let hub = Server::start();
    hub.route(
        "/api/datasets/org/private/revision/main",
        Route::status(401).header("X-Error-Code", "RepoNotFound"),
    );
    hub.route(
        &format!("/api/datasets/{REPO}/revision/v9"),
        Route::status(404).header("X-Error-Code", "RevisionNotFound"),
    );
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.base, cache.path(), None);
    let err = download_dataset(&request("org/private", &[], &[]), &cfg, &NoMultiProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dataset `org/private`")
            && err.contains("repository not found")
            && err.contains("HF_TOKEN"),
        "{err}"
    );
    let err = download_dataset(
        &request(&format!("{REPO}@v9"), &[], &[]),
        &cfg,
        &NoMultiProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("revision `v9` not found"), "{err}");

    let full = serve(files(), COMMIT, None);
    let err = download_dataset(
        &request(REPO, &["*.csv"], &[]),
        &config(&full.hub.base, cache.path(), None),
        &NoMultiProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("none of its 5 files matches") && err.contains("*.csv"),
        "{err}"
    );
}

/// A port nothing listens on.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
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
