//! One advisory lock per output, held for a whole run, so two runs never write the same folder.
//!
//! The lock is an OS file lock (`flock` on Unix, `LockFileEx` on Windows, through
//! [`std::fs::File::try_lock`]) on a hidden sibling `.<name>.lock` of the output. The OS drops it
//! when the process dies, however it dies, so a stale lock from a killed run is simply taken over;
//! the pid written inside only serves the "in use by pid N" message. The lock file lives beside the
//! output, not inside it, because stages swap whole folders into place ([`crate::AtomicDir`]).
//!
//! Whoever holds the lock owns every temporary name of that output: [`OutputLock::acquire`]
//! removes what earlier, killed runs left (`.<name>.tmp-<pid>`, `.<name>.old-<pid>` beside the
//! output, and `.<file>.tmp-<pid>` inside it), whatever pid left them.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, SchemaError};

/// A held lock on one output (file or folder). Released when dropped.
#[derive(Debug)]
pub struct OutputLock {
    target: PathBuf,
    path: PathBuf,
    _file: fs::File,
}

/// The lock file of `target`: `.<name>.lock` beside it.
pub fn lock_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    parent_of(target).join(format!(".{name}.lock"))
}

fn parent_of(target: &Path) -> &Path {
    target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

impl OutputLock {
    /// Takes the lock of `target` (creating its parent folder), or fails at once with
    /// [`SchemaError::Locked`] naming the pid that holds it. Then removes stale temporary names.
    pub fn acquire(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        let parent = parent_of(&target);
        fs::create_dir_all(parent).map_err(|e| SchemaError::io(parent, e))?;
        let path = lock_path(&target);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| SchemaError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(SchemaError::Locked {
                    target,
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(SchemaError::io(&path, e)),
        }
        // Record who holds it (best effort: the lock itself is what protects the output).
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = writeln!(file, "{}", std::process::id());
        let lock = OutputLock {
            target,
            path,
            _file: file,
        };
        lock.remove_stale_temps()?;
        Ok(lock)
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes temporary names a killed run left: beside the target and directly inside it.
    fn remove_stale_temps(&self) -> Result<()> {
        let name = self
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = format!(".{name}.tmp-");
        let old = format!(".{name}.old-");
        remove_matching(parent_of(&self.target), |n| {
            n.starts_with(&tmp) || n.starts_with(&old)
        })?;
        if self.target.is_dir() {
            remove_matching(&self.target, is_temp_name)?;
        }
        Ok(())
    }
}

/// Whether `name` is one of [`crate::AtomicFile`] / [`crate::AtomicDir`]'s temporary names.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-"))
}

fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SchemaError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| SchemaError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !matches(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SchemaError::io(&path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_then_lock_is_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shards");
        let first = OutputLock::acquire(&target).unwrap();
        let err = OutputLock::acquire(&target).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("in use by pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        OutputLock::acquire(&target).expect("free after the holder is gone");
    }

    #[test]
    fn stale_temps_of_any_pid_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ds");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(dir.path().join(".ds.tmp-123456")).unwrap();
        fs::write(dir.path().join(".ds.old-9"), b"x").unwrap();
        fs::write(dir.path().join(".other.tmp-1"), b"x").unwrap();
        fs::write(target.join(".shard-00001.parquet.tmp-77"), b"half").unwrap();
        fs::write(target.join("shard-00000.parquet"), b"kept").unwrap();
        let _lock = OutputLock::acquire(&target).unwrap();
        assert!(!dir.path().join(".ds.tmp-123456").exists());
        assert!(!dir.path().join(".ds.old-9").exists());
        assert!(!target.join(".shard-00001.parquet.tmp-77").exists());
        assert!(dir.path().join(".other.tmp-1").exists(), "another output's");
        assert!(target.join("shard-00000.parquet").exists());
    }
}
