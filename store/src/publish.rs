//! Moving whole stage folders between a local folder and a store, in the order that keeps
//! readers safe: data files first, the listing (index.json / manifest.json) last.

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
    let (local, meta) = read_listing(dir)?;
    let old = remote_listing(remote, local.meta)?;
    let (present, _) = remote.list()?;
    let is_present = |f: &str| present.iter().any(|(n, _)| n == f);
    let old_sha = |f: &str| {
        old.as_ref()
            .and_then(|(_, l)| l.files.iter().find(|(n, _)| n == f).map(|(_, s)| s.clone()))
    };
    let mut report = PublishReport::default();
    let mut replaces_listed = false;
    for (file, sha) in &local.files {
        match old_sha(file) {
            Some(s) if &s == sha && is_present(file) => report.kept.push(file.clone()),
            Some(s) if &s != sha => {
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
    let unchanged = !replaces_listed && old.as_ref().is_some_and(|(b, _)| b[..] == meta[..]);
    if !unchanged {
        remote.put(local.meta, Bytes::from(meta))?;
        report.listing_written = true;
    }
    for (name, _) in &present {
        if is_data_file(name) && !local.files.iter().any(|(f, _)| f == name) {
            remote.delete(name)?;
            report.removed.push(name.clone());
        }
    }
    Ok(report)
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
