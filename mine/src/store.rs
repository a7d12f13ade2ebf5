//! Where a run's vectors live. Held in memory while they fit in the room the run's memory budget
//! leaves them ([`VectorStore::new`]: half of it, less the texts held); past it, written to an unnamed file (created in a folder the caller
//! names, its name removed at once) and read back a block at a time. Every search reads them
//! through [`Vectors`], blocked so that the same products are computed either way: a spilled
//! run writes the same bytes as an in-memory one.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::embed::Embeddings;
use crate::error::{MineError, Result};

/// Row-major unit vectors, read by block or by row list.
pub trait Vectors: Sync {
    fn dim(&self) -> usize;
    fn rows(&self) -> usize;
    /// Rows `range`, contiguous: borrowed in place, or read into `buf`.
    fn block<'s>(&'s self, range: Range<usize>, buf: &'s mut Vec<f32>) -> Result<&'s [f32]>;
    /// Rows `first + r` for each `r` of `rows`, in order, copied into `out` (replaced).
    fn gather(&self, rows: &[u32], first: usize, out: &mut Vec<f32>) -> Result<()>;
    /// Row `i`.
    fn row<'s>(&'s self, i: usize, buf: &'s mut Vec<f32>) -> Result<&'s [f32]> {
        self.block(i..i + 1, buf)
    }
}

impl Vectors for Embeddings {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        Embeddings::rows(self)
    }
    fn block<'s>(&'s self, range: Range<usize>, _: &'s mut Vec<f32>) -> Result<&'s [f32]> {
        Ok(self.slice(range))
    }
    fn gather(&self, rows: &[u32], first: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        for &r in rows {
            out.extend_from_slice(self.row(first + r as usize));
        }
        Ok(())
    }
}

/// Vectors in a file of native-endian `f32` rows that only this process can reach: its name is
/// removed as soon as it is created, so it goes away with the process, however that ends.
#[derive(Debug)]
pub struct SpilledVectors {
    file: File,
    /// The name it was created under (for error messages).
    path: PathBuf,
    rows: usize,
    dim: usize,
}

impl SpilledVectors {
    /// `rows` zero vectors of `dim` floats in a new file in `dir`.
    pub fn create(dir: &Path, rows: usize, dim: usize) -> Result<Self> {
        let (file, path) = unnamed_file(dir, "vectors.f32")?;
        file.set_len((rows * dim * 4) as u64)
            .map_err(|e| MineError::io(&path, e))?;
        Ok(SpilledVectors {
            file,
            path,
            rows,
            dim,
        })
    }

    /// Sets row `i` to `v` scaled to unit length (as [`Embeddings::set_normalized`]).
    pub fn set_normalized(&self, i: usize, v: &[f32]) -> Result<()> {
        let mut unit = Embeddings::zeros(1, self.dim);
        unit.set_normalized(0, v);
        let bytes: Vec<u8> = unit.data.iter().flat_map(|x| x.to_ne_bytes()).collect();
        self.file
            .write_all_at(&bytes, self.offset(i))
            .map_err(|e| MineError::io(&self.path, e))
    }

    fn offset(&self, row: usize) -> u64 {
        (row * self.dim * 4) as u64
    }

    /// Reads rows `range` into `out[at..]` (which must have room).
    fn read_into(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        assert!(range.end <= self.rows, "rows {range:?} of {}", self.rows);
        // SAFETY: any 4 bytes are a valid f32; the byte view covers exactly `out`.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len() * 4) };
        self.file
            .read_exact_at(bytes, self.offset(range.start))
            .map_err(|e| MineError::io(&self.path, e))
    }
}

impl Vectors for SpilledVectors {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn block<'s>(&'s self, range: Range<usize>, buf: &'s mut Vec<f32>) -> Result<&'s [f32]> {
        buf.clear();
        buf.resize(range.len() * self.dim, 0.0);
        self.read_into(range, buf)?;
        Ok(buf)
    }
    fn gather(&self, rows: &[u32], first: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.resize(rows.len() * self.dim, 0.0);
        // Runs of consecutive rows (kept rows, sorted hits) are read in one call each.
        let mut i = 0;
        while i < rows.len() {
            let mut j = i + 1;
            while j < rows.len() && rows[j] == rows[j - 1].wrapping_add(1) {
                j += 1;
            }
            let start = first + rows[i] as usize;
            let dst = &mut out[i * self.dim..j * self.dim];
            self.read_into(start..start + (j - i), dst)?;
            i = j;
        }
        Ok(())
    }
}

/// A new file in `dir` that only this process can reach: created under a hidden name
/// (`.prep-<pid>-<n>-<what>`, returned for error messages) that is removed at once.
pub(crate) fn unnamed_file(dir: &Path, what: &str) -> Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".prep-{}-{n}-{what}", std::process::id()));
    let io = |e| MineError::io(&path, e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    std::fs::remove_file(&path).map_err(io)?;
    Ok((file, path))
}

/// A run's vectors, in memory or spilled.
#[derive(Debug)]
pub enum VectorStore {
    Memory(Embeddings),
    Spilled(SpilledVectors),
}

impl VectorStore {
    /// `rows` zero vectors: in memory if they take at most `room` bytes (or there is no
    /// `spill_dir`), else in a file in `spill_dir`.
    pub fn new(rows: usize, dim: usize, room: usize, spill_dir: Option<&Path>) -> Result<Self> {
        match spill_dir {
            Some(dir) if rows * dim * 4 > room => Ok(VectorStore::Spilled(SpilledVectors::create(
                dir, rows, dim,
            )?)),
            _ => Ok(VectorStore::Memory(Embeddings::zeros(rows, dim))),
        }
    }

    pub fn is_spilled(&self) -> bool {
        matches!(self, VectorStore::Spilled(_))
    }

    pub fn set_normalized(&mut self, i: usize, v: &[f32]) -> Result<()> {
        match self {
            VectorStore::Memory(e) => {
                e.set_normalized(i, v);
                Ok(())
            }
            VectorStore::Spilled(s) => s.set_normalized(i, v),
        }
    }

    fn inner(&self) -> &dyn Vectors {
        match self {
            VectorStore::Memory(e) => e,
            VectorStore::Spilled(s) => s,
        }
    }
}

impl Vectors for VectorStore {
    fn dim(&self) -> usize {
        self.inner().dim()
    }
    fn rows(&self) -> usize {
        self.inner().rows()
    }
    fn block<'s>(&'s self, range: Range<usize>, buf: &'s mut Vec<f32>) -> Result<&'s [f32]> {
        self.inner().block(range, buf)
    }
    fn gather(&self, rows: &[u32], first: usize, out: &mut Vec<f32>) -> Result<()> {
        self.inner().gather(rows, first, out)
    }
}

/// Rows per super-block: how many of `per_row` bytes fit in half of `budget` beside `fixed`
/// bytes, rounded down to whole blocks of `block` rows (at least one block).
pub fn rows_within(budget: usize, per_row: usize, fixed: usize, block: usize) -> usize {
    let room = (budget / 2).saturating_sub(fixed);
    (room / per_row.max(1) / block).max(1).saturating_mul(block)
}
