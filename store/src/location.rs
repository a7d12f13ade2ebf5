//! Where a stage folder lives: a local path or an object-store URL, and the process-wide settings
//! (storage options, cache folder, retries) the binary sets once from its flags.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::error::{Result, StoreError};
use crate::remote::Remote;

/// How stores are reached and remote data cached; one per process (see [`configure`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `KEY=VALUE` pairs given to the store's builder after the environment (`--storage-option`):
    /// `endpoint`, `region`, `access_key_id`, `allow_http`, ... (object_store's key names).
    pub options: Vec<(String, String)>,
    /// Local cache of remote data (`--cache-dir`): mirrors of shard sets, pulled datasets,
    /// staging folders of outputs bound for a store.
    pub cache_dir: PathBuf,
    /// Size cap of one mirror's cached shards, in bytes (least recently used go first).
    pub cache_bytes: u64,
    /// Tries of a whole transfer (each request inside is also retried by object_store).
    pub attempts: u32,
    /// First pause between tries; doubled after each.
    pub backoff: Duration,
    /// Remote shards a training run fetches ahead of the one being read (`--prefetch-shards`).
    pub read_ahead: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        Settings {
            options: Vec::new(),
            cache_dir: cache.join("prep").join("store"),
            cache_bytes: 20 << 30,
            attempts: 6,
            backoff: Duration::from_millis(200),
            read_ahead: 2,
        }
    }
}

fn global() -> &'static RwLock<Settings> {
    static SETTINGS: OnceLock<RwLock<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| RwLock::new(Settings::default()))
}

/// Sets the process's store settings (the binary does, from its flags, before any I/O).
pub fn configure(settings: Settings) {
    *global().write().expect("settings lock") = settings;
}

/// The process's store settings.
pub fn settings() -> Settings {
    global().read().expect("settings lock").clone()
}

/// Whether `s` names an object-store location (`scheme://...`) rather than a local path.
pub fn is_remote(s: &str) -> bool {
    [
        "s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://", "http://",
        "https://",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// A stage folder: local, or a prefix in an object store.
#[derive(Debug, Clone)]
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

impl Location {
    /// A path, or a URL with a scheme object_store knows (built with the process's settings).
    pub fn parse(s: &str) -> Result<Location> {
        if !is_remote(s) {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        Location::parse_with(s, &settings())
    }

    /// [`Location::parse`] with explicit settings instead of the process's.
    pub fn parse_with(s: &str, settings: &Settings) -> Result<Location> {
        if !is_remote(s) {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        Ok(Location::Remote(connect(s, settings)?))
    }

    /// [`Location::parse`] of a path argument (URLs pass through clap as paths).
    pub fn from_path(p: &Path) -> Result<Location> {
        match p.to_str() {
            Some(s) => Location::parse(s),
            None => Ok(Location::Local(p.to_owned())),
        }
    }

    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Location::Remote(r) => Some(r),
            Location::Local(_) => None,
        }
    }
}

fn retry_config(s: &Settings) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: s.backoff / 2,
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(120),
    }
}

fn bad(url: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Url {
        url: url.to_owned(),
        message: message.to_string(),
    }
}

/// Builds the store for `url` (environment first, then `settings.options`) and the prefix in it.
pub(crate) fn connect(url: &str, s: &Settings) -> Result<Remote> {
    let parsed: url_parts::Parts = url_parts::split(url).ok_or_else(|| bad(url, "not a URL"))?;
    let retry = retry_config(s);
    let store_err = |e: object_store::Error| StoreError::Store {
        url: url.to_owned(),
        source: e,
    };
    let mut read_only = false;
    let store: Arc<dyn ObjectStore> = match parsed.scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url);
            for (k, v) in &s.options {
                let key: AmazonS3ConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(url, format!("unknown storage option `{k}` for s3")))?;
                b = b.with_config(key, v);
            }
            // A plain-HTTP endpoint (a local emulator) is what the user asked for: allow it.
            let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            Arc::new(b.with_retry(retry).build().map_err(store_err)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url);
            for (k, v) in &s.options {
                let key: GoogleConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(url, format!("unknown storage option `{k}` for gs")))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.with_retry(retry).build().map_err(store_err)?)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
            for (k, v) in &s.options {
                let key: AzureConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(url, format!("unknown storage option `{k}` for az")))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.with_retry(retry).build().map_err(store_err)?)
        }
        "http" | "https" => {
            read_only = true;
            let mut b = HttpBuilder::new().with_url(parsed.origin);
            for (k, v) in &s.options {
                let key: ClientConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(url, format!("unknown storage option `{k}` for https")))?;
                b = b.with_config(key, v);
            }
            if parsed.scheme == "http" {
                b = b.with_config(ClientConfigKey::AllowHttp, "true");
            }
            Arc::new(b.with_retry(retry).build().map_err(store_err)?)
        }
        other => return Err(bad(url, format!("unsupported scheme `{other}`"))),
    };
    let prefix =
        object_store::path::Path::parse(parsed.path.trim_matches('/')).map_err(|e| bad(url, e))?;
    Ok(Remote::new(
        url.trim_end_matches('/'),
        store,
        prefix,
        read_only,
        s,
    ))
}

/// Just enough URL splitting for the schemes above (object_store parses the rest itself).
mod url_parts {
    pub struct Parts<'a> {
        pub scheme: &'a str,
        /// `scheme://host[:port]`
        pub origin: &'a str,
        /// The path after the bucket (cloud schemes) or after the origin (http).
        pub path: &'a str,
    }

    pub fn split(url: &str) -> Option<Parts<'_>> {
        let (scheme, rest) = url.split_once("://")?;
        let host_end = rest.find('/').unwrap_or(rest.len());
        if host_end == 0 {
            return None;
        }
        let origin = &url[..scheme.len() + 3 + host_end];
        Some(Parts {
            scheme,
            origin,
            path: &rest[host_end..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_local_and_urls_split() {
        assert!(matches!(
            Location::parse("data/shards").unwrap(),
            Location::Local(_)
        ));
        let p = url_parts::split("s3://bucket/a/b/").unwrap();
        assert_eq!((p.scheme, p.origin, p.path), ("s3", "s3://bucket", "/a/b/"));
        let p = url_parts::split("https://host:8080/x").unwrap();
        assert_eq!((p.origin, p.path), ("https://host:8080", "/x"));
        assert!(url_parts::split("s3:///x").is_none());
    }
}
