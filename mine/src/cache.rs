//! On-disk embedding cache, keyed by the model and each text's sha256, reused by later runs.
//!
//! Layout: `<dir>/<model weights sha256>/len-<max_seq_length>/` holding segments, each a NumPy
//! `seg-<id>.npy` (float32 `[n, dim]`, the encoder's vectors as it returns them) and
//! `seg-<id>.keys` (n × 32 bytes: sha256 of each text, same order). A run appends one segment
//! with the texts it had to embed; `<id>` is the sha256 of its keys, so runs never collide. The
//! `.npy` is committed before the `.keys`, and a segment counts only once its keys exist, so a
//! killed run leaves at most an ignored `.npy`. Truncation changes vectors, hence `len-N`; so
//! does a reduced-precision encoder (`--precision bf16|int8|tf32`), hence `len-N-<precision>`
//! for those (f32 keeps the plain `len-N`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use schemas::AtomicFile;
use sha2::{Digest, Sha256};

use crate::error::{MineError, Result};

pub type Key = [u8; 32];

pub fn key(text: &str) -> Key {
    Sha256::digest(text.as_bytes()).into()
}

/// Keys of many texts, on all threads.
pub fn keys<T: AsRef<str> + Sync>(texts: &[T]) -> Vec<Key> {
    texts.par_iter().map(|t| key(t.as_ref())).collect()
}

struct Segment {
    npy: PathBuf,
    /// Byte offset of row 0 in the `.npy`.
    data_start: u64,
}

/// The cache of one model at one truncation length.
pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
    segments: Vec<Segment>,
    /// Where each cached text's vector is: (segment, row).
    index: HashMap<Key, (u32, u32)>,
}

impl EmbeddingCache {
    /// Opens (creating) `<root>/<model_sha256>/len-<max_seq_length>[-<precision>]` and indexes
    /// its segments' keys (32 bytes per cached text; vectors stay on disk until asked for).
    pub fn open(
        root: &Path,
        model_sha256: &str,
        max_seq_length: usize,
        precision: encoder::Precision,
        dim: usize,
    ) -> Result<Self> {
        let folder = match precision {
            encoder::Precision::F32 => format!("len-{max_seq_length}"),
            p => format!("len-{max_seq_length}-{p}"),
        };
        let dir = root.join(model_sha256).join(folder);
        std::fs::create_dir_all(&dir).map_err(|e| MineError::io(&dir, e))?;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| MineError::io(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("seg-") && n.ends_with(".keys"))
            .collect();
        names.sort();
        let mut cache = EmbeddingCache {
            dir,
            dim,
            segments: Vec::new(),
            index: HashMap::new(),
        };
        for name in names {
            cache.add_segment(&name)?;
        }
        Ok(cache)
    }

    fn add_segment(&mut self, keys_name: &str) -> Result<()> {
        let keys_path = self.dir.join(keys_name);
        let npy = keys_path.with_extension("npy");
        let keys = std::fs::read(&keys_path).map_err(|e| MineError::io(&keys_path, e))?;
        let mut f = File::open(&npy).map_err(|e| MineError::io(&npy, e))?;
        let (rows, dim, data_start) = read_npy_header(&npy, &mut f)?;
        let len = f.metadata().map_err(|e| MineError::io(&npy, e))?.len();
        if len != data_start + (rows * dim * 4) as u64 {
            return Err(MineError::input(
                &npy,
                format!("cache segment of {len} bytes, its header says {rows}×{dim} floats"),
            ));
        }
        if dim != self.dim || rows * 32 != keys.len() {
            return Err(MineError::input(
                &npy,
                format!(
                    "cache segment of {rows}×{dim} with {} keys does not fit a {}-dim model",
                    keys.len() / 32,
                    self.dim
                ),
            ));
        }
        let seg = self.segments.len() as u32;
        for (row, k) in keys.chunks_exact(32).enumerate() {
            let k: Key = k.try_into().expect("32 bytes");
            self.index.entry(k).or_insert((seg, row as u32));
        }
        self.segments.push(Segment { npy, data_start });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Hands `found(i, vector)` the cached vector of each of `keys` that is cached (read from the
    /// segments in file order, one row buffer at a time) and returns whether each was.
    pub fn lookup(&self, keys: &[Key], found: &mut dyn FnMut(usize, &[f32])) -> Result<Vec<bool>> {
        let mut out = vec![false; keys.len()];
        let mut wanted: Vec<(u32, u32, usize)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| self.index.get(k).map(|&(s, r)| (s, r, i)))
            .collect();
        wanted.sort_unstable();
        let row_bytes = self.dim * 4;
        let mut buf = vec![0u8; row_bytes];
        let mut v = vec![0f32; self.dim];
        for group in wanted.chunk_by(|a, b| a.0 == b.0) {
            let seg = &self.segments[group[0].0 as usize];
            let mut f = File::open(&seg.npy).map_err(|e| MineError::io(&seg.npy, e))?;
            for &(_, row, i) in group {
                f.seek(SeekFrom::Start(
                    seg.data_start + row as u64 * row_bytes as u64,
                ))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| MineError::io(&seg.npy, e))?;
                for (x, b) in v.iter_mut().zip(buf.chunks_exact(4)) {
                    *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
                found(i, &v);
                out[i] = true;
            }
        }
        Ok(out)
    }

    /// Adds one segment holding `vectors` under `keys` (texts already cached are skipped).
    pub fn store(&mut self, keys: &[Key], vectors: &[Vec<f32>]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<usize> = (0..keys.len())
            .filter(|&i| !self.index.contains_key(&keys[i]) && seen.insert(keys[i]))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut key_bytes = Vec::with_capacity(fresh.len() * 32);
        for &i in &fresh {
            key_bytes.extend_from_slice(&keys[i]);
        }
        let id = hex::encode(&Sha256::digest(&key_bytes)[..12]);
        let npy = self.dir.join(format!("seg-{id}.npy"));
        let keys_path = self.dir.join(format!("seg-{id}.keys"));
        let mut f = AtomicFile::create(&npy)?;
        let header = npy_header(fresh.len(), self.dim);
        f.write_all(&header).map_err(|e| MineError::io(&npy, e))?;
        for &i in &fresh {
            assert_eq!(vectors[i].len(), self.dim, "vector of another size");
            for x in &vectors[i] {
                f.write_all(&x.to_le_bytes())
                    .map_err(|e| MineError::io(&npy, e))?;
            }
        }
        f.commit()?;
        AtomicFile::write_all(&keys_path, &key_bytes)?;
        self.add_segment(&format!("seg-{id}.keys"))
    }
}

/// A NumPy v1.0 header for a C-order little-endian float32 `[rows, dim]` array.
fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + dict + '\n', padded to a multiple of 64.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// `(rows, dim, data offset)` of a float32 2-D `.npy` this module wrote.
fn read_npy_header(path: &Path, f: &mut File) -> Result<(usize, usize, u64)> {
    let bad = |m: &str| MineError::input(path, format!("not a cache segment: {m}"));
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre).map_err(|e| MineError::io(path, e))?;
    if &pre[..8] != b"\x93NUMPY\x01\x00" {
        return Err(bad("no NumPy v1.0 magic"));
    }
    let len = u16::from_le_bytes([pre[8], pre[9]]) as usize;
    let mut dict = vec![0u8; len];
    f.read_exact(&mut dict)
        .map_err(|e| MineError::io(path, e))?;
    let dict = String::from_utf8_lossy(&dict);
    if !dict.contains("'descr': '<f4'") || !dict.contains("'fortran_order': False") {
        return Err(bad("not C-order float32"));
    }
    let shape = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    match dims[..] {
        [rows, dim] => Ok((rows, dim, 10 + len as u64)),
        _ => Err(bad("not 2-D")),
    }
}
