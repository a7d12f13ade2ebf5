//! Downloads for prep: source files from their publishers and models from the Hugging Face Hub.
//!
//! - [`Downloader`]: one HTTP engine with Range resume, retries with backoff on connection errors
//!   and 5xx, clear errors on 404/403, size (always) and sha256 (when known) verification, and
//!   partial files under a `.part` name that is never taken for a finished file, resumed with
//!   `If-Range` only when their version is recorded, so two versions are never joined; a lock
//!   per destination.
//! - [`download_source`] / [`cached_inputs`]: a source's files in `<dest>/<source>/`, archives
//!   unpacked atomically beside them ([`unpack`]), recorded as complete only when all are verified
//!   and unpacked; `prep ingest` reads that record.
//! - [`hub`]: `--model` resolution into the standard HF cache layout, offline-capable.
//! - [`hub_dataset`]: `--dataset` repositories (listing, include/exclude, the same cache layout).
//!
//! HTTP is `ureq` (blocking, no async runtime, rustls on ring): downloads are I/O-bound on a few
//! connections, so threads are enough and the build stays small.

pub mod cache;
pub mod download;
pub mod error;
pub mod hub;
pub mod hub_dataset;
pub mod progress;
pub mod unpack;

pub use cache::{
    cached_inputs, default_dest, default_dest_from, download_source, source_dir, CompletedFile,
    CompletedSource, SourceFile, COMPLETE_FILE,
};
pub use download::{
    is_part, part_path, validator_path, DownloadConfig, Downloaded, Downloader, FileSpec,
    MAX_REDIRECTS,
};
pub use error::{FetchError, Result};
pub use hub::{resolve_model, resolve_model_with, HubConfig, ModelSpec, RepoKind};
pub use hub_dataset::{
    download_dataset, parse_hf_url, DatasetRequest, DatasetSnapshot, SnapshotFile,
};
pub use progress::{MultiProgress, NoMultiProgress};
pub use unpack::{default_cap, unpack, ArchiveFormat, Cap};
