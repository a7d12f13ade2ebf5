//! The download engine: one file at a time with Range resume, retries and verification, and a
//! bounded pool of workers for many files.
//!
//! A file is written to `<name>.part` beside its destination and renamed onto the destination only
//! once its size (always) and sha256 (when known) check out, so a finished-looking name is always a
//! verified file and an interrupted run leaves only a `.part` to resume from.
//!
//! A `.part` is resumed only when the version it holds is known: the server's ETag (or
//! Last-Modified) is recorded beside it ([`validator_path`]) before its first byte is written, and
//! the resume sends it as `If-Range`, so a server whose file changed answers with the whole new
//! file (200), which replaces the part from byte 0. A part without a recorded version restarts.
//! Two versions of a file are never joined. A lock per destination ([`schemas::OutputLock`]) keeps
//! two runs from writing the same `.part`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use schemas::{OutputLock, Progress, Unit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{status_text, FetchError, Result};
use crate::progress::MultiProgress;

/// How downloads behave. [`DownloadConfig::default`] suits real use; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Consecutive failed attempts tolerated per file (an attempt that received bytes resets the
    /// count, so a flaky multi-gigabyte transfer keeps going as long as it makes progress).
    pub retries: u32,
    /// The first wait before a retry; doubled after each failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// A stalled connection (no byte for this long) counts as a failed attempt.
    pub read_timeout: Duration,
    /// Files downloaded at once (connections held open).
    pub jobs: usize,
    pub user_agent: String,
    /// Whether to honour HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY.
    pub proxy_from_env: bool,
    /// Most bytes one archive may unpack to; `None`: [`crate::unpack::default_cap`] of the
    /// archive's verified size.
    pub max_unpacked: Option<u64>,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            retries: 6,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            jobs: 4,
            user_agent: format!("prep/{}", env!("CARGO_PKG_VERSION")),
            proxy_from_env: true,
            max_unpacked: None,
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub url: String,
    /// Where the finished file goes.
    pub dest: PathBuf,
    /// Expected size in bytes, when the publisher states it; otherwise the server's is checked.
    pub size: Option<u64>,
    /// Expected lowercase hex sha256, when known.
    pub sha256: Option<String>,
    /// Extra request headers (e.g. `Authorization` for the Hub).
    pub headers: Vec<(String, String)>,
    /// The name its progress bar shows; `None`: the destination's file name (a Hub blob's name
    /// is a hash, so Hub downloads show the file's path in the repository instead).
    pub label: Option<String>,
}

impl FileSpec {
    pub fn new(url: impl Into<String>, dest: impl Into<PathBuf>) -> Self {
        FileSpec {
            url: url.into(),
            dest: dest.into(),
            size: None,
            sha256: None,
            headers: Vec::new(),
            label: None,
        }
    }

    fn label(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        self.dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.url.clone())
    }
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    /// The sha256 computed while downloading; `None` when the file was already there and was
    /// only checked by size (it was verified when it was first renamed into place).
    pub sha256: Option<String>,
    /// Whether bytes were transferred in this run.
    pub fetched: bool,
}

/// The partial file a download writes before it is verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Whether a path is a partial download (or its recorded version), never to be taken as a
/// finished file.
pub fn is_part(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "part")
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".part.json"))
}

/// Where the version of a `.part` is recorded: `<name>.part.json` beside it.
pub fn validator_path(dest: &Path) -> PathBuf {
    let mut name = part_path(dest)
        .file_name()
        .unwrap_or_default()
        .to_os_string();
    name.push(".json");
    dest.with_file_name(name)
}

/// The version of the file a `.part` holds, as the server named it when the part was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Validator {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

impl Validator {
    /// From a response's headers; `None` when it names no usable version. A weak ETag (`W/`)
    /// may not be sent in `If-Range` (RFC 9110 §13.1.5), so only a strong one counts.
    fn from_headers(
        url: &str,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> Option<Self> {
        let etag = etag.filter(|e| !e.starts_with("W/") && !e.is_empty());
        let last_modified = last_modified.filter(|v| !v.is_empty());
        (etag.is_some() || last_modified.is_some()).then(|| Validator {
            url: url.to_owned(),
            etag,
            last_modified,
        })
    }

    fn if_range(&self) -> &str {
        self.etag
            .as_deref()
            .or(self.last_modified.as_deref())
            .expect("a validator has an ETag or a Last-Modified")
    }

    /// Whether a response naming `served` can be the same version (a server that ignored
    /// `If-Range` but honoured `Range` is caught here).
    fn same_version(&self, served: Option<&Validator>) -> bool {
        let Some(s) = served else { return true };
        match (&self.etag, &s.etag, &self.last_modified, &s.last_modified) {
            (Some(a), Some(b), _, _) => a == b,
            (_, _, Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    fn read(dest: &Path, url: &str) -> Option<Self> {
        let bytes = fs::read(validator_path(dest)).ok()?;
        serde_json::from_slice::<Validator>(&bytes)
            .ok()
            .filter(|v| v.url == url && (v.etag.is_some() || v.last_modified.is_some()))
    }

    /// Written under a temporary name the destination's lock cleans up, then renamed.
    fn write(&self, dest: &Path) -> Result<()> {
        let path = validator_path(dest);
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let temp = dest.with_file_name(format!(".{name}.tmp-validator-{}", std::process::id()));
        let bytes = serde_json::to_vec(self).expect("plain strings serialise");
        let mut f = File::create(&temp).map_err(|e| FetchError::io(&temp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| FetchError::io(&temp, e))?;
        fs::rename(&temp, &path).map_err(|e| FetchError::io(&path, e))
    }
}

/// Redirects followed per request before giving up.
pub const MAX_REDIRECTS: u32 = 10;

/// Downloads files over one connection pool.
#[derive(Debug, Clone)]
pub struct Downloader {
    agent: ureq::Agent,
    /// Same pool settings, but redirects are returned instead of followed (the Hub's metadata
    /// lives in the redirect response itself).
    no_redirect: ureq::Agent,
    cfg: DownloadConfig,
}

enum Attempt {
    /// The part file holds the whole body.
    Complete { announced: Option<u64> },
    /// Worth another try; `progressed` when bytes arrived before the failure.
    Retry { message: String, progressed: bool },
}

/// Carries the hash of the part file's bytes across attempts, so a resume hashes only new bytes.
struct HashState {
    hasher: Sha256,
    hashed: u64,
}

impl Downloader {
    pub fn new(cfg: DownloadConfig) -> Self {
        let build = |redirects: u32| -> ureq::Agent {
            let mut b = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .max_redirects_will_error(false)
                .timeout_connect(Some(cfg.connect_timeout))
                .timeout_per_read(Some(cfg.read_timeout))
                .user_agent(cfg.user_agent.as_str());
            if !cfg.proxy_from_env {
                b = b.proxy(None);
            }
            b.build().into()
        };
        Downloader {
            agent: build(MAX_REDIRECTS),
            no_redirect: build(0),
            cfg,
        }
    }

    pub fn config(&self) -> &DownloadConfig {
        &self.cfg
    }

    /// The agent that follows redirects (and never forwards `Authorization` across them).
    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The agent that returns 3xx responses as they are.
    pub(crate) fn agent_no_redirect(&self) -> &ureq::Agent {
        &self.no_redirect
    }

    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.cfg
            .backoff
            .saturating_mul(factor)
            .min(self.cfg.max_backoff)
    }

    /// Fetches one file: skips it when already finished, resumes a `.part` of the same version,
    /// retries transient failures, verifies and renames into place. Holds the destination's
    /// lock throughout: a second run fetching the same file fails at once ([`FetchError::InUse`]).
    pub fn fetch(
        &self,
        spec: &FileSpec,
        bar: &dyn Progress,
        total: &dyn Progress,
    ) -> Result<Downloaded> {
        let _lock = OutputLock::acquire(&spec.dest).map_err(FetchError::InUse)?;
        if let Ok(meta) = fs::metadata(&spec.dest) {
            let size = meta.len();
            if let Some(expected) = spec.size.filter(|&e| e != size) {
                return Err(FetchError::Corrupt {
                    path: spec.dest.clone(),
                    message: format!(
                        "already present with {size} bytes, not the expected {expected}; delete it to download again"
                    ),
                });
            }
            bar.begin(&spec.label(), Some(size), Unit::Bytes);
            bar.advance(size);
            total.advance(size);
            return Ok(Downloaded {
                path: spec.dest.clone(),
                size,
                sha256: None,
                fetched: false,
            });
        }
        if let Some(parent) = spec.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
        }
        let part = part_path(&spec.dest);
        let mut state = HashState {
            hasher: Sha256::new(),
            hashed: 0,
        };
        // Bytes already added to the total bar, so restarts never count a byte twice there.
        let mut counted = 0u64;
        let mut failures = 0u32;
        let announced = loop {
            match self.attempt(spec, &part, &mut state, bar, total, &mut counted)? {
                Attempt::Complete { announced } => break announced,
                Attempt::Retry {
                    message,
                    progressed,
                } => {
                    if progressed {
                        failures = 0;
                    }
                    failures += 1;
                    if failures > self.cfg.retries {
                        return Err(FetchError::Network {
                            url: spec.url.clone(),
                            attempts: failures,
                            message,
                        });
                    }
                    let wait = self.backoff(failures);
                    bar.message(&format!(
                        "retry {failures}/{} in {:.1}s: {message}",
                        self.cfg.retries,
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                }
            }
        };
        let size = fs::metadata(&part)
            .map_err(|e| FetchError::io(&part, e))?
            .len();
        if let Some(expected) = spec.size.or(announced).filter(|&e| e != size) {
            discard(&spec.dest);
            return Err(FetchError::SizeMismatch {
                url: spec.url.clone(),
                path: part,
                expected,
                actual: size,
                what: "received",
            });
        }
        if state.hashed != size {
            // The part was completed without streaming through us (416 on a full part).
            rehash(&part, &mut state)?;
        }
        let digest = hex::encode(state.hasher.finalize());
        if let Some(expected) = &spec.sha256 {
            if !expected.eq_ignore_ascii_case(&digest) {
                discard(&spec.dest);
                return Err(FetchError::ChecksumMismatch {
                    url: spec.url.clone(),
                    path: spec.dest.clone(),
                    expected: expected.to_ascii_lowercase(),
                    actual: digest,
                });
            }
        }
        fs::rename(&part, &spec.dest).map_err(|e| FetchError::io(&spec.dest, e))?;
        remove(&validator_path(&spec.dest));
        bar.message("done");
        Ok(Downloaded {
            path: spec.dest.clone(),
            size,
            sha256: Some(digest),
            fetched: true,
        })
    }

    /// One request for the rest of the file: resumes the part when its version is known, reads
    /// what the server answers into it, and says whether the file is complete or worth another try.
    fn attempt(
        &self,
        spec: &FileSpec,
        part: &Path,
        state: &mut HashState,
        bar: &dyn Progress,
        total: &dyn Progress,
        counted: &mut u64,
    ) -> Result<Attempt> {
        let (have, recorded) = resumable_part(spec, part, bar)?;
        let resp = match self.request(spec, have, recorded.as_ref()) {
            Ok(r) => r,
            Err(e) => return transport_error(&spec.url, e),
        };
        let answer = Answer::of(&resp, &spec.url);
        let (start, announced) = match answer.body_start(spec, part, have, recorded.as_ref())? {
            Start::Body { start, announced } => (start, announced),
            Start::Done(outcome) => return Ok(outcome),
        };
        check_announced_size(spec, announced)?;
        let mut file = open_part(spec, part, start, have, answer.served.as_ref(), bar)?;
        resume_hash(part, state, start)?;
        bar.begin(&spec.label(), spec.size.or(announced), Unit::Bytes);
        bar.advance(start);
        // Progress is a byte beyond any reached before, so restarts from 0 cannot loop forever.
        let best = (*counted).max(start);
        let mut sink = PartSink {
            file: &mut file,
            part,
            state,
            bar,
            total,
            counted,
            pos: start,
        };
        let end = sink.copy_body(resp, self.cfg.read_timeout)?;
        let pos = sink.pos;
        file.sync_all().map_err(|e| FetchError::io(part, e))?;
        let progressed = pos > best;
        if let Some(message) = end {
            return Ok(Attempt::Retry {
                message,
                progressed,
            });
        }
        if let Some(t) = announced.filter(|&t| pos < t) {
            return Ok(Attempt::Retry {
                message: format!("connection closed after {pos} of {t} bytes"),
                progressed,
            });
        }
        Ok(Attempt::Complete { announced })
    }

    /// The GET, with `Range` + `If-Range` when the part's version is recorded.
    fn request(
        &self,
        spec: &FileSpec,
        have: u64,
        recorded: Option<&Validator>,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = self.agent.get(&spec.url);
        for (k, v) in &spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(v) = recorded {
            req = req
                .header("Range", format!("bytes={have}-"))
                .header("If-Range", v.if_range());
        }
        req.call()
    }

    /// Fetches many files with at most `config().jobs` at once. Every file is tried even when
    /// another fails; the result keeps the input order.
    pub fn fetch_all(
        &self,
        specs: &[FileSpec],
        progress: &dyn MultiProgress,
    ) -> Result<Vec<Downloaded>> {
        let known: Option<u64> = specs.iter().map(|s| s.size).sum();
        progress
            .total()
            .begin(&format!("{} files", specs.len()), known, Unit::Bytes);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Downloaded>>>> =
            Mutex::new((0..specs.len()).map(|_| None).collect());
        let workers = self.cfg.jobs.clamp(1, specs.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(i) else { break };
                    let bar = progress.file(&spec.label());
                    let r = self.fetch(spec, bar.as_ref(), progress.total());
                    if let Err(e) = &r {
                        bar.message(&format!("failed: {e}"));
                    }
                    bar.finish();
                    results.lock().unwrap()[i] = Some(r);
                });
            }
        });
        progress.total().finish();
        let mut ok = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for r in results.into_inner().unwrap() {
            match r.expect("every index is taken by a worker") {
                Ok(d) => ok.push(d),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(ok),
            1 => Err(errors.pop().unwrap()),
            failed => {
                let first = Box::new(errors.remove(0));
                Err(FetchError::Several {
                    failed,
                    total: specs.len(),
                    first,
                    all: errors,
                })
            }
        }
    }
}

/// The bytes of `part` worth resuming (0 when none) and the version they are of. A part longer
/// than the whole file, or of no recorded version, is dropped: appending to it could join two
/// versions of the file.
fn resumable_part(
    spec: &FileSpec,
    part: &Path,
    bar: &dyn Progress,
) -> Result<(u64, Option<Validator>)> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have == 0 {
        return Ok((0, None));
    }
    if spec.size.is_some_and(|s| have > s) {
        truncate(part)?;
        return Ok((0, None));
    }
    match Validator::read(&spec.dest, &spec.url) {
        Some(v) => Ok((have, Some(v))),
        None => {
            bar.message("partial file of unknown version; starting over");
            truncate(part)?;
            Ok((0, None))
        }
    }
}

/// What a response's status and headers say about its body.
struct Answer {
    url: String,
    status: u16,
    content_length: Option<u64>,
    content_range: Option<(u64, Option<u64>)>,
    location: bool,
    /// The version the server names for what it sends.
    served: Option<Validator>,
}

/// Where the body goes in the part, or the attempt's outcome when there is no body to take.
enum Start {
    Body { start: u64, announced: Option<u64> },
    Done(Attempt),
}

impl Answer {
    fn of(resp: &ureq::http::Response<ureq::Body>, url: &str) -> Self {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            url: url.to_owned(),
            status: resp.status().as_u16(),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            content_range: header("content-range")
                .as_deref()
                .and_then(parse_content_range),
            location: header("location").is_some(),
            served: Validator::from_headers(url, header("etag"), header("last-modified")),
        }
    }

    /// 200 starts at 0; 206 continues the part when it is the range asked for, of the same
    /// version; 416 on a whole part completes it; anything else is an error or a retry.
    fn body_start(
        &self,
        spec: &FileSpec,
        part: &Path,
        have: u64,
        recorded: Option<&Validator>,
    ) -> Result<Start> {
        let same = recorded.is_none_or(|r| r.same_version(self.served.as_ref()));
        let restart = |message: String| -> Result<Start> {
            truncate(part)?;
            Ok(Start::Done(Attempt::Retry {
                message,
                progressed: false,
            }))
        };
        match self.status {
            200 => Ok(Start::Body {
                start: 0,
                announced: self.content_length,
            }),
            206 if !same => {
                restart("the file changed on the server (its ETag differs); starting over".into())
            }
            206 => match self.content_range {
                Some((s, t)) if s == have => Ok(Start::Body {
                    start: have,
                    announced: t.or(self.content_length.map(|l| have + l)),
                }),
                // A range we did not ask for: drop the part and ask for the whole file.
                other => restart(format!("server answered an unexpected range {other:?}")),
            },
            416 => {
                let t = self.content_range.and_then(|(_, t)| t);
                if have > 0 && t == Some(have) && same {
                    return Ok(Start::Done(Attempt::Complete { announced: t }));
                }
                restart("server refused to resume (HTTP 416)".into())
            }
            _ => self.refusal(spec).map(Start::Done),
        }
    }

    /// A status with no body to take: a retry for server trouble, an error otherwise.
    fn refusal(&self, spec: &FileSpec) -> Result<Attempt> {
        let url = self.url.clone();
        match self.status {
            404 | 410 => {
                discard(&spec.dest);
                Err(FetchError::NotFound { url })
            }
            status @ (401 | 403) => Err(FetchError::Denied {
                url,
                status,
                hint: if spec.url.contains("huggingface") || !spec.headers.is_empty() {
                    " (gated or private: accept the terms on the Hub and set HF_TOKEN)"
                } else {
                    ""
                },
            }),
            s if s >= 500 || s == 429 || s == 408 => Ok(Attempt::Retry {
                message: status_text(s),
                progressed: false,
            }),
            // The agent follows redirects; one returned means the limit was reached.
            300..=399 if self.location => Err(FetchError::TooManyRedirects {
                url,
                count: MAX_REDIRECTS,
            }),
            status => Err(FetchError::Status { url, status }),
        }
    }
}

/// The size the server announces must be the one the publisher states.
fn check_announced_size(spec: &FileSpec, announced: Option<u64>) -> Result<()> {
    match (spec.size, announced) {
        (Some(expected), Some(server)) if expected != server => {
            discard(&spec.dest);
            Err(FetchError::SizeMismatch {
                url: spec.url.clone(),
                path: spec.dest.clone(),
                expected,
                actual: server,
                what: "the server announced",
            })
        }
        _ => Ok(()),
    }
}

/// The part opened for appending at `start`; from 0 it is truncated first and then the served
/// version recorded, so a part with bytes always has its own version beside it.
fn open_part(
    spec: &FileSpec,
    part: &Path,
    start: u64,
    have: u64,
    served: Option<&Validator>,
    bar: &dyn Progress,
) -> Result<File> {
    if start > 0 {
        let mut f = OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| FetchError::io(part, e))?;
        f.seek(SeekFrom::End(0))
            .map_err(|e| FetchError::io(part, e))?;
        return Ok(f);
    }
    if have > 0 {
        bar.message("the file changed on the server, or it cannot resume; starting over");
    }
    let f = File::create(part).map_err(|e| FetchError::io(part, e))?;
    match served {
        Some(v) => v.write(&spec.dest)?,
        None => remove(&validator_path(&spec.dest)),
    }
    Ok(f)
}

/// Brings the running hash to the part's first `start` bytes (rehashing only when it is not).
fn resume_hash(part: &Path, state: &mut HashState, start: u64) -> Result<()> {
    if state.hashed != start {
        state.hasher = Sha256::new();
        state.hashed = 0;
        if start > 0 {
            rehash(part, state)?;
        }
    }
    Ok(())
}

/// Where a body's bytes go: the part file, its running hash, the file's and the total's bars.
struct PartSink<'a> {
    file: &'a mut File,
    part: &'a Path,
    state: &'a mut HashState,
    bar: &'a dyn Progress,
    total: &'a dyn Progress,
    /// Bytes already added to the total bar, so restarts never count a byte twice there.
    counted: &'a mut u64,
    pos: u64,
}

impl PartSink<'_> {
    /// Copies the body to the end; `Some(why)` when the connection stalled or broke first.
    fn copy_body(
        &mut self,
        resp: ureq::http::Response<ureq::Body>,
        read_timeout: Duration,
    ) -> Result<Option<String>> {
        self.count_total();
        let mut body = resp.into_body();
        let mut reader = body.as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let pos = self.pos;
            match reader.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.take(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if is_stall(&e) => {
                    return Ok(Some(format!(
                        "stalled after {pos} bytes: no data for {:.1}s",
                        read_timeout.as_secs_f64()
                    )))
                }
                Err(e) => return Ok(Some(format!("connection lost after {pos} bytes: {e}"))),
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| FetchError::io(self.part, e))?;
        self.state.hasher.update(bytes);
        self.state.hashed += bytes.len() as u64;
        self.pos += bytes.len() as u64;
        self.bar.advance(bytes.len() as u64);
        self.count_total();
        Ok(())
    }

    fn count_total(&mut self) {
        if self.pos > *self.counted {
            self.total.advance(self.pos - *self.counted);
            *self.counted = self.pos;
        }
    }
}

/// Connection-level failures are worth retrying; a malformed URL or redirect loop is not.
fn transport_error(url: &str, e: ureq::Error) -> Result<Attempt> {
    use ureq::Error as E;
    match e {
        E::Io(_)
        | E::Timeout(_)
        | E::HostNotFound
        | E::ConnectionFailed
        | E::Protocol(_)
        | E::Tls(_) => Ok(Attempt::Retry {
            message: e.to_string(),
            progressed: false,
        }),
        other => Err(FetchError::Network {
            url: url.to_owned(),
            attempts: 1,
            message: other.to_string(),
        }),
    }
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes */1000` → (0, Some(1000)); `/*` → None total.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => 0,
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

fn rehash(path: &Path, state: &mut HashState) -> Result<()> {
    let mut f = File::open(path).map_err(|e| FetchError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| FetchError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    state.hasher = hasher;
    state.hashed = n_total;
    Ok(())
}

fn truncate(part: &Path) -> Result<()> {
    match fs::remove_file(part) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io(part, e)),
    }
}

fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Whether a body read failed because no byte came within the read timeout.
fn is_stall(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|x| x.downcast_ref::<ureq::Error>())
            .is_some_and(|x| matches!(x, ureq::Error::Timeout(_)))
}

/// Drops a failed download's part and its recorded version.
fn discard(dest: &Path) {
    remove(&part_path(dest));
    remove(&validator_path(dest));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes */1000"), Some((0, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn part_names_are_never_finished_names() {
        let p = part_path(Path::new("/x/collection.tar.gz"));
        assert_eq!(p, Path::new("/x/collection.tar.gz.part"));
        assert!(is_part(&p));
        assert!(!is_part(Path::new("/x/collection.tar.gz")));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let d = Downloader::new(DownloadConfig {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..DownloadConfig::default()
        });
        let waits: Vec<u128> = (1..=5).map(|f| d.backoff(f).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
    }
}
