//! Moving whole stage folders between a local folder and a store, in the order that keeps
//! readers safe: data files first, the listing (index.json / manifest.json) last.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use bytes::Bytes;
use schemas::{Manifest, ShardIndex, MANIFEST_FILE, SHARD_INDEX_FILE};

use crate::error::{Result, StoreError};
use crate::remote::Remote;

/// What a folder's listing names: the listing's file name and each data file with its sha256.
pub struct Listing {
    pub meta: &'static str,
    pub files: Vec<(String, String)>,
}

fn parse_listing(meta: &'static str, where_: &Path, bytes: &[u8]) -> Result<Listing> {
    let files = if meta == SHARD_INDEX_FILE {
        let index = ShardIndex::from_slice(&where_.join(meta), bytes)?;
        index
            .shards
            .into_iter()
            .map(|s| (s.file, s.sha256))
            .collect()
    } else {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| schemas::SchemaError::Json {
                path: where_.join(meta),
                source: e,
            })?;
        manifest
            .files
            .into_iter()
            .map(|f| (f.file, f.sha256))
            .collect()
    };
    Ok(Listing { meta, files })
}

/// The listing of a local stage folder: its `index.json` (shards) or `manifest.json` (a dataset).
pub fn listed_files(dir: &Path) -> Result<Listing> {
    read_listing(dir).map(|(listing, _)| listing)
}

/// The listing of `dir` with the bytes it was parsed from: a folder still being written (a mix
/// publishing as it goes) may rewrite its listing meanwhile, and what goes up must be exactly
/// the listing whose files went up.
fn read_listing(dir: &Path) -> Result<(Listing, Vec<u8>)> {
    for meta in [SHARD_INDEX_FILE, MANIFEST_FILE] {
        let path = dir.join(meta);
        match std::fs::read(&path) {
            Ok(bytes) => return Ok((parse_listing(meta, dir, &bytes)?, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(path, e)),
        }
    }
    Err(StoreError::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither index.json nor manifest.json: not a stage folder",
        ),
    ))
}

/// The listing at `remote`, if it has one of the given kind.
fn remote_listing(remote: &Remote, meta: &'static str) -> Result<Option<(Bytes, Listing)>> {
    let Some(bytes) = remote.get(meta)? else {
        return Ok(None);
    };
    let listing = parse_listing(meta, Path::new(remote.url()), &bytes)?;
    Ok(Some((bytes, listing)))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Data files uploaded (new or changed).
    pub uploaded: Vec<String>,
    /// Data files already there, listed with the same sha256 and present.
    pub kept: Vec<String>,
    /// Objects of ours no longer listed, removed after the new listing went up.
    pub removed: Vec<String>,
    /// The listing was written (false: it was byte-identical already).
    pub listing_written: bool,
}

/// Whether `name` is a data file a stage writes (so a stale one may be removed).
fn is_data_file(name: &str) -> bool {
    name.ends_with(".parquet") && (name.starts_with("shard-") || name.starts_with("part-"))
}

/// Publishes the local folder `dir` at `remote` as its listing stands now (files written but not
/// yet listed wait for a later call): each listed data file the remote does
/// not already hold (same name, listed there with the same sha256, present) is uploaded whole;
/// then the listing; then data files no longer listed are removed. When a file is about to be
/// replaced by different bytes, the old listing is deleted first, so no reader meets a listing
/// whose files changed under it (it sees no folder, then the new one).
pub fn publish_dir(dir: &Path, remote: &Remote) -> Result<PublishReport> {
    DirPublisher::default().publish(dir, remote)
}

/// [`publish_dir`] called again and again on one folder (a mix publishing after every shard):
/// it reads the remote's listing and lists the remote folder once, then keeps track of what
/// it put there itself, so each call costs only the uploads it needs (not a LIST of every
/// shard so far, which grows with the mix). A failed call forgets what it knew, and the next
/// looks at the remote again.
#[derive(Default)]
pub struct DirPublisher {
    known: Option<RemoteDir>,
}

/// What a remote stage folder holds, as far as a publisher knows: its listing's bytes, the
/// files that listing names (with their sha256), and each object present.
struct RemoteDir {
    listing: Option<Bytes>,
    listed: HashMap<String, String>,
    present: BTreeSet<String>,
}

impl RemoteDir {
    fn observe(remote: &Remote, meta: &'static str) -> Result<RemoteDir> {
        let (listing, listed) = match remote_listing(remote, meta)? {
            Some((bytes, listing)) => (Some(bytes), listing.files.into_iter().collect()),
            None => (None, HashMap::new()),
        };
        let (present, _) = remote.list()?;
        let present = present.into_iter().map(|(name, _)| name).collect();
        Ok(RemoteDir {
            listing,
            listed,
            present,
        })
    }
}

impl DirPublisher {
    /// Publishes `dir` at `remote` as [`publish_dir`] does. Every call must name the same pair.
    pub fn publish(&mut self, dir: &Path, remote: &Remote) -> Result<PublishReport> {
        let (local, meta) = read_listing(dir)?;
        let before = match self.known.take() {
            Some(known) => known,
            None => RemoteDir::observe(remote, local.meta)?,
        };
        let (report, after) = publish_onto(dir, remote, before, local, meta)?;
        self.known = Some(after);
        Ok(report)
    }
}

/// One publish of `local` (with its listing's bytes `meta`) onto a remote that holds `before`;
/// the report and what the remote holds after.
fn publish_onto(
    dir: &Path,
    remote: &Remote,
    before: RemoteDir,
    local: Listing,
    meta: Vec<u8>,
) -> Result<(PublishReport, RemoteDir)> {
    let mut report = PublishReport::default();
    let mut replaces_listed = false;
    for (file, sha) in &local.files {
        match before.listed.get(file) {
            Some(s) if s == sha && before.present.contains(file) => report.kept.push(file.clone()),
            Some(s) if s != sha => {
                replaces_listed = true;
                report.uploaded.push(file.clone());
            }
            _ => report.uploaded.push(file.clone()),
        }
    }
    if replaces_listed {
        remote.delete(local.meta)?;
    }
    for file in &report.uploaded {
        remote.upload(file, &dir.join(file))?;
    }
    let unchanged = !replaces_listed && before.listing.as_ref().is_some_and(|b| b[..] == meta[..]);
    if !unchanged {
        remote.put(local.meta, Bytes::from(meta.clone()))?;
        report.listing_written = true;
    }
    let listed: HashMap<String, String> = local.files.into_iter().collect();
    let mut present = before.present;
    let stale: Vec<String> = (present.iter())
        .filter(|name| is_data_file(name) && !listed.contains_key(*name))
        .cloned()
        .collect();
    for name in stale {
        remote.delete(&name)?;
        present.remove(&name);
        report.removed.push(name);
    }
    present.extend(report.uploaded.iter().cloned());
    let after = RemoteDir {
        listing: Some(Bytes::from(meta)),
        listed,
        present,
    };
    Ok((report, after))
}

/// Brings the stage folder at `remote` down into `dir`: each listed file missing locally or
/// differing from its sha256 is downloaded and checked, then the listing is written last. Returns
/// the listing's file name, or None when the remote folder has no listing (nothing there yet).
pub fn pull_dir(remote: &Remote, dir: &Path, meta: &'static str) -> Result<Option<&'static str>> {
    let Some((bytes, listing)) = remote_listing(remote, meta)? else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    for (file, sha) in &listing.files {
        let path = dir.join(file);
        let current = path
            .exists()
            .then(|| schemas::sha256_file(&path))
            .transpose()?;
        if current.as_deref() != Some(sha.as_str()) {
            remote.download(file, &path, Some(sha))?;
        }
    }
    schemas::AtomicFile::write_all(dir.join(meta), &bytes)?;
    Ok(Some(meta))
}
