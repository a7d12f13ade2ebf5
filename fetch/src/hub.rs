//! Model resolution: a `--model` argument is a local folder, or a Hugging Face Hub id
//! (`org/name`, optionally `@revision`) fetched into the standard HF cache layout
//!
//! ```text
//! $HF_HOME/hub/models--org--name/
//!   blobs/<etag>                      file contents, named by the Hub's etag (sha256 for LFS files)
//!   refs/<revision>                   the commit a branch or tag pointed to
//!   snapshots/<commit>/<file>         relative symlinks into blobs/
//!   .no_exist/<commit>/<file>         optional files the repository does not have
//! ```
//!
//! the same layout `huggingface_hub` writes, so either tool reuses the other's downloads. With
//! `HF_HUB_OFFLINE=1`, or when the network is unreachable, a warm cache resolves with no request.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::download::{DownloadConfig, Downloader, FileSpec};
use crate::error::{FetchError, Result};
use crate::progress::{MultiProgress, NoMultiProgress};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The files of a sentence-transformers model folder, fetched when the repository has them.
/// Only `config.json` and the weights are required; the rest may be absent (404).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
];

/// Weights tried, in order, when the repository has no `model.safetensors` (older repositories
/// such as `nreimers/MiniLM-L6-H384-uncased` ship only PyTorch weights).
pub const FALLBACK_WEIGHTS: &[&str] = &["pytorch_model.bin"];

/// Where and how to reach the Hub. Built from the environment by [`HubConfig::from_env`]; tests
/// build it directly so parallel tests never share environment variables.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The `hub` cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Bearer token for gated or private repositories (`HF_TOKEN`).
    pub token: Option<String>,
    pub download: DownloadConfig,
}

impl HubConfig {
    /// Reads `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`HubConfig::from_env`] with the variables passed in, following `huggingface_hub`'s rules.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN"));
        HubConfig {
            endpoint,
            cache_dir,
            offline,
            token,
            download: DownloadConfig::default(),
        }
    }

    /// The cache folder of one model repository.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.repo_dir_of(RepoKind::Model, repo)
    }

    /// The cache folder of one repository of either kind (`models--org--name`, `datasets--org--name`).
    pub fn repo_dir_of(&self, kind: RepoKind, repo: &str) -> PathBuf {
        self.cache_dir.join(format!(
            "{}--{}",
            kind.cache_prefix(),
            repo.replace('/', "--")
        ))
    }
}

/// The kind of a Hub repository: it decides the cache folder's prefix and the URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` / `datasets`, as `huggingface_hub` names the cache folders.
    pub fn cache_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// The path between the endpoint and the repository id in `resolve` URLs (models have none).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }

    /// `--model` / `--dataset`: the `prep download` flag that fetches this kind.
    pub fn flag(self) -> &'static str {
        match self {
            RepoKind::Model => "--model",
            RepoKind::Dataset => "--dataset",
        }
    }

    /// An error about one repository of this kind (`model `x`: ...`, `dataset `x`: ...`).
    pub(crate) fn error(self, repo: &str, message: String) -> FetchError {
        match self {
            RepoKind::Model => FetchError::Model {
                model: repo.to_owned(),
                message,
            },
            RepoKind::Dataset => FetchError::Dataset {
                dataset: repo.to_owned(),
                message,
            },
        }
    }
}

/// The Hub's refusal (401/403/404) in words, from its `X-Error-Code` as `huggingface_hub` reads
/// it: a 401 also stands for a private or gated repository seen without a token.
pub(crate) fn refused(
    kind: RepoKind,
    repo: &str,
    revision: &str,
    status: u16,
    error_code: &str,
) -> FetchError {
    let message = match error_code {
        "RepoNotFound" | "RepositoryNotFound" => {
            "repository not found (or private/gated: set HF_TOKEN)".to_owned()
        }
        "RevisionNotFound" => format!("revision `{revision}` not found"),
        "GatedRepo" => format!(
            "gated repository (HTTP {status}): accept its terms on the Hub and set HF_TOKEN"
        ),
        "EntryNotFound" => format!("no such file at revision `{revision}`"),
        _ => {
            format!("access denied (HTTP {status}); set HF_TOKEN for private or gated repositories")
        }
    };
    kind.error(repo, message)
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// What a `--model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Local(PathBuf),
    Hub { repo: String, revision: String },
}

/// An existing folder is local; otherwise `name`, `org/name` or `org/name@revision` is a Hub id.
pub fn parse_spec(spec: &str) -> Result<ModelSpec> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(ModelSpec::Local(path.to_path_buf()));
    }
    let bad = |message: &str| FetchError::Model {
        model: spec.to_owned(),
        message: message.to_owned(),
    };
    if path.exists() {
        return Err(bad("is a file, not a model folder"));
    }
    let (repo, revision) = parse_hub_id(spec).map_err(|m| bad(&m))?;
    Ok(ModelSpec::Hub { repo, revision })
}

/// `org/name[@revision]` (revision `main` when absent) as (repository, revision), or why not.
pub fn parse_hub_id(spec: &str) -> std::result::Result<(String, String), String> {
    let (repo, revision) = match spec.split_once('@') {
        Some((r, rev)) if !rev.is_empty() => (r, rev),
        Some(_) => return Err("empty revision after `@`".to_owned()),
        None => (spec, "main"),
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.contains("--")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(
            "no such folder, and not a Hub id (`org/name` or `org/name@revision`)".to_owned(),
        );
    }
    if revision.split('/').any(|s| s.is_empty() || s == "..") {
        return Err("malformed revision".to_owned());
    }
    Ok((repo.to_owned(), revision.to_owned()))
}

/// Resolves with the environment's settings and no progress display.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    resolve_model_with(spec, &HubConfig::from_env(), &NoMultiProgress)
}

/// A local folder as it is; a Hub id as its snapshot folder in the cache, fetched when needed.
pub fn resolve_model_with(
    spec: &str,
    cfg: &HubConfig,
    progress: &dyn MultiProgress,
) -> Result<PathBuf> {
    let (repo, revision) = match parse_spec(spec)? {
        ModelSpec::Local(p) => return Ok(p),
        ModelSpec::Hub { repo, revision } => (repo, revision),
    };
    let repo_dir = cfg.repo_dir(&repo);
    let cached = || cached_snapshot(&repo_dir, &revision);
    let not_cached = |why: &str| FetchError::NotCached {
        what: format!("model `{repo}` (revision {revision}; {why})"),
        dir: repo_dir.clone(),
        command: format!("prep download --model {spec}"),
    };
    if cfg.offline {
        return cached().ok_or_else(|| not_cached("HF_HUB_OFFLINE is set"));
    }
    let warm = cached();
    match fetch_online(&repo, &revision, &repo_dir, cfg, warm.is_some(), progress) {
        Ok(p) => Ok(p),
        // Unreachable network, warm cache: the cached snapshot is the answer (as huggingface_hub does).
        Err(e) if e.is_transient() && warm.is_some() => Ok(warm.unwrap()),
        Err(e) => Err(e),
    }
}

/// The snapshot folder for `revision` when the cache holds a usable model there.
pub fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let by_commit = repo_dir.join("snapshots").join(revision);
    let commit = if is_commit(revision) && by_commit.is_dir() {
        revision.to_owned()
    } else {
        fs::read_to_string(repo_dir.join("refs").join(revision))
            .ok()?
            .trim()
            .to_owned()
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit == ".." {
        return None;
    }
    let snap = repo_dir.join("snapshots").join(&commit);
    // `exists` follows the symlinks, so a dangling link into a deleted blob does not count.
    let has_weights = std::iter::once("model.safetensors")
        .chain(FALLBACK_WEIGHTS.iter().copied())
        .any(|w| snap.join(w).exists());
    (snap.join("config.json").exists() && has_weights).then_some(snap)
}

pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a HEAD on `resolve/<rev>/<file>` tells.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub file: String,
    pub etag: String,
    pub commit: Option<String>,
    pub size: Option<u64>,
    pub url: String,
}

fn fetch_online(
    repo: &str,
    revision: &str,
    repo_dir: &Path,
    cfg: &HubConfig,
    warm: bool,
    progress: &dyn MultiProgress,
) -> Result<PathBuf> {
    let dl = Downloader::new(cfg.download.clone());
    let mut found: Vec<Meta> = Vec::new();
    let mut absent: Vec<&str> = Vec::new();
    for &file in MODEL_FILES {
        match head(&dl, cfg, RepoKind::Model, repo, revision, file, warm)? {
            Some(m) => found.push(m),
            None => absent.push(file),
        }
    }
    let model = |message: String| FetchError::Model {
        model: repo.to_owned(),
        message,
    };
    if !found.iter().any(|m| m.file == "config.json") {
        return Err(model(format!(
            "revision {revision} has no config.json (is it a model repository?)"
        )));
    }
    if !found.iter().any(|m| m.file == "model.safetensors") {
        let mut got = false;
        for &w in FALLBACK_WEIGHTS {
            if let Some(m) = head(&dl, cfg, RepoKind::Model, repo, revision, w, warm)? {
                found.push(m);
                got = true;
                break;
            }
        }
        if !got {
            return Err(model(format!(
                "revision {revision} has neither model.safetensors nor {}",
                FALLBACK_WEIGHTS.join(", ")
            )));
        }
    }
    let commit = found
        .iter()
        .find_map(|m| m.commit.clone())
        .unwrap_or_else(|| revision.to_owned());
    let blobs = repo_dir.join("blobs");
    let specs: Vec<FileSpec> = found
        .iter()
        .map(|m| FileSpec {
            url: m.url.clone(),
            dest: blobs.join(&m.etag),
            size: m.size,
            sha256: (m.etag.len() == 64 && m.etag.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| m.etag.to_ascii_lowercase()),
            headers: auth_headers(cfg, &m.url),
            label: Some(m.file.clone()),
        })
        .collect();
    dl.fetch_all(&specs, progress)?;

    let snap = repo_dir.join("snapshots").join(&commit);
    for m in &found {
        link_blob(&snap, &m.file, &m.etag)?;
    }
    let no_exist = repo_dir.join(".no_exist").join(&commit);
    for file in absent {
        let marker = no_exist.join(file);
        if let Some(parent) = marker.parent() {
            fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
        }
        fs::write(&marker, b"").map_err(|e| FetchError::io(&marker, e))?;
    }
    if revision != commit {
        let r = repo_dir.join("refs").join(revision);
        schemas::AtomicFile::write_all(&r, commit.as_bytes()).map_err(|e| FetchError::Corrupt {
            path: r.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(snap)
}

pub(crate) fn auth_headers(cfg: &HubConfig, url: &str) -> Vec<(String, String)> {
    // The token goes to the Hub only, never to the storage host a file redirects to.
    match &cfg.token {
        Some(t) if url.starts_with(&cfg.endpoint) => {
            vec![("Authorization".into(), format!("Bearer {t}"))]
        }
        _ => Vec::new(),
    }
}

pub(crate) fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path in a repository, each segment percent-encoded and the `/` kept (as `quote` does in
/// `huggingface_hub.hf_hub_url`).
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// `https://h/a/b` + `/c` → `https://h/c`; absolute locations as they are; otherwise relative to `base`.
fn join_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..host_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= host_end)
            .unwrap_or(base.len());
        format!("{}/{location}", &base[..dir_end])
    }
}

fn clean_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Metadata of one file, `None` when the repository does not have it.
pub(crate) fn head(
    dl: &Downloader,
    cfg: &HubConfig,
    kind: RepoKind,
    repo: &str,
    revision: &str,
    file: &str,
    warm: bool,
) -> Result<Option<Meta>> {
    let mut url = format!(
        "{}/{}{repo}/resolve/{}/{}",
        cfg.endpoint,
        kind.url_prefix(),
        encode_segment(revision),
        encode_path(file)
    );
    let mut failures = 0u32;
    let mut hops = 0;
    loop {
        let mut req = dl.agent_no_redirect().head(&url);
        for (k, v) in auth_headers(cfg, &url) {
            req = req.header(k, v);
        }
        let transient = |message: String| FetchError::Network {
            url: url.clone(),
            attempts: failures + 1,
            message,
        };
        let err: FetchError = match req.call() {
            Err(e) => transient(e.to_string()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let h = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let commit = h("x-repo-commit");
                let error_code = h("x-error-code").unwrap_or_default();
                match status {
                    200..=299 => {
                        let etag = h("x-linked-etag")
                            .or_else(|| h("etag"))
                            .map(|e| clean_etag(&e));
                        let Some(etag) = etag.filter(|e| safe_blob_name(e)) else {
                            return Err(
                                kind.error(repo, format!("{url}: the server sent no usable ETag"))
                            );
                        };
                        let size = h("x-linked-size")
                            .or_else(|| h("content-length"))
                            .and_then(|s| s.trim().parse().ok());
                        return Ok(Some(Meta {
                            file: file.to_owned(),
                            etag,
                            commit,
                            size,
                            url,
                        }));
                    }
                    301..=308 => {
                        let location = h("location").unwrap_or_default();
                        if let Some(etag) = h("x-linked-etag").map(|e| clean_etag(&e)) {
                            // An LFS file: metadata here, contents at the storage location.
                            if !safe_blob_name(&etag) {
                                return Err(
                                    kind.error(repo, format!("{url}: unusable ETag {etag:?}"))
                                );
                            }
                            return Ok(Some(Meta {
                                file: file.to_owned(),
                                etag,
                                commit,
                                size: h("x-linked-size").and_then(|s| s.trim().parse().ok()),
                                url: join_location(&url, &location),
                            }));
                        }
                        // A renamed repository: follow to its new name.
                        hops += 1;
                        if location.is_empty() || hops > 5 {
                            return Err(FetchError::Status { url, status });
                        }
                        url = join_location(&url, &location);
                        continue;
                    }
                    404 if error_code == "EntryNotFound" || error_code.is_empty() => {
                        return Ok(None)
                    }
                    401 | 403 | 404 => {
                        return Err(refused(kind, repo, revision, status, &error_code))
                    }
                    s if s >= 500 || s == 429 || s == 408 => FetchError::Status {
                        url: url.clone(),
                        status: s,
                    },
                    s => return Err(FetchError::Status { url, status: s }),
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

pub(crate) fn safe_blob_name(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (one more `..` per folder in `file`).
pub(crate) fn link_blob(snap: &Path, file: &str, etag: &str) -> Result<()> {
    let link = snap.join(file);
    let parent = link.parent().expect("snapshot files have a parent");
    fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    let depth = file.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    let tmp = parent.join(format!(
        ".{}.link-{}",
        link.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| FetchError::io(&tmp, e))?;
    #[cfg(not(unix))]
    fs::copy(parent.join(&target), &tmp).map_err(|e| FetchError::io(&tmp, e))?;
    // Rename over any previous link, so the snapshot never shows a missing file.
    fs::rename(&tmp, &link).map_err(|e| FetchError::io(&link, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_rules() {
        let c = cfg(&[("HOME", "/home/u")]);
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline);
        assert_eq!(c.token, None);

        let c = cfg(&[
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_TOKEN", "hf_x"),
        ]);
        assert_eq!(c.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert!(c.offline);
        assert_eq!(c.token.as_deref(), Some("hf_x"));

        let c = cfg(&[("HF_HOME", "/hf"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(c.cache_dir, PathBuf::from("/hf/hub"));
        let c = cfg(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/elsewhere")]);
        assert_eq!(c.cache_dir, PathBuf::from("/elsewhere"));
        for (v, want) in [
            ("0", false),
            ("", false),
            ("false", false),
            ("TRUE", true),
            ("yes", true),
            ("ON", true),
        ] {
            assert_eq!(cfg(&[("HF_HUB_OFFLINE", v)]).offline, want, "{v:?}");
        }
        assert_eq!(
            cfg(&[("HF_HOME", "/hf")]).repo_dir("nreimers/MiniLM-L6-H384-uncased"),
            PathBuf::from("/hf/hub/models--nreimers--MiniLM-L6-H384-uncased")
        );
        assert_eq!(
            cfg(&[("HF_HOME", "/hf")]).repo_dir_of(
                RepoKind::Dataset,
                "sentence-transformers/embedding-training-data"
            ),
            PathBuf::from("/hf/hub/datasets--sentence-transformers--embedding-training-data")
        );
    }

    #[test]
    fn specs() {
        let hub = |r: &str, rev: &str| ModelSpec::Hub {
            repo: r.into(),
            revision: rev.into(),
        };
        assert_eq!(
            parse_spec("sentence-transformers/multi-qa-MiniLM-L6-cos-v1").unwrap(),
            hub("sentence-transformers/multi-qa-MiniLM-L6-cos-v1", "main")
        );
        assert_eq!(
            parse_spec("bert-base-uncased").unwrap(),
            hub("bert-base-uncased", "main")
        );
        assert_eq!(parse_spec("a/b@v1.0").unwrap(), hub("a/b", "v1.0"));
        assert_eq!(
            parse_spec("a/b@refs/pr/3").unwrap(),
            hub("a/b", "refs/pr/3")
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            parse_spec(d).unwrap(),
            ModelSpec::Local(dir.path().to_path_buf())
        );
        for bad in [
            "./no/such/folder",
            "a/b/c",
            "a/b@",
            "../x",
            "a b/c",
            "a/b@x/../y",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn locations_and_etags() {
        assert_eq!(join_location("http://h:1/a/b/c", "/x/y"), "http://h:1/x/y");
        assert_eq!(
            join_location("http://h:1/a/b/c", "https://cdn/z"),
            "https://cdn/z"
        );
        assert_eq!(join_location("http://h:1/a/b/c", "d"), "http://h:1/a/b/d");
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(encode_segment("refs/pr/3"), "refs%2Fpr%2F3");
        assert!(!safe_blob_name("../x"));
    }
}
