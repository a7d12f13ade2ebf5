//! The source cache: `<dest>/<source>/<file>` plus a completion record `<dest>/<source>/.prep-download.json`
//! written only after every file of the source is finished and verified, and every archive among
//! them unpacked into `<dest>/<source>/<archive stem>/`. `prep ingest` trusts that record, never a
//! directory listing, so partial files, half-unpacked archives and half-downloaded sources are
//! never ingested.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::download::{Downloader, FileSpec};
use crate::error::{FetchError, Result};
use crate::progress::MultiProgress;
use crate::unpack::{unpack, ArchiveFormat, Cap};

/// The completion record's name inside a source folder.
pub const COMPLETE_FILE: &str = ".prep-download.json";

/// One file of a source as the catalogue describes it, in fetch's own terms (the binary maps
/// `ingest::catalogue` entries onto this, so fetch does not depend on ingest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceFile {
    /// Path inside the source folder (may contain `/`; never `..`).
    pub name: String,
    pub url: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Set for archives: unpacked after verification into
    /// [`ArchiveFormat::unpacked_name`], which is what [`cached_inputs`] returns for them.
    pub unpack: Option<ArchiveFormat>,
}

/// What `prep download` finished, as recorded in [`COMPLETE_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedSource {
    pub source: String,
    pub files: Vec<CompletedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedFile {
    pub name: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
    /// For an archive: the folder (inside the source folder) it was unpacked into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<String>,
}

/// `~/.cache/prep` unless `XDG_CACHE_HOME` says otherwise; the default of `--dest`.
pub fn default_dest() -> PathBuf {
    default_dest_from(|k| std::env::var_os(k).map(PathBuf::from))
}

/// [`default_dest`] with the environment passed in, so it can be tested without touching it.
pub fn default_dest_from(get: impl Fn(&str) -> Option<PathBuf>) -> PathBuf {
    let non_empty = |k: &str| get(k).filter(|p| !p.as_os_str().is_empty());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return xdg.join("prep");
    }
    match non_empty("HOME") {
        Some(home) => home.join(".cache").join("prep"),
        None => PathBuf::from(".cache").join("prep"),
    }
}

/// Where `prep download --source <source> --dest <dest>` puts its files.
pub fn source_dir(source: &str, dest: &Path) -> PathBuf {
    dest.join(source)
}

fn check_name(name: &str) -> Result<()> {
    let p = Path::new(name);
    let ok = !name.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !crate::download::is_part(p)
        && name != COMPLETE_FILE;
    if ok {
        Ok(())
    } else {
        Err(FetchError::Corrupt {
            path: p.to_path_buf(),
            message: "not a plain relative file name for the cache".into(),
        })
    }
}

fn read_record(dir: &Path) -> Option<CompletedSource> {
    let bytes = fs::read(dir.join(COMPLETE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Downloads every file of `source` into `<dest>/<source>/`, unpacks its archives and records the
/// source as complete. Files already finished are kept (checked by size); `.part` files are
/// resumed; archives already unpacked from the same bytes are not unpacked again, and an archive
/// deleted after unpacking is not fetched again while its folder is there.
pub fn download_source(
    source: &str,
    files: &[SourceFile],
    dest: &Path,
    downloader: &Downloader,
    progress: &dyn MultiProgress,
) -> Result<CompletedSource> {
    let mut taken: Vec<String> = Vec::new();
    for f in files {
        check_name(&f.name)?;
        taken.push(f.name.clone());
    }
    for f in files {
        if let Some(format) = f.unpack {
            let u = format.unpacked_name(&f.name);
            check_name(&u)?;
            if taken.contains(&u) {
                return Err(FetchError::Corrupt {
                    path: PathBuf::from(&u),
                    message: format!("`{}` would unpack onto another file of the source", f.name),
                });
            }
            taken.push(u);
        }
    }
    let dir = source_dir(source, dest);
    fs::create_dir_all(&dir).map_err(|e| FetchError::io(&dir, e))?;
    let previous = read_record(&dir);
    let previous_of = |f: &SourceFile| {
        previous
            .as_ref()
            .and_then(|p| p.files.iter().find(|c| c.name == f.name && c.url == f.url))
    };
    // The source is incomplete from here until every file is verified (and unpacked) again.
    let record_path = dir.join(COMPLETE_FILE);
    match fs::remove_file(&record_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FetchError::io(&record_path, e)),
    }
    // An archive removed after a complete unpack (to save disk) stays unpacked: no new fetch.
    let kept_unpacked = |f: &SourceFile| -> Option<CompletedFile> {
        let format = f.unpack?;
        let c = previous_of(f)?;
        let u = format.unpacked_name(&f.name);
        let published = f.size.is_none_or(|s| s == c.size)
            && f.sha256
                .as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&c.sha256));
        (published
            && c.unpacked.as_deref() == Some(u.as_str())
            && !dir.join(&f.name).exists()
            && dir.join(&u).is_dir())
        .then(|| c.clone())
    };
    let kept: Vec<Option<CompletedFile>> = files.iter().map(kept_unpacked).collect();
    let specs: Vec<FileSpec> = files
        .iter()
        .zip(&kept)
        .filter(|(_, k)| k.is_none())
        .map(|(f, _)| FileSpec {
            url: f.url.clone(),
            dest: dir.join(&f.name),
            size: f.size,
            sha256: f.sha256.clone(),
            headers: Vec::new(),
            label: None,
        })
        .collect();
    let mut done = downloader.fetch_all(&specs, progress)?.into_iter();
    let mut record = CompletedSource {
        source: source.to_owned(),
        files: Vec::with_capacity(files.len()),
    };
    let mut to_unpack: Vec<(PathBuf, ArchiveFormat, PathBuf)> = Vec::new();
    for (f, k) in files.iter().zip(kept) {
        if let Some(k) = k {
            record.files.push(k);
            continue;
        }
        let d = done.next().expect("one result per spec");
        let prev = previous_of(f).filter(|c| c.size == d.size);
        let sha256 = match d.sha256 {
            Some(s) => s,
            // Kept from an earlier run: reuse its recorded hash when the file is unchanged.
            None => match prev {
                Some(c) => c.sha256.clone(),
                None => schemas::sha256_file(&d.path).map_err(|e| FetchError::Corrupt {
                    path: d.path.clone(),
                    message: e.to_string(),
                })?,
            },
        };
        if let Some(expected) = f.sha256.as_deref() {
            if !expected.eq_ignore_ascii_case(&sha256) {
                return Err(FetchError::ChecksumMismatch {
                    url: f.url.clone(),
                    path: d.path,
                    expected: expected.to_owned(),
                    actual: sha256,
                });
            }
        }
        let unpacked = f.unpack.map(|format| {
            let u = format.unpacked_name(&f.name);
            // Unpacked before from these very bytes: the folder only gets its name when complete.
            let current = !d.fetched
                && prev.is_some_and(|c| c.sha256 == sha256 && c.unpacked.as_deref() == Some(&u))
                && dir.join(&u).is_dir();
            if !current {
                to_unpack.push((d.path.clone(), format, dir.join(&u)));
            }
            u
        });
        record.files.push(CompletedFile {
            name: f.name.clone(),
            url: f.url.clone(),
            size: d.size,
            sha256,
            unpacked,
        });
    }
    unpack_all(&to_unpack, downloader.config(), progress)?;
    schemas::AtomicFile::write_json(&record_path, &record).map_err(|e| FetchError::Corrupt {
        path: record_path.clone(),
        message: e.to_string(),
    })?;
    Ok(record)
}

/// Unpacks archives with at most `jobs` at once; every one is tried even when another fails.
fn unpack_all(
    jobs: &[(PathBuf, ArchiveFormat, PathBuf)],
    cfg: &crate::DownloadConfig,
    progress: &dyn MultiProgress,
) -> Result<()> {
    let workers = cfg.jobs;
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<(usize, FetchError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((archive, format, target)) = jobs.get(i) else {
                    break;
                };
                let name = archive.file_name().unwrap_or_default().to_string_lossy();
                let bar = progress.file(&format!("unpack {name}"));
                let cap = match cfg.max_unpacked {
                    Some(bytes) => Ok(Cap::given(bytes)),
                    None => Cap::default_for(archive),
                };
                let r = cap.and_then(|cap| unpack(archive, *format, target, &cap, bar.as_ref()));
                bar.message(match &r {
                    Ok(()) => "unpacked",
                    Err(_) => "unpack failed",
                });
                bar.finish();
                if let Err(e) = r {
                    errors.lock().unwrap().push((i, e));
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap();
    errors.sort_by_key(|(i, _)| *i);
    let mut errors: Vec<FetchError> = errors.into_iter().map(|(_, e)| e).collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.pop().unwrap()),
        failed => {
            let first = Box::new(errors.remove(0));
            Err(FetchError::Several {
                failed,
                total: jobs.len(),
                first,
                all: errors,
            })
        }
    }
}

/// What `prep download --source <source> --dest <dest>` left for ingest, in catalogue order: each
/// plain or gzip file, and for each archive the folder it was unpacked into. An error names the
/// command to run when the source is missing, incomplete or changed since.
pub fn cached_inputs(source: &str, dest: &Path) -> Result<Vec<PathBuf>> {
    let dir = source_dir(source, dest);
    let command = format!("prep download --source {source} --dest {}", dest.display());
    let not_cached = |what: String| FetchError::NotCached {
        what,
        dir: dir.clone(),
        command: command.clone(),
    };
    let record = read_record(&dir).ok_or_else(|| not_cached(format!("source `{source}`")))?;
    let mut out = Vec::with_capacity(record.files.len());
    for f in &record.files {
        check_name(&f.name)?;
        if let Some(u) = &f.unpacked {
            // The archive itself may have been deleted to save disk; ingest reads the folder.
            check_name(u)?;
            let path = dir.join(u);
            if !path.is_dir() {
                return Err(not_cached(format!(
                    "`{u}/` (unpacked from `{}`) of source `{source}` (missing since download)",
                    f.name
                )));
            }
            out.push(path);
            continue;
        }
        let path = dir.join(&f.name);
        match fs::metadata(&path) {
            Ok(m) if m.len() == f.size => out.push(path),
            _ => {
                return Err(not_cached(format!(
                    "`{}` of source `{source}` (missing or changed since download)",
                    f.name
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dest_prefers_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        assert_eq!(
            default_dest_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            PathBuf::from("/x/prep")
        );
        assert_eq!(
            default_dest_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.cache/prep")
        );
        assert_eq!(default_dest_from(env(&[])), PathBuf::from(".cache/prep"));
    }

    #[test]
    fn cache_names_must_stay_inside_the_source_folder() {
        assert!(check_name("stackexchange/askubuntu.com.7z").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "",
            "a/../../b",
            "x.part",
            COMPLETE_FILE,
        ] {
            assert!(check_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn missing_source_names_the_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let err = cached_inputs("squad", dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "run `prep download --source squad --dest {}`",
                dir.path().display()
            )),
            "{err}"
        );
    }
}
