//! Unpacking downloaded archives (`.tar.gz`, `.7z`) into a folder beside them.
//!
//! The folder is built under a hidden temporary name and renamed onto its final name only when
//! every entry is written, so a folder with the final name is always complete; a crash leaves
//! only the temporary folder, which the next run removes. Entries are written by this module
//! (never by the archive crates' own extractors): only regular files and folders, at paths that
//! stay inside the folder, and no links, so no entry can write outside it.
//!
//! What an archive unpacks to is capped ([`default_cap`], or the caller's cap): a small archive
//! that expands without bound (a decompression bomb, or a damaged length) stops at the cap, and
//! what was written is removed. The unpack holds the target's lock ([`schemas::OutputLock`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use schemas::{OutputLock, Progress, Unit};

use crate::error::{FetchError, Result};

/// How a downloaded file is packed, when it must be unpacked before ingest can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A gzip-compressed tar archive (`.tar.gz`, `.tgz`).
    TarGz,
    /// A 7-Zip archive.
    SevenZip,
}

impl ArchiveFormat {
    /// The folder an archive named `name` unpacks into: the name without its archive suffix
    /// (`collection.tar.gz` → `collection`), or with `.d` appended when it has none.
    pub fn unpacked_name(self, name: &str) -> String {
        let suffixes: &[&str] = match self {
            ArchiveFormat::TarGz => &[".tar.gz", ".tgz", ".tar"],
            ArchiveFormat::SevenZip => &[".7z"],
        };
        for s in suffixes {
            if let Some(stem) = name.strip_suffix(s) {
                if !stem.is_empty() && !stem.ends_with('/') {
                    return stem.to_owned();
                }
            }
        }
        format!("{name}.d")
    }
}

/// How many times its own size an archive may unpack to by default. Text compresses about 3-10×
/// with gzip and up to ~15× with 7z's LZMA on XML, so real data stays well inside this.
pub const DEFAULT_RATIO: u64 = 32;

/// The least the default cap allows, so small archives of very compressible text still unpack.
pub const DEFAULT_FLOOR: u64 = 1 << 30;

/// The default cap on what an archive of `archive_size` bytes may unpack to:
/// [`DEFAULT_RATIO`] × its size, at least [`DEFAULT_FLOOR`].
pub fn default_cap(archive_size: u64) -> u64 {
    archive_size
        .saturating_mul(DEFAULT_RATIO)
        .max(DEFAULT_FLOOR)
}

/// A cap on the bytes written, and where it came from (for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub bytes: u64,
    pub origin: String,
}

impl Cap {
    /// [`default_cap`] of the archive at `archive` (its size on disk).
    pub fn default_for(archive: &Path) -> Result<Cap> {
        let size = fs::metadata(archive)
            .map_err(|e| FetchError::io(archive, e))?
            .len();
        Ok(Cap {
            bytes: default_cap(size),
            origin: format!(
                "{DEFAULT_RATIO} × the archive's {size} bytes, at least {DEFAULT_FLOOR}; \
                 raise it with `prep download --max-unpacked-gib`"
            ),
        })
    }

    /// A cap the user chose.
    pub fn given(bytes: u64) -> Cap {
        Cap {
            bytes,
            origin: "set by --max-unpacked-gib".into(),
        }
    }
}

/// Counts bytes written against a [`Cap`].
struct Budget<'a> {
    cap: &'a Cap,
    used: u64,
}

impl Budget<'_> {
    fn take(&mut self, archive: &Path, n: u64) -> Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.cap.bytes {
            return Err(too_large(archive, self.cap));
        }
        Ok(())
    }
}

fn too_large(archive: &Path, cap: &Cap) -> FetchError {
    FetchError::UnpackTooLarge {
        path: archive.to_path_buf(),
        limit: cap.bytes,
        origin: cap.origin.clone(),
    }
}

/// The hidden folder an unpack into `target` writes before it is complete.
pub fn unpacking_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.unpacking"))
}

/// Unpacks `archive` into the folder `target`, atomically: on success `target` holds every entry
/// (replacing whatever was there); on failure `target` is left as it was and the temporary
/// folder is removed. Writing more than `cap` bytes fails the same way. `bar` counts bytes
/// written. A second unpack into the same `target` meanwhile fails at once.
pub fn unpack(
    archive: &Path,
    format: ArchiveFormat,
    target: &Path,
    cap: &Cap,
    bar: &dyn Progress,
) -> Result<()> {
    let _lock = OutputLock::acquire(target).map_err(FetchError::InUse)?;
    // What a killed unpack left (we hold the lock, so no live run is writing it).
    let temp = unpacking_path(target);
    remove_dir(&temp)?;
    fs::create_dir_all(&temp).map_err(|e| FetchError::io(&temp, e))?;
    let label = format!(
        "unpack {}",
        archive.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut budget = Budget { cap, used: 0 };
    let result = match format {
        ArchiveFormat::TarGz => unpack_tar_gz(archive, &temp, &label, &mut budget, bar),
        ArchiveFormat::SevenZip => unpack_7z(archive, &temp, &label, &mut budget, bar),
    };
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&temp);
        return Err(e);
    }
    remove_dir(target)?;
    fs::rename(&temp, target).map_err(|e| FetchError::io(target, e))?;
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io(dir, e)),
    }
}

fn corrupt(archive: &Path, message: impl Into<String>) -> FetchError {
    FetchError::Corrupt {
        path: archive.to_path_buf(),
        message: message.into(),
    }
}

/// The archive's bytes are bad although the download was verified (no published checksum, or a
/// bad file published): only a fresh download can help.
fn damaged(archive: &Path, what: impl std::fmt::Display) -> FetchError {
    corrupt(
        archive,
        format!("damaged archive ({what}); nothing was unpacked: delete it and run `prep download` again"),
    )
}

/// `root` joined with an entry name from an archive, or `None` when the name is empty or would
/// leave `root` (`..`, an absolute path, a Windows drive or `\` separators hiding either).
fn safe_join(root: &Path, entry: &str) -> Option<PathBuf> {
    let normalized = entry.replace('\\', "/");
    let mut out = root.to_path_buf();
    let mut parts = 0;
    for c in Path::new(&normalized).components() {
        match c {
            Component::Normal(p) => {
                // `C:` survives as a Normal component on Unix; it names a drive elsewhere.
                if p.to_string_lossy().contains(':') {
                    return None;
                }
                out.push(p);
                parts += 1;
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (parts > 0).then_some(out)
}

fn unsafe_entry(archive: &Path, entry: &str) -> FetchError {
    corrupt(
        archive,
        format!("entry `{entry}` would be written outside the unpack folder; nothing was unpacked"),
    )
}

/// Writes one file's bytes, creating its parent folders, within the budget.
fn write_entry(
    archive: &Path,
    entry: &str,
    path: &Path,
    reader: &mut dyn Read,
    budget: &mut Budget,
    bar: &dyn Progress,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| FetchError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A read error here is the archive's fault (truncated, corrupt data, bad CRC).
            Err(e) => return Err(damaged(archive, format!("entry `{entry}`: {e}"))),
        };
        budget.take(archive, n as u64)?;
        out.write_all(&buf[..n])
            .map_err(|e| FetchError::io(path, e))?;
        bar.advance(n as u64);
    }
    out.flush().map_err(|e| FetchError::io(path, e))?;
    Ok(())
}

fn unpack_tar_gz(
    archive: &Path,
    temp: &Path,
    label: &str,
    budget: &mut Budget,
    bar: &dyn Progress,
) -> Result<()> {
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    bar.begin(label, None, Unit::Bytes);
    let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gz);
    let entries = tar
        .entries()
        .map_err(|e| damaged(archive, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(archive, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        match kind {
            // Metadata records, not files.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            _ => {}
        }
        let path = safe_join(temp, &name).ok_or_else(|| unsafe_entry(archive, &name))?;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                write_entry(archive, &name, &path, &mut entry, budget, bar)?;
            }
            T::Directory => fs::create_dir_all(&path).map_err(|e| FetchError::io(&path, e))?,
            other => {
                return Err(corrupt(
                    archive,
                    format!(
                        "entry `{name}` is a {other:?}, not a file or folder; links and devices are not unpacked"
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn unpack_7z(
    archive: &Path,
    temp: &Path,
    label: &str,
    budget: &mut Budget,
    bar: &dyn Progress,
) -> Result<()> {
    let mut reader = sevenz_rust2::ArchiveReader::open(archive, sevenz_rust2::Password::empty())
        .map_err(|e| damaged(archive, format!("not a readable 7z archive: {e}")))?;
    let total = reader
        .archive()
        .files
        .iter()
        .fold(0u64, |a, f| a.saturating_add(f.size()));
    // The sizes the archive declares: too large fails before anything is written. The bytes
    // actually written are counted too, whatever the headers say.
    if total > budget.cap.bytes {
        return Err(too_large(archive, budget.cap));
    }
    bar.begin(label, Some(total), Unit::Bytes);
    // Check every name before writing anything: a hostile archive fails without side effects.
    for f in &reader.archive().files {
        if safe_join(temp, f.name()).is_none() {
            return Err(unsafe_entry(archive, f.name()));
        }
    }
    // Our own errors travel through the crate's callback as a marker; the real one is kept here.
    let mut failed: Option<FetchError> = None;
    let r = reader.for_each_entries(|entry, data| {
        if entry.is_anti_item() {
            return Ok(true);
        }
        let path = safe_join(temp, entry.name()).expect("checked above");
        let step = if entry.is_directory() {
            fs::create_dir_all(&path).map_err(|e| FetchError::io(&path, e))
        } else {
            write_entry(archive, entry.name(), &path, data, budget, bar)
        };
        match step {
            Ok(()) => Ok(true),
            Err(e) => {
                failed = Some(e);
                Err(sevenz_rust2::Error::Other("stopped".into()))
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    r.map_err(|e| damaged(archive, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacked_names_drop_the_archive_suffix() {
        let t = ArchiveFormat::TarGz;
        assert_eq!(t.unpacked_name("collection.tar.gz"), "collection");
        assert_eq!(
            t.unpacked_name("yahoo_answers_csv.tgz"),
            "yahoo_answers_csv"
        );
        assert_eq!(t.unpacked_name("odd.bin"), "odd.bin.d");
        assert_eq!(t.unpacked_name(".tar.gz"), ".tar.gz.d");
        let z = ArchiveFormat::SevenZip;
        assert_eq!(
            z.unpacked_name("stackexchange/askubuntu.com.7z"),
            "stackexchange/askubuntu.com"
        );
    }

    #[test]
    fn entry_names_must_stay_inside() {
        let root = Path::new("/r");
        assert_eq!(
            safe_join(root, "a/b.txt"),
            Some(PathBuf::from("/r/a/b.txt"))
        );
        assert_eq!(safe_join(root, "./a"), Some(PathBuf::from("/r/a")));
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "..\\x",
            "C:\\x",
            "",
            ".",
        ] {
            assert_eq!(safe_join(root, bad), None, "{bad}");
        }
    }
}
