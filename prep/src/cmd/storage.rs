//! Stage folders on object storage (`s3://`, `gs://`, `az://`, read-only `https://`): the global
//! flags, and the wiring that lets each stage keep writing and reading local folders through
//! `schemas` while `store` moves them.
//!
//! - Outputs (`ingest --out`, `mix --out`) are written to a staging folder under the cache, then
//!   published (data files first, the listing last). `mix` first pulls the remote set into
//!   staging, so a rerun resumes, and the mixer verifies every shard as it does locally; it
//!   publishes each shard as it is finished ([`ShardPublisher`]).
//! - Inputs (`mix --pairs`, `inspect`, `eval --pairs`) are pulled into the cache, every file
//!   checked against its listing's sha256.
//! - `train SHARDS` opens a mirror folder that holds the remote index.json; the loader fetches
//!   shards into it as it reaches them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use store::{Location, Remote};

/// Global flags for remote locations (any command).
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Object-store setting for s3://, gs://, az:// and https:// locations, after the
    /// environment's (AWS_*, GOOGLE_*, AZURE_*): e.g. `endpoint=http://127.0.0.1:9000`,
    /// `region=eu-west-1`, `allow_http=true` (object_store's key names). Repeatable.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", global = true, value_parser = key_value)]
    pub storage_options: Vec<(String, String)>,
    /// Local cache of remote data: shard mirrors, pulled datasets, staging of outputs bound for
    /// a store [default: $XDG_CACHE_HOME/prep/store or ~/.cache/prep/store].
    #[arg(long, global = true, env = "PREP_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size cap of a remote shard set's cache, in GiB (least recently used shards go first).
    #[arg(long, global = true, default_value_t = 20.0)]
    pub cache_gib: f64,
    /// Remote shards fetched ahead of the one training reads.
    #[arg(long, global = true, default_value_t = 2)]
    pub prefetch_shards: usize,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

impl StoreArgs {
    /// Sets the process's store settings from the flags.
    pub fn configure(&self) {
        let defaults = store::Settings::default();
        store::configure(store::Settings {
            options: self.storage_options.clone(),
            cache_dir: self.cache_dir.clone().unwrap_or(defaults.cache_dir),
            cache_bytes: (self.cache_gib * (1u64 << 30) as f64) as u64,
            read_ahead: self.prefetch_shards.max(1),
            ..defaults
        });
    }
}

/// The remote `path` names, if it is a URL.
pub fn remote(path: &Path) -> Result<Option<Remote>> {
    Ok(Location::from_path(path)
        .with_context(|| format!("opening {}", path.display()))?
        .remote()
        .cloned())
}

/// [`remote`] for an output folder: refuses `http(s)://`, which is read-only (a web server offers
/// no upload protocol to rely on), before any work is done.
pub fn remote_output(path: &Path) -> Result<Option<Remote>> {
    let remote = remote(path)?;
    if let Some(r) = &remote {
        if r.url().starts_with("http://") || r.url().starts_with("https://") {
            bail!(
                "{}: http(s):// locations are read-only (inputs and training shards); write to \
                 s3://, gs:// or az://, or a local folder",
                r.url()
            );
        }
    }
    Ok(remote)
}

/// A cache folder of `kind` for `remote`: stable across runs, one per URL.
fn cache_folder(kind: &str, remote: &Remote) -> PathBuf {
    let url = remote.url();
    let hash = hex::encode(&Sha256::digest(url.as_bytes())[..6]);
    let readable: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    store::settings()
        .cache_dir
        .join(kind)
        .join(format!("{readable}-{hash}"))
}

/// The local staging folder of an output bound for `remote`.
pub fn staging(remote: &Remote) -> PathBuf {
    cache_folder("stage", remote)
}

/// Publishes the finished local stage folder `dir` at `remote`, saying what moved.
pub fn publish(dir: &Path, remote: &Remote) -> Result<()> {
    publish_with(&mut store::DirPublisher::default(), dir, remote)
}

/// [`publish`] through a publisher that remembers what it already put at `remote`.
fn publish_with(publisher: &mut store::DirPublisher, dir: &Path, remote: &Remote) -> Result<()> {
    let r = publisher
        .publish(dir, remote)
        .with_context(|| format!("publishing {} to {}", dir.display(), remote.url()))?;
    println!(
        "published {}: {} file(s) uploaded, {} already there, {} stale removed{}",
        remote.url(),
        r.uploaded.len(),
        r.kept.len(),
        r.removed.len(),
        if r.listing_written {
            ""
        } else {
            " (listing unchanged)"
        }
    );
    Ok(())
}

/// Publishes a shard folder while a mix writes it: each time its `index.json` changes (the mixer
/// rewrites it after every finished shard) the shards it lists go up, then that listing, so
/// training can start on the store (`--allow-incomplete`) and a mix killed on one machine resumes
/// on another from every shard finished before the kill.
pub struct ShardPublisher<'a> {
    dir: &'a Path,
    remote: &'a Remote,
    stop: std::sync::atomic::AtomicBool,
    /// Shared by the watching thread and the final publish: it lists the remote once.
    publisher: std::sync::Mutex<store::DirPublisher>,
}

impl<'a> ShardPublisher<'a> {
    /// How often the index's modification time is looked at (one `stat`).
    const POLL: std::time::Duration = std::time::Duration::from_millis(200);

    pub fn new(dir: &'a Path, remote: &'a Remote) -> Self {
        ShardPublisher {
            dir,
            remote,
            stop: false.into(),
            publisher: Default::default(),
        }
    }

    /// Runs `work` (the mix) with this publisher on a thread beside it and, when `work`
    /// succeeds, publishes the end state (when it fails, the store keeps the last listing that
    /// went up, which a rerun resumes from).
    pub fn around<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering;
        let out = std::thread::scope(|s| {
            s.spawn(|| self.watch());
            let out = work();
            self.stop.store(true, Ordering::SeqCst);
            out
        })?;
        publish_with(&mut self.lock(), self.dir, self.remote)?;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, store::DirPublisher> {
        // A panic while publishing leaves nothing half-known: a failed publish forgets its state.
        self.publisher.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self) {
        use std::sync::atomic::Ordering;
        let index = self.dir.join(schemas::SHARD_INDEX_FILE);
        let mut published = modified(&index);
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Self::POLL);
            let now = modified(&index);
            if now.is_none() || now == published {
                continue;
            }
            // A failure here is retried at the next change and at the end, which must succeed.
            match self.lock().publish(self.dir, self.remote) {
                Ok(_) => published = now,
                Err(e) => eprintln!(
                    "warning: publishing to {} (will retry): {e}",
                    self.remote.url()
                ),
            }
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Pulls every dataset under a remote pairs folder (`<pairs>/<dataset>/...`) into one local
/// pairs folder in the cache, each file checked by sha256; the local folder.
pub fn pull_pairs(remote: &Remote) -> Result<PathBuf> {
    let dir = cache_folder("pull", remote);
    let (_, datasets) = remote.list()?;
    let mut pulled = 0;
    for name in datasets {
        let local = dir.join(&name);
        if store::pull_dir(&remote.child(&name), &local, schemas::MANIFEST_FILE)?.is_some() {
            pulled += 1;
        }
    }
    if pulled == 0 {
        bail!(
            "{}: no datasets (folders with a manifest.json)",
            remote.url()
        );
    }
    Ok(dir)
}

/// The local folder to read for a path argument: itself, or a pulled copy of a remote stage
/// folder (a shard set, a dataset, or a folder of datasets).
pub fn local_input(path: &Path) -> Result<PathBuf> {
    let Some(remote) = remote(path)? else {
        return Ok(path.to_owned());
    };
    let dir = cache_folder("pull", &remote);
    if store::pull_dir(&remote, &dir, schemas::SHARD_INDEX_FILE)?.is_some() {
        return Ok(dir);
    }
    if store::pull_dir(&remote, &dir, schemas::MANIFEST_FILE)?.is_some() {
        return Ok(dir);
    }
    pull_pairs(&remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The listing at `remote` now, as shard file names (none while there is no index.json).
    fn remote_shards(remote: &Remote) -> Vec<String> {
        match remote.get(schemas::SHARD_INDEX_FILE).unwrap() {
            Some(bytes) => schemas::ShardIndex::from_slice(Path::new("remote"), &bytes)
                .unwrap()
                .shards
                .into_iter()
                .map(|s| s.file)
                .collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn a_mix_publishes_each_listed_shard_while_it_runs() {
        let Some(moto) = testdata::moto::Moto::start() else {
            return;
        };
        moto.create_bucket("pub");
        let tmp = tempfile::tempdir().unwrap();
        let settings = store::Settings {
            options: vec![
                ("endpoint".into(), moto.endpoint()),
                ("access_key_id".into(), "testing".into()),
                ("secret_access_key".into(), "testing".into()),
                ("region".into(), "us-east-1".into()),
            ],
            ..store::Settings::default()
        };
        let Location::Remote(remote) = Location::parse_with("s3://pub/shards", &settings).unwrap()
        else {
            panic!("not remote")
        };
        // A finished 3-shard set, which the "mix" below lays out in `dir` one shard at a time.
        let all = tmp.path().join("all");
        crate::bench::store::write_generated_shards(&all, 6, 4, 2).unwrap();
        let full = schemas::ShardIndex::read(&all).unwrap();
        let dir = tmp.path().join("staging");
        std::fs::create_dir_all(&dir).unwrap();
        let publisher = ShardPublisher::new(&dir, &remote);
        publisher
            .around(|| {
                for k in 1..=full.shards.len() {
                    let file = &full.shards[k - 1].file;
                    std::fs::copy(all.join(file), dir.join(file))?;
                    let mut index = full.clone();
                    index.shards.truncate(k);
                    index.complete = k == full.shards.len();
                    index.write(&dir)?;
                    // The next shard waits until this one is on the store, listed.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while remote_shards(&remote).len() < k {
                        anyhow::ensure!(Instant::now() < deadline, "shard {k} never published");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Ok(())
            })
            .unwrap();
        let names: Vec<String> = full.shards.iter().map(|s| s.file.clone()).collect();
        assert_eq!(remote_shards(&remote), names);
        let got = remote.get(schemas::SHARD_INDEX_FILE).unwrap().unwrap();
        assert_eq!(
            &got[..],
            &std::fs::read(all.join("index.json")).unwrap()[..]
        );
    }
}
