//! Distinct texts, each stored once and known by its id (its first-seen position), so that the
//! rows they came from need not stay in memory: a run reads its input, keeps each distinct text
//! here, and reads the input again when it writes.
//!
//! A text is known by the first 128 bits of its sha256 (the embedding cache already keys texts
//! by sha256; two different texts share 128 bits with probability about n²/2¹²⁹, under 10⁻²⁰
//! for a billion texts). The texts themselves are held in memory up to a budget, then written
//! to an unnamed file (as the vectors are, see [`crate::store`]) and read back by id. What stays
//! in memory per text is its hash, its id and its end offset: about 50 bytes.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{MineError, Result};

/// Bytes of texts gathered before they are written to the spill file.
const WRITE_BUFFER: usize = 1 << 20;

/// Distinct texts in first-seen order; a text's id is its position.
#[derive(Debug, Default)]
pub struct TextStore {
    index: HashMap<u128, u32>,
    /// The end offset of each text in the concatenation of all texts.
    ends: Vec<u64>,
    /// The texts past `spill.written` (all of them while in memory).
    buf: Vec<u8>,
    spill: Option<Spill>,
    /// Bytes of texts held in memory before they go to a file in `spill_dir`.
    budget: usize,
    spill_dir: Option<PathBuf>,
}

#[derive(Debug)]
struct Spill {
    file: File,
    path: PathBuf,
    /// Bytes in the file: the texts before this offset are there, the rest in `buf`.
    written: u64,
}

fn key(text: &str) -> u128 {
    let digest = Sha256::digest(text.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

impl TextStore {
    /// A store that holds every text in memory.
    pub fn in_memory() -> Self {
        TextStore {
            budget: usize::MAX,
            ..Default::default()
        }
    }

    /// A store that holds up to `budget` bytes of texts in memory, the rest in an unnamed file
    /// in `spill_dir` (no `spill_dir`: all in memory).
    pub fn with_budget(budget: usize, spill_dir: Option<&Path>) -> Self {
        TextStore {
            budget,
            spill_dir: spill_dir.map(Path::to_owned),
            ..Default::default()
        }
    }

    /// The id of `text`, adding it if new.
    pub fn intern(&mut self, text: &str) -> Result<u32> {
        let k = key(text);
        if let Some(&id) = self.index.get(&k) {
            return Ok(id);
        }
        let id = u32::try_from(self.ends.len()).expect("more than 4 billion distinct texts");
        self.index.insert(k, id);
        self.buf.extend_from_slice(text.as_bytes());
        self.ends
            .push(self.end(self.ends.len()) + text.len() as u64);
        self.make_room()?;
        Ok(id)
    }

    /// The id of `text`, if it is stored.
    pub fn get(&self, text: &str) -> Option<u32> {
        self.index.get(&key(text)).copied()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Bytes of texts held in memory.
    pub fn held_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Text `id`.
    pub fn text(&self, id: u32) -> Result<String> {
        let mut out = Vec::with_capacity(1);
        self.read(id as usize..id as usize + 1, &mut out)?;
        Ok(out.pop().expect("one text"))
    }

    /// Texts `range`, in order, into `out` (replaced): one read from the file if spilled.
    pub fn read(&self, range: Range<usize>, out: &mut Vec<String>) -> Result<()> {
        out.clear();
        let (start, end) = (self.end(range.start), self.end(range.end));
        let bytes = self.bytes(start, end)?;
        let mut at = start;
        for i in range {
            let e = self.ends[i];
            let b = &bytes[(at - start) as usize..(e - start) as usize];
            out.push(String::from_utf8(b.to_vec()).expect("stored from a str"));
            at = e;
        }
        Ok(())
    }

    /// Where text `i` starts (the end of text `i - 1`).
    fn end(&self, i: usize) -> u64 {
        i.checked_sub(1).map_or(0, |j| self.ends[j])
    }

    /// Bytes `start..end` of the concatenated texts.
    fn bytes(&self, start: u64, end: u64) -> Result<std::borrow::Cow<'_, [u8]>> {
        let written = self.spill.as_ref().map_or(0, |s| s.written);
        if start >= written {
            let from = (start - written) as usize;
            return Ok(self.buf[from..from + (end - start) as usize].into());
        }
        let spill = self
            .spill
            .as_ref()
            .expect("bytes before `written` are in the file");
        let mut out = vec![0u8; (end - start) as usize];
        let in_file = (end.min(written) - start) as usize;
        spill
            .file
            .read_exact_at(&mut out[..in_file], start)
            .map_err(|e| MineError::io(&spill.path, e))?;
        let in_buf = out.len() - in_file;
        out[in_file..].copy_from_slice(&self.buf[..in_buf]);
        Ok(out.into())
    }

    /// Past the budget, moves the held texts to the spill file (created on first need).
    fn make_room(&mut self) -> Result<()> {
        let limit = match &self.spill {
            Some(_) => WRITE_BUFFER,
            None if self.spill_dir.is_some() => self.budget,
            None => return Ok(()),
        };
        if self.buf.len() <= limit {
            return Ok(());
        }
        if self.spill.is_none() {
            let dir = self.spill_dir.as_deref().expect("checked above");
            let (file, path) = crate::store::unnamed_file(dir, "texts")?;
            self.spill = Some(Spill {
                file,
                path,
                written: 0,
            });
        }
        let spill = self.spill.as_mut().expect("created above");
        spill
            .file
            .write_all_at(&self.buf, spill.written)
            .map_err(|e| MineError::io(&spill.path, e))?;
        spill.written += self.buf.len() as u64;
        self.buf.clear();
        self.buf.shrink_to(WRITE_BUFFER * 2);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("text {i} {}", "é".repeat(i % 7)))
            .collect()
    }

    #[test]
    fn a_spilled_store_gives_the_same_ids_and_texts_as_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut mem = TextStore::in_memory();
        let mut spilled = TextStore::with_budget(64, Some(dir.path()));
        let all = texts(5000);
        // Every text twice, the second time in another order.
        for t in all.iter().chain(all.iter().rev()) {
            assert_eq!(mem.intern(t).unwrap(), spilled.intern(t).unwrap());
        }
        assert!(spilled.is_spilled() && !mem.is_spilled());
        assert!(spilled.held_bytes() <= WRITE_BUFFER);
        assert_eq!(mem.len(), 5000);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill file has no name"
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for range in [0..5000, 0..1, 17..4321, 4999..5000, 30..30] {
            mem.read(range.clone(), &mut a).unwrap();
            spilled.read(range.clone(), &mut b).unwrap();
            assert_eq!(a, all[range.clone()], "{range:?}");
            assert_eq!(b, a, "{range:?}");
        }
        assert_eq!(spilled.text(4998).unwrap(), all[4998]);
        assert_eq!(spilled.get(&all[1234]), Some(1234));
        assert_eq!(spilled.get("not stored"), None);
    }
}
