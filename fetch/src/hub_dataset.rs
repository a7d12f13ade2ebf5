//! Dataset repositories from the Hub (`prep download --dataset org/name[@revision]`), fetched the
//! way `huggingface_hub.snapshot_download(repo_type="dataset")` does, into the same cache:
//!
//! 1. the revision's commit: `GET /api/datasets/<repo>/revision/<revision>` → `sha` (skipped when
//!    the revision already is a commit);
//! 2. the file list at that commit: `GET /api/datasets/<repo>/tree/<commit>?recursive=true&expand=false`,
//!    pages followed through the `Link: <…>; rel="next"` header, kept (as huggingface_hub does) in
//!    `trees/<commit>.json` beside `blobs/`, so an offline run can tell a complete snapshot;
//! 3. `--include`/`--exclude` patterns as `filter_repo_objects` applies them (`fnmatchcase`: `*`
//!    crosses `/`, a pattern ending in `/` means everything below);
//! 4. each file not already in `snapshots/<commit>/`: a blob the cache already holds under its
//!    name (the LFS sha256, else the git blob id: what the Hub sends as its ETag) is linked without
//!    a request; otherwise a HEAD on `resolve/<commit>/<path>` (`X-Linked-Etag`, `X-Linked-Size`,
//!    the storage redirect) and the resumable, verified download of [`crate::Downloader`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::download::{Downloader, FileSpec};
use crate::error::{FetchError, Result};
use crate::hub::{
    auth_headers, encode_segment, head, is_commit, link_blob, parse_hub_id, refused,
    safe_blob_name, HubConfig, RepoKind,
};
use crate::progress::MultiProgress;

/// What to fetch: a repository at a revision, and which of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRequest {
    pub repo: String,
    /// Branch, tag or commit (`main` by default).
    pub revision: String,
    /// Only files matching one of these (all files when empty).
    pub include: Vec<String>,
    /// Never files matching one of these.
    pub exclude: Vec<String>,
}

impl DatasetRequest {
    /// `org/name` or `org/name@revision`, every file.
    pub fn parse(spec: &str) -> Result<Self> {
        let (repo, revision) = parse_hub_id(spec).map_err(|message| FetchError::Dataset {
            dataset: spec.to_owned(),
            message: message.replace("no such folder, and not", "not"),
        })?;
        if !repo.contains('/') {
            return Err(FetchError::Dataset {
                dataset: spec.to_owned(),
                message: "a dataset id is `org/name` (datasets have no un-namespaced ids)".into(),
            });
        }
        Ok(DatasetRequest {
            repo,
            revision,
            include: Vec::new(),
            exclude: Vec::new(),
        })
    }

    /// The id as given back to the user: `org/name`, with `@revision` unless it is `main`.
    pub fn id(&self) -> String {
        match self.revision.as_str() {
            "main" => self.repo.clone(),
            rev => format!("{}@{rev}", self.repo),
        }
    }
}

/// `hf://datasets/ORG/NAME[@REVISION]/PATH-OR-GLOB` (the form of huggingface_hub's
/// `HfFileSystem`; a revision with `/` is written encoded, `refs%2Fconvert%2Fparquet`) as a request
/// for the files it names: a glob as it is, a plain path as that file or everything below that
/// folder, no path as every file. `None` when `url` is not an `hf://` URL.
pub fn parse_hf_url(url: &str) -> Result<Option<DatasetRequest>> {
    let Some(rest) = url.strip_prefix("hf://") else {
        return Ok(None);
    };
    let bad = |message: &str| FetchError::Dataset {
        dataset: url.to_owned(),
        message: message.to_owned(),
    };
    let rest = rest
        .strip_prefix("datasets/")
        .ok_or_else(|| bad("only dataset URLs are read: hf://datasets/ORG/NAME[@REV]/PATH"))?;
    let mut parts = rest.splitn(3, '/');
    let (org, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = parts.next().unwrap_or("").trim_matches('/');
    let id = format!("{org}/{}", name.replace("%2F", "/").replace("%2f", "/"));
    let mut req = DatasetRequest::parse(&id).map_err(|e| bad(&e.to_string()))?;
    if !path.is_empty() {
        check_repo_path(&req.repo, path.trim_end_matches('/'))?;
        req.include = if path.contains(['*', '?', '[']) {
            vec![path.to_owned()]
        } else {
            vec![path.to_owned(), format!("{path}/")]
        };
    }
    Ok(Some(req))
}

/// One file of a repository at a commit, as the tree listing (and its cache) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    pub size: u64,
    /// The git blob id (sha1).
    pub blob_id: String,
    /// LFS files: the sha256 of the contents, their blob's name in the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xet_hash: Option<String>,
}

impl RepoFile {
    /// The size of the contents (an LFS file's `size` in the tree is the contents' size too,
    /// but `lfs.size` is the authoritative one).
    pub fn content_size(&self) -> u64 {
        self.lfs_size.unwrap_or(self.size)
    }

    /// The name the Hub's ETag gives the blob: the LFS sha256, else the git blob id.
    fn blob_name(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.blob_id)
    }
}

/// `trees/<commit>.json`, in `huggingface_hub`'s format (`_tree_cache.py`, format_version 1).
#[derive(Debug, Serialize, Deserialize)]
struct TreeCache {
    format_version: u32,
    files: BTreeMap<String, RepoFile>,
}

const TREE_CACHE_FORMAT: u32 = 1;

/// A snapshot folder and what it holds of the request.
#[derive(Debug, Clone)]
pub struct DatasetSnapshot {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// `…/datasets--org--name/snapshots/<commit>`.
    pub dir: PathBuf,
    /// The requested files, by path in the repository, in path order.
    pub files: Vec<SnapshotFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Path in the repository (and under [`DatasetSnapshot::dir`]).
    pub path: String,
    pub size: u64,
    /// The sha256 the Hub states (LFS files).
    pub sha256: Option<String>,
    /// Whether bytes were transferred for it in this run.
    pub fetched: bool,
}

/// `--include`/`--exclude` as `huggingface_hub.utils.filter_repo_objects` applies them.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        let compile = |p: &String| {
            let mut p = p.replace('\\', "/");
            if p.ends_with('/') {
                p.push('*');
            }
            glob::Pattern::new(&p).map_err(|e| FetchError::Dataset {
                dataset: String::new(),
                message: format!("bad pattern `{p}`: {e}"),
            })
        };
        Ok(Filter {
            include: include.iter().map(compile).collect::<Result<_>>()?,
            exclude: exclude.iter().map(compile).collect::<Result<_>>()?,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        // fnmatchcase: case-sensitive, `*` and `?` cross `/`, leading dots are not special.
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        (self.include.is_empty() || self.include.iter().any(|p| p.matches_with(path, opts)))
            && !self.exclude.iter().any(|p| p.matches_with(path, opts))
    }
}

/// Fetches the request's files into the cache and returns the snapshot. With `HF_HUB_OFFLINE`,
/// or when the Hub is unreachable and the cache is warm, answers from the cache alone.
pub fn download_dataset(
    req: &DatasetRequest,
    cfg: &HubConfig,
    progress: &dyn MultiProgress,
) -> Result<DatasetSnapshot> {
    let filter = Filter::new(&req.include, &req.exclude).map_err(|e| named(e, &req.repo))?;
    let repo_dir = cfg.repo_dir_of(RepoKind::Dataset, &req.repo);
    if cfg.offline {
        return cached_dataset(req, &filter, &repo_dir, "HF_HUB_OFFLINE is set");
    }
    let dl = Downloader::new(cfg.download.clone());
    let warm = cached_dataset(req, &filter, &repo_dir, "").is_ok();
    let commit = match resolve_commit(&dl, cfg, req, warm) {
        Ok(c) => c,
        // Unreachable Hub, warm cache: the cached snapshot is the answer (as huggingface_hub does).
        Err(e) if e.is_transient() && warm => {
            return cached_dataset(req, &filter, &repo_dir, "the Hub is unreachable")
        }
        Err(e) => return Err(e),
    };
    let tree = repo_tree(&dl, cfg, &req.repo, &commit, &repo_dir)?;
    let wanted = select(&tree, &filter, req)?;
    if req.revision != commit {
        write_ref(&repo_dir, &req.revision, &commit)?;
    }
    let snap = repo_dir.join("snapshots").join(&commit);
    let fetched = fetch_missing(&dl, cfg, req, &commit, &snap, &repo_dir, &wanted, progress)?;
    let files = wanted
        .iter()
        .map(|(path, f)| SnapshotFile {
            path: path.clone(),
            size: f.content_size(),
            sha256: f.lfs_sha256.clone(),
            fetched: fetched.contains(path),
        })
        .collect();
    Ok(DatasetSnapshot {
        repo: req.repo.clone(),
        revision: req.revision.clone(),
        commit,
        dir: snap,
        files,
    })
}

fn named(e: FetchError, repo: &str) -> FetchError {
    match e {
        FetchError::Dataset { message, .. } => FetchError::Dataset {
            dataset: repo.to_owned(),
            message,
        },
        other => other,
    }
}

/// The files of the tree the filter keeps; none is an error naming the patterns.
fn select(
    tree: &BTreeMap<String, RepoFile>,
    filter: &Filter,
    req: &DatasetRequest,
) -> Result<Vec<(String, RepoFile)>> {
    let wanted: Vec<(String, RepoFile)> = tree
        .iter()
        .filter(|(p, _)| filter.matches(p))
        .map(|(p, f)| (p.clone(), f.clone()))
        .collect();
    if wanted.is_empty() {
        return Err(FetchError::Dataset {
            dataset: req.repo.clone(),
            message: format!(
                "none of its {} files matches --include {:?} / --exclude {:?}",
                tree.len(),
                req.include,
                req.exclude
            ),
        });
    }
    Ok(wanted)
}

/// The commit a revision names: the revision itself when it is one, else the Hub's `sha`.
fn resolve_commit(
    dl: &Downloader,
    cfg: &HubConfig,
    req: &DatasetRequest,
    warm: bool,
) -> Result<String> {
    if is_commit(&req.revision) {
        return Ok(req.revision.to_ascii_lowercase());
    }
    #[derive(Deserialize)]
    struct Info {
        sha: Option<String>,
    }
    let url = format!(
        "{}/api/datasets/{}/revision/{}",
        cfg.endpoint,
        req.repo,
        encode_segment(&req.revision)
    );
    let (body, _) = api_get(dl, cfg, &url, req, warm)?;
    let info: Info = serde_json::from_slice(&body).map_err(|e| FetchError::Dataset {
        dataset: req.repo.clone(),
        message: format!("{url}: unreadable repository info: {e}"),
    })?;
    match info.sha {
        Some(sha) if is_commit(&sha) => Ok(sha.to_ascii_lowercase()),
        other => Err(FetchError::Dataset {
            dataset: req.repo.clone(),
            message: format!("{url}: the repository info names no commit (sha {other:?})"),
        }),
    }
}

/// Every file of the repository at `commit`: from `trees/<commit>.json` when cached (a commit
/// never changes), else listed through the paginated tree API and cached.
fn repo_tree(
    dl: &Downloader,
    cfg: &HubConfig,
    repo: &str,
    commit: &str,
    repo_dir: &Path,
) -> Result<BTreeMap<String, RepoFile>> {
    if let Some(tree) = read_tree_cache(repo_dir, commit) {
        return Ok(tree);
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "type")]
        kind: String,
        path: String,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        oid: String,
        lfs: Option<Lfs>,
        #[serde(rename = "xetHash")]
        xet_hash: Option<String>,
    }
    #[derive(Deserialize)]
    struct Lfs {
        oid: String,
        size: u64,
    }
    let req = DatasetRequest {
        repo: repo.to_owned(),
        revision: commit.to_owned(),
        include: Vec::new(),
        exclude: Vec::new(),
    };
    let mut next = Some(format!(
        "{}/api/datasets/{repo}/tree/{commit}?recursive=true&expand=false",
        cfg.endpoint
    ));
    let mut files = BTreeMap::new();
    while let Some(url) = next.take() {
        let (body, link) = api_get(dl, cfg, &url, &req, false)?;
        let page: Vec<Entry> = serde_json::from_slice(&body).map_err(|e| FetchError::Dataset {
            dataset: repo.to_owned(),
            message: format!("{url}: unreadable tree listing: {e}"),
        })?;
        for e in page.into_iter().filter(|e| e.kind == "file") {
            check_repo_path(repo, &e.path)?;
            files.insert(
                e.path,
                RepoFile {
                    size: e.size,
                    blob_id: e.oid,
                    lfs_sha256: e.lfs.as_ref().map(|l| l.oid.to_ascii_lowercase()),
                    lfs_size: e.lfs.as_ref().map(|l| l.size),
                    xet_hash: e.xet_hash,
                },
            );
        }
        next = link;
    }
    write_tree_cache(repo_dir, commit, &files)?;
    Ok(files)
}

/// A listed path must stay inside the snapshot folder.
fn check_repo_path(repo: &str, path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(FetchError::Dataset {
            dataset: repo.to_owned(),
            message: format!("the tree listing has an unsafe path {path:?}"),
        });
    }
    Ok(())
}

fn tree_cache_path(repo_dir: &Path, commit: &str) -> PathBuf {
    repo_dir.join("trees").join(format!("{commit}.json"))
}

fn read_tree_cache(repo_dir: &Path, commit: &str) -> Option<BTreeMap<String, RepoFile>> {
    let bytes = fs::read(tree_cache_path(repo_dir, commit)).ok()?;
    let cache: TreeCache = serde_json::from_slice(&bytes).ok()?;
    (cache.format_version == TREE_CACHE_FORMAT).then_some(cache.files)
}

fn write_tree_cache(
    repo_dir: &Path,
    commit: &str,
    files: &BTreeMap<String, RepoFile>,
) -> Result<()> {
    let path = tree_cache_path(repo_dir, commit);
    let cache = TreeCache {
        format_version: TREE_CACHE_FORMAT,
        files: files.clone(),
    };
    let parent = path.parent().expect("under trees/");
    fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    schemas::AtomicFile::write_json(&path, &cache).map_err(|e| FetchError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    let r = repo_dir.join("refs").join(revision);
    let parent = r.parent().expect("under refs/");
    fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    schemas::AtomicFile::write_all(&r, commit.as_bytes()).map_err(|e| FetchError::Corrupt {
        path: r.clone(),
        message: e.to_string(),
    })
}

/// Links what the cache already holds and downloads the rest; returns the paths downloaded.
#[allow(clippy::too_many_arguments)]
fn fetch_missing(
    dl: &Downloader,
    cfg: &HubConfig,
    req: &DatasetRequest,
    commit: &str,
    snap: &Path,
    repo_dir: &Path,
    wanted: &[(String, RepoFile)],
    progress: &dyn MultiProgress,
) -> Result<Vec<String>> {
    let blobs = repo_dir.join("blobs");
    let mut specs = Vec::new();
    let mut links = Vec::new();
    for (path, f) in wanted {
        let size = f.content_size();
        // `exists`/`metadata` follow the link, so a dangling link into a deleted blob is missing.
        if fs::metadata(snap.join(path)).is_ok_and(|m| m.len() == size) {
            continue;
        }
        let known = f.blob_name();
        if safe_blob_name(known) && fs::metadata(blobs.join(known)).is_ok_and(|m| m.len() == size) {
            link_blob(snap, path, known)?;
            continue;
        }
        let meta =
            head(dl, cfg, RepoKind::Dataset, &req.repo, commit, path, false)?.ok_or_else(|| {
                FetchError::Dataset {
                    dataset: req.repo.clone(),
                    message: format!(
                        "`{path}` is listed at {commit} but its download is not found"
                    ),
                }
            })?;
        specs.push(FileSpec {
            headers: auth_headers(cfg, &meta.url),
            url: meta.url,
            dest: blobs.join(&meta.etag),
            size: Some(size),
            sha256: f.lfs_sha256.clone(),
            label: Some(path.clone()),
        });
        links.push((path.clone(), meta.etag));
    }
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    dl.fetch_all(&specs, progress)?;
    for (path, etag) in &links {
        link_blob(snap, path, etag)?;
    }
    Ok(links.into_iter().map(|(p, _)| p).collect())
}

/// The snapshot the cache holds for the request, without any request: the revision's commit
/// (itself, or `refs/<revision>`), its folder, and every requested file in it. With the tree
/// listing cached the check is exact; without it (a snapshot `huggingface_hub` made before it
/// cached trees) the files present that match are the answer, as huggingface_hub does.
pub fn cached_dataset(
    req: &DatasetRequest,
    filter: &Filter,
    repo_dir: &Path,
    why: &str,
) -> Result<DatasetSnapshot> {
    let not_cached = |detail: String| FetchError::NotCached {
        what: format!(
            "dataset `{}` (revision {}; {why}{detail})",
            req.repo, req.revision
        ),
        dir: repo_dir.to_path_buf(),
        command: format!("prep download --dataset {}", req.id()),
    };
    let commit = if is_commit(&req.revision) {
        req.revision.to_ascii_lowercase()
    } else {
        fs::read_to_string(repo_dir.join("refs").join(&req.revision))
            .map_err(|_| not_cached(String::new()))?
            .trim()
            .to_owned()
    };
    if !is_commit(&commit) {
        return Err(not_cached(format!("; refs/{} is damaged", req.revision)));
    }
    let snap = repo_dir.join("snapshots").join(&commit);
    let listed = read_tree_cache(repo_dir, &commit).unwrap_or_else(|| walk_snapshot(&snap));
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for (path, f) in listed.iter().filter(|(p, _)| filter.matches(p)) {
        match fs::metadata(snap.join(path)) {
            Ok(m) if m.len() == f.content_size() => files.push(SnapshotFile {
                path: path.clone(),
                size: m.len(),
                sha256: f.lfs_sha256.clone(),
                fetched: false,
            }),
            _ => missing.push(path.as_str()),
        }
    }
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(not_cached(format!(
            "; {} file(s) missing: {shown}",
            missing.len()
        )));
    }
    if files.is_empty() {
        return Err(not_cached(String::new()));
    }
    Ok(DatasetSnapshot {
        repo: req.repo.clone(),
        revision: req.revision.clone(),
        commit,
        dir: snap,
        files,
    })
}

/// The files a snapshot folder holds (following links), as tree entries of their own sizes.
fn walk_snapshot(snap: &Path) -> BTreeMap<String, RepoFile> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, RepoFile>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".link-") {
                continue; // a link being made
            }
            let path = format!("{prefix}{name}");
            match fs::metadata(e.path()) {
                Ok(m) if m.is_dir() => walk(&e.path(), &format!("{path}/"), out),
                Ok(m) => {
                    out.insert(
                        path,
                        RepoFile {
                            size: m.len(),
                            blob_id: String::new(),
                            lfs_sha256: None,
                            lfs_size: None,
                            xet_hash: None,
                        },
                    );
                }
                Err(_) => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(snap, "", &mut out);
    out
}

/// A GET on the Hub's JSON API with retries on connection trouble and 5xx: the body and the
/// `rel="next"` page link. Refusals are named as `huggingface_hub` names them.
fn api_get(
    dl: &Downloader,
    cfg: &HubConfig,
    url: &str,
    req: &DatasetRequest,
    warm: bool,
) -> Result<(Vec<u8>, Option<String>)> {
    let mut failures = 0u32;
    loop {
        let mut r = dl.agent().get(url);
        for (k, v) in auth_headers(cfg, url) {
            r = r.header(k, v);
        }
        let transient = |message: String| FetchError::Network {
            url: url.to_owned(),
            attempts: failures + 1,
            message,
        };
        let err = match r.call() {
            Err(e) => transient(e.to_string()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let h = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (code, link) = (h("x-error-code").unwrap_or_default(), h("link"));
                match status {
                    200 => {
                        let body = resp
                            .into_body()
                            .with_config()
                            .limit(256 << 20)
                            .read_to_vec()
                            .map_err(|e| transient(format!("reading the answer: {e}")));
                        match body {
                            Ok(b) => return Ok((b, link.as_deref().and_then(next_link))),
                            Err(e) => e,
                        }
                    }
                    401 | 403 | 404 => {
                        return Err(refused(
                            RepoKind::Dataset,
                            &req.repo,
                            &req.revision,
                            status,
                            &code,
                        ))
                    }
                    s if s >= 500 || s == 429 || s == 408 => FetchError::Status {
                        url: url.to_owned(),
                        status: s,
                    },
                    s => {
                        return Err(FetchError::Status {
                            url: url.to_owned(),
                            status: s,
                        })
                    }
                }
            }
        };
        failures += 1;
        // A warm cache answers at once when the Hub is unreachable; otherwise keep trying.
        if warm || failures > dl.config().retries {
            return Err(err);
        }
        std::thread::sleep(dl.backoff(failures).min(Duration::from_secs(30)));
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288, as GitHub and the Hub send it).
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

/// The record `prep download --source <name> --from hub` leaves in `<dest>/<name>/`: which
/// snapshot of which Hub mirror holds the source, so `prep ingest --source <name>` finds it.
pub const HUB_RECORD: &str = ".prep-hub.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSourceRecord {
    pub source: String,
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// Paths in the repository, in order.
    pub files: Vec<String>,
}

/// Records that `snap` holds `source` (written atomically, after every file is in the cache).
pub fn record_hub_source(source: &str, dest: &Path, snap: &DatasetSnapshot) -> Result<PathBuf> {
    let dir = crate::cache::source_dir(source, dest);
    fs::create_dir_all(&dir).map_err(|e| FetchError::io(&dir, e))?;
    let record = HubSourceRecord {
        source: source.to_owned(),
        repo: snap.repo.clone(),
        revision: snap.revision.clone(),
        commit: snap.commit.clone(),
        files: snap.files.iter().map(|f| f.path.clone()).collect(),
    };
    let path = dir.join(HUB_RECORD);
    schemas::AtomicFile::write_json(&path, &record).map_err(|e| FetchError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}

/// The files a `--from hub` download of `source` left in the HF cache, with its record; `None`
/// when there is no such download; an error naming the command when a file went missing since.
pub fn cached_hub_source(
    source: &str,
    dest: &Path,
    cfg: &HubConfig,
) -> Result<Option<(HubSourceRecord, Vec<PathBuf>)>> {
    let dir = crate::cache::source_dir(source, dest);
    let Ok(bytes) = fs::read(dir.join(HUB_RECORD)) else {
        return Ok(None);
    };
    let record: HubSourceRecord =
        serde_json::from_slice(&bytes).map_err(|e| FetchError::Corrupt {
            path: dir.join(HUB_RECORD),
            message: e.to_string(),
        })?;
    let snap = cfg
        .repo_dir_of(RepoKind::Dataset, &record.repo)
        .join("snapshots")
        .join(&record.commit);
    let mut files = Vec::with_capacity(record.files.len());
    for f in &record.files {
        check_repo_path(&record.repo, f)?;
        let path = snap.join(f);
        if !path.is_file() {
            return Err(FetchError::NotCached {
                what: format!(
                    "`{f}` of `{}` (source `{source}`, missing since download)",
                    record.repo
                ),
                dir: snap.clone(),
                command: format!(
                    "prep download --source {source} --from hub --dest {}",
                    dest.display()
                ),
            });
        }
        files.push(path);
    }
    Ok(Some((record, files)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_fnmatchcase() {
        let f = Filter::new(&["*.jsonl.gz".into(), "data/".into()], &["*dev*".into()]).unwrap();
        assert!(f.matches("PAQ_pairs.jsonl.gz"));
        // `*` crosses `/`, as in fnmatch.
        assert!(f.matches("stackexchange_title_body/math.jsonl.gz"));
        assert!(f.matches("data/train-00000-of-00001.parquet"));
        assert!(!f.matches("data-dev/x.parquet"));
        assert!(!f.matches("data/dev.parquet"));
        assert!(!f.matches("README.md"));
        assert!(!f.matches("X.JSONL.GZ"), "case-sensitive");
        let all = Filter::new(&[], &[".*".into()]).unwrap();
        assert!(all.matches("README.md"));
        assert!(!all.matches(".gitattributes"));
    }

    #[test]
    fn link_headers() {
        let h =
            r#"<https://hf.co/api/datasets/a/b/tree/x?recursive=true&cursor=ZXk%3D>; rel="next""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://hf.co/api/datasets/a/b/tree/x?recursive=true&cursor=ZXk%3D")
        );
        assert_eq!(
            next_link(r#"<http://x/1>; rel="prev", <http://x/3>; rel="next""#).as_deref(),
            Some("http://x/3")
        );
        assert_eq!(next_link(r#"<http://x/1>; rel="prev""#), None);
    }

    #[test]
    fn hf_urls() {
        assert!(parse_hf_url("/data/x.parquet").unwrap().is_none());
        let r = parse_hf_url("hf://datasets/sentence-transformers/gooaq/pair/*.parquet")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("sentence-transformers/gooaq", "main")
        );
        assert_eq!(r.include, ["pair/*.parquet"]);
        let r = parse_hf_url("hf://datasets/org/ds@refs%2Fconvert%2Fparquet/default")
            .unwrap()
            .unwrap();
        assert_eq!(r.revision, "refs/convert/parquet");
        assert_eq!(r.include, ["default", "default/"]);
        assert!(parse_hf_url("hf://datasets/org/ds")
            .unwrap()
            .unwrap()
            .include
            .is_empty());
        assert!(parse_hf_url("hf://org/model/config.json").is_err());
        assert!(parse_hf_url("hf://datasets/org/ds/../x").is_err());
    }

    #[test]
    fn dataset_ids() {
        let r = DatasetRequest::parse("sentence-transformers/gooaq@refs/convert/parquet").unwrap();
        assert_eq!(r.repo, "sentence-transformers/gooaq");
        assert_eq!(r.revision, "refs/convert/parquet");
        assert_eq!(DatasetRequest::parse("org/name").unwrap().id(), "org/name");
        assert!(DatasetRequest::parse("squad").is_err());
        assert!(DatasetRequest::parse("a/b/c").is_err());
        assert!(check_repo_path("a/b", "x/../../y").is_err());
        assert!(check_repo_path("a/b", "x/y.parquet").is_ok());
    }
}
