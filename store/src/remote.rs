//! A prefix in an object store behind a synchronous facade: whole-object uploads, verified
//! downloads into local files, listings; each transfer retried with backoff.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

/// Files at least this big go up as multipart uploads (parts of this size), smaller ones in one
/// PUT. Either way the object appears under its name only when the upload completes.
pub const MULTIPART_BYTES: usize = 16 << 20;

/// The one runtime behind every store call: prep is synchronous, object_store is async. One
/// worker thread is plenty for a few concurrent transfers, and `block_on` works from any thread.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prep-store")
            .enable_all()
            .build()
            .expect("starting the object-store runtime")
    })
}

/// What [`Remote::list`] finds: objects directly inside (name, size), and sub-folder names.
pub type Listed = (Vec<(String, u64)>, Vec<String>);

/// A folder-like prefix in an object store.
#[derive(Clone)]
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    read_only: bool,
    /// Tries of one transfer, and the first pause between them (doubled after each).
    attempts: u32,
    backoff: std::time::Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Remote {
    pub(crate) fn new(
        url: &str,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        read_only: bool,
        settings: &crate::Settings,
    ) -> Self {
        Remote {
            url: url.to_owned(),
            store,
            prefix,
            read_only,
            attempts: settings.attempts.max(1),
            backoff: settings.backoff,
        }
    }

    /// The location as given (`s3://bucket/prefix`, no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The sub-folder `name` (e.g. one dataset under a pairs folder).
    pub fn child(&self, name: &str) -> Remote {
        Remote {
            url: format!("{}/{name}", self.url),
            store: self.store.clone(),
            prefix: self.path(name),
            ..self.clone()
        }
    }

    fn path(&self, name: &str) -> ObjectPath {
        name.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// The URL of the object `name` in this folder (for messages).
    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    fn err(&self, name: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                url: self.url_of(name),
            },
            e => StoreError::Store {
                url: self.url_of(name),
                source: e,
            },
        }
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                url: self.url.clone(),
            });
        }
        Ok(())
    }

    /// Runs `op` up to the configured number of times while it fails transiently, doubling the
    /// pause between tries.
    fn retry<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut pause = self.backoff;
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if e.transient() && attempt < self.attempts => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The object `name` whole (small files: index.json, manifest.json), or None if absent.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        let got = self.retry(|| {
            runtime()
                .block_on(async {
                    let r = self.store.get(&path).await?;
                    r.bytes().await
                })
                .map_err(|e| self.err(name, e))
        });
        match got {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The size of the object `name`, or None if absent.
    pub fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name);
        match self.retry(|| {
            runtime()
                .block_on(self.store.head(&path))
                .map_err(|e| self.err(name, e))
        }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Objects directly in this folder (name, size) and its sub-folders' names.
    pub fn list(&self) -> Result<Listed> {
        let listed = self.retry(|| {
            runtime()
                .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
                .map_err(|e| self.err("", e))
        })?;
        let name = |p: &ObjectPath| p.filename().unwrap_or_default().to_owned();
        let files = listed
            .objects
            .iter()
            .map(|m| (name(&m.location), m.size))
            .collect();
        let dirs = listed.common_prefixes.iter().map(name).collect();
        Ok((files, dirs))
    }

    /// Writes `bytes` as the object `name` in one PUT.
    pub fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.writable()?;
        let path = self.path(name);
        self.retry(|| {
            runtime()
                .block_on(self.store.put(&path, PutPayload::from(bytes.clone())))
                .map(|_| ())
                .map_err(|e| self.err(name, e))
        })
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.writable()?;
        let path = self.path(name);
        match self.retry(|| {
            runtime()
                .block_on(self.store.delete(&path))
                .map_err(|e| self.err(name, e))
        }) {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Uploads the local file `src` as the object `name`: one PUT below [`MULTIPART_BYTES`], a
    /// multipart upload above (aborted on failure). Nothing is visible under `name` until the
    /// whole file is there.
    pub fn upload(&self, name: &str, src: &Path) -> Result<()> {
        self.writable()?;
        let len = std::fs::metadata(src)
            .map_err(|e| StoreError::io(src, e))?
            .len();
        if len < MULTIPART_BYTES as u64 {
            let bytes = std::fs::read(src).map_err(|e| StoreError::io(src, e))?;
            return self.put(name, Bytes::from(bytes));
        }
        self.retry(|| self.upload_multipart(name, src))
    }

    fn upload_multipart(&self, name: &str, src: &Path) -> Result<()> {
        let path = self.path(name);
        let mut file = std::fs::File::open(src).map_err(|e| StoreError::io(src, e))?;
        runtime().block_on(async {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.err(name, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_BYTES);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(StoreError::io(src, e));
                    }
                };
                // At most 4 parts in flight: memory stays at a few parts whatever the size.
                if let Err(e) = writer.wait_for_capacity(4).await {
                    return Err(self.err(name, e));
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(|e| self.err(name, e))?;
            Ok(())
        })
    }

    /// Downloads the object `name` to `dest` (written under a temporary name, renamed when
    /// whole), checking its sha256 against `sha256` when given. A damaged object is refused:
    /// nothing is left at `dest`. Returns the sha256 and size.
    pub fn download(&self, name: &str, dest: &Path, sha256: Option<&str>) -> Result<(String, u64)> {
        self.retry(|| self.download_once(name, dest, sha256))
    }

    fn download_once(
        &self,
        name: &str,
        dest: &Path,
        sha256: Option<&str>,
    ) -> Result<(String, u64)> {
        let path = self.path(name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        let file_name = dest.file_name().unwrap_or_default().to_string_lossy();
        let temp = dest.with_file_name(format!(".{file_name}.download-{}", std::process::id()));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&temp).map_err(|e| StoreError::io(&temp, e))?,
        );
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let result = runtime().block_on(async {
            let mut stream = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.err(name, e))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(name, e))?;
                hasher.update(&chunk);
                len += chunk.len() as u64;
                out.write_all(&chunk)
                    .map_err(|e| StoreError::io(&temp, e))?;
            }
            Ok(())
        });
        let actual = hex::encode(hasher.finalize());
        let finished = result.and_then(|()| {
            if let Some(expected) = sha256.filter(|e| *e != actual) {
                return Err(StoreError::Damaged {
                    url: self.url_of(name),
                    expected: expected.to_owned(),
                    actual: actual.clone(),
                });
            }
            out.into_inner()
                .map_err(|e| StoreError::io(&temp, e.into_error()))?
                .sync_all()
                .map_err(|e| StoreError::io(&temp, e))?;
            std::fs::rename(&temp, dest).map_err(|e| StoreError::io(dest, e))
        });
        if let Err(e) = finished {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        Ok((actual, len))
    }
}
