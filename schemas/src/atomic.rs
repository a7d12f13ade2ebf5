//! Write-then-rename, so a crash never leaves a file or folder that looks finished.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, SchemaError};

fn temp_sibling(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = target.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!(".{name}.{tag}-{}", std::process::id()))
}

/// A file written under a hidden temporary name and renamed onto its target by [`AtomicFile::commit`].
/// Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<fs::File>>,
}

impl AtomicFile {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| SchemaError::io(parent, e))?;
        }
        let temp = temp_sibling(&target, "tmp");
        let file = fs::File::create(&temp).map_err(|e| SchemaError::io(&temp, e))?;
        Ok(AtomicFile {
            target,
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, fsyncs and renames onto the target.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer
            .into_inner()
            .map_err(|e| SchemaError::io(&self.temp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SchemaError::io(&self.temp, e))?;
        drop(file);
        fs::rename(&self.temp, &self.target).map_err(|e| SchemaError::io(&self.target, e))
    }

    /// Writes `bytes` to `target` atomically in one call.
    pub fn write_all(target: impl Into<PathBuf>, bytes: &[u8]) -> Result<()> {
        let mut file = AtomicFile::create(target)?;
        file.write_all(bytes)
            .map_err(|e| SchemaError::io(&file.temp, e))?;
        file.commit()
    }

    /// Serialises `value` as pretty JSON to `target` atomically.
    pub fn write_json<T: serde::Serialize>(target: impl Into<PathBuf>, value: &T) -> Result<()> {
        let target = target.into();
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| SchemaError::Json {
            path: target.clone(),
            source: e,
        })?;
        bytes.push(b'\n');
        AtomicFile::write_all(target, &bytes)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A folder built under a hidden temporary name and swapped onto its target by [`AtomicDir::commit`]:
/// a rerun replaces a previous output whole, and readers never see a half-built folder.
/// Dropped without commit, the temporary folder is removed.
pub struct AtomicDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        let temp = temp_sibling(&target, "tmp");
        if temp.exists() {
            fs::remove_dir_all(&temp).map_err(|e| SchemaError::io(&temp, e))?;
        }
        fs::create_dir_all(&temp).map_err(|e| SchemaError::io(&temp, e))?;
        Ok(AtomicDir {
            target,
            temp,
            committed: false,
        })
    }

    /// Where files go while the folder is being built.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished folder onto the target, replacing any previous one.
    pub fn commit(mut self) -> Result<()> {
        let old = temp_sibling(&self.target, "old");
        let had_old = self.target.exists();
        if had_old {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(|e| SchemaError::io(&old, e))?;
            }
            fs::rename(&self.target, &old).map_err(|e| SchemaError::io(&self.target, e))?;
        }
        fs::rename(&self.temp, &self.target).map_err(|e| SchemaError::io(&self.target, e))?;
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&old).map_err(|e| SchemaError::io(&old, e))?;
        }
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn committed_dir_replaces_previous_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ds");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("stale.parquet"), b"x").unwrap();
        let d = AtomicDir::create(&target).unwrap();
        fs::write(d.path().join("new.parquet"), b"y").unwrap();
        assert!(
            target.join("stale.parquet").exists(),
            "old output stays until commit"
        );
        d.commit().unwrap();
        assert!(!target.join("stale.parquet").exists());
        assert_eq!(fs::read(target.join("new.parquet")).unwrap(), b"y");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp folders left"
        );
    }
}
