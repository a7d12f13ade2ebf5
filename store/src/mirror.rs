//! The read side of training on remote shards: a local folder that holds the remote
//! `index.json` and a marker naming the remote, into which shards are fetched as the loader
//! reaches them. The folder is a size-capped cache: a shard already there is re-hashed against
//! the index before use (never trusted blindly), and the least recently used shards go first
//! when the folder grows past the cap.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use schemas::SHARD_INDEX_FILE;
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::location::{settings, Location};
use crate::remote::Remote;

/// The marker file of a mirror folder: `{"url": "s3://..."}`.
pub const MIRROR_MARKER: &str = ".prep-remote.json";

#[derive(Debug, Clone)]
pub struct Mirror {
    remote: Remote,
    dir: PathBuf,
    cap: u64,
    /// Shards fetched last that eviction never touches: the one being read, those read ahead.
    pinned: usize,
}

/// `<cache>/mirror/<readable url>-<hash>`: one folder per remote, stable across runs.
fn mirror_dir(cache: &Path, url: &str) -> PathBuf {
    let readable: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let hash = hex::encode(&Sha256::digest(url.as_bytes())[..6]);
    cache.join("mirror").join(format!("{readable}-{hash}"))
}

impl Mirror {
    /// Reads the remote shard set's `index.json` now (the store's current one) into its mirror
    /// folder under the cache, and returns the mirror. Its `dir()` is what the trainer reads.
    pub fn open(url: &str) -> Result<Mirror> {
        Mirror::open_with(url, &settings())
    }

    /// [`Mirror::open`] with explicit settings instead of the process's.
    pub fn open_with(url: &str, s: &crate::Settings) -> Result<Mirror> {
        let remote = match Location::parse_with(url, s)? {
            Location::Remote(r) => r,
            Location::Local(p) => {
                return Err(StoreError::Url {
                    url: p.display().to_string(),
                    message: "not a remote location".into(),
                })
            }
        };
        let dir = mirror_dir(&s.cache_dir, remote.url());
        let index = remote
            .get(SHARD_INDEX_FILE)?
            .ok_or_else(|| StoreError::NotFound {
                url: remote.url_of(SHARD_INDEX_FILE),
            })?;
        let marker = serde_json::json!({ "url": remote.url() }).to_string();
        schemas::AtomicFile::write_all(dir.join(MIRROR_MARKER), marker.as_bytes())?;
        schemas::AtomicFile::write_all(dir.join(SHARD_INDEX_FILE), &index)?;
        Ok(Mirror {
            remote,
            dir,
            cap: s.cache_bytes,
            pinned: s.read_ahead + 2,
        })
    }

    /// The mirror whose folder is `dir`, if `dir` is one (it holds the marker).
    pub fn detect(dir: &Path) -> Result<Option<Mirror>> {
        let marker = dir.join(MIRROR_MARKER);
        let bytes = match std::fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(marker, e)),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| schemas::SchemaError::Json {
                path: marker.clone(),
                source: e,
            })?;
        let url = value["url"].as_str().unwrap_or_default();
        let remote = match Location::parse(url)? {
            Location::Remote(r) => r,
            Location::Local(_) => return Ok(None),
        };
        Ok(Some(Mirror {
            remote,
            dir: dir.to_owned(),
            cap: settings().cache_bytes,
            pinned: settings().read_ahead + 2,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The index as fetched (bytes), to re-read what [`Mirror::open`] stored.
    pub fn index_bytes(&self) -> Result<Bytes> {
        let path = self.dir.join(SHARD_INDEX_FILE);
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| StoreError::io(path, e))
    }

    /// Makes `file` (listed with `sha256`) present and verified in the mirror folder: a cached
    /// copy is re-hashed and used if it matches; otherwise it is downloaded (retried) and
    /// refused if its sha256 differs. Then shards beyond the size cap are evicted, oldest use
    /// first. Returns the local path.
    pub fn fetch(&self, file: &str, sha256: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        let cached = path.exists() && schemas::sha256_file(&path)? == sha256;
        if !cached {
            self.remote.download(file, &path, Some(sha256))?;
        }
        // The modification time is the cache's "last used" clock.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        self.evict()?;
        Ok(path)
    }

    /// Removes least recently used shards until the folder is under the cap, sparing the
    /// `pinned` most recent (being read, or read ahead).
    fn evict(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let mut shards: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = shards.iter().map(|s| s.1).sum();
        shards.sort();
        let evictable = shards.len().saturating_sub(self.pinned);
        for (_, len, path) in shards.into_iter().take(evictable) {
            if total <= self.cap {
                break;
            }
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            total -= len;
        }
        Ok(())
    }
}
