//! Stage folders on object storage: `s3://bucket/prefix`, `gs://…`, `az://…` and (read-only)
//! `https://…`, through the Arrow project's `object_store` crate.
//!
//! Stages keep writing through `schemas`' writers into a local folder (one writer per file
//! contract); this crate moves such folders to and from a store:
//!
//! - [`publish_dir`] uploads a finished folder: every data file listed by its `index.json` or
//!   `manifest.json` whole (multipart above [`MULTIPART_BYTES`]) and under its final name only once
//!   complete (S3 and its peers have no rename, but a single PUT or a multipart completion is
//!   atomic), then the index or manifest last, so a reader never sees a listing of a missing or
//!   partial object.
//! - [`pull_dir`] brings a remote folder's listed files down, each checked against its sha256.
//! - [`Mirror`] is the read side of a training run: a local cache folder holding a remote
//!   index.json, into which shards are fetched on demand (bounded read-ahead by the caller),
//!   verified by sha256 before use and evicted least-recently-used beyond a size cap.
//!
//! Everything is synchronous: one private tokio runtime drives `object_store`. Requests are
//! retried with exponential backoff by `object_store` (5xx, 429, connection errors) and whole
//! transfers again by this crate (a body cut mid-stream).

mod error;
mod location;
mod mirror;
mod publish;
mod remote;

pub use error::{Result, StoreError};
pub use location::{configure, is_remote, settings, Location, Settings};
pub use mirror::{Mirror, MIRROR_MARKER};
pub use publish::{listed_files, publish_dir, pull_dir, DirPublisher, PublishReport};
pub use remote::{Remote, MULTIPART_BYTES};
