//! Texts and their vectors: every distinct text (see [`crate::texts`]) is embedded once,
//! whatever the number of rows (or roles: anchor and candidate) it appears in.

use std::ops::Range;

use encoder::SentenceEncoder;

use crate::error::Result;
use crate::texts::TextStore;

/// Texts read by position, a range at a time: what [`crate::Embedder`] embeds.
pub trait TextList: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Texts `range`, in order, into `out` (replaced).
    fn read(&self, range: Range<usize>, out: &mut Vec<String>) -> Result<()>;
}

// For slices behind a reference (`&&[T]` is a `&dyn TextList`; `&[T]` cannot be one).
impl<T: AsRef<str> + Sync> TextList for &[T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn read(&self, range: Range<usize>, out: &mut Vec<String>) -> Result<()> {
        out.clear();
        out.extend(self[range].iter().map(|t| t.as_ref().to_owned()));
        Ok(())
    }
}

impl<T: AsRef<str> + Sync> TextList for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn read(&self, range: Range<usize>, out: &mut Vec<String>) -> Result<()> {
        self.as_slice().read(range, out)
    }
}

impl TextList for TextStore {
    fn len(&self) -> usize {
        TextStore::len(self)
    }
    fn read(&self, range: Range<usize>, out: &mut Vec<String>) -> Result<()> {
        TextStore::read(self, range, out)
    }
}

/// One L2-normalised vector per row, row-major: dot products are cosine similarities.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn new(dim: usize) -> Self {
        Embeddings {
            dim,
            data: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Rows `range` as one contiguous slice.
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[f32] {
        &self.data[range.start * self.dim..range.end * self.dim]
    }

    /// `rows` zero vectors.
    pub fn zeros(rows: usize, dim: usize) -> Self {
        Embeddings {
            dim,
            data: vec![0.0; rows * dim],
        }
    }

    /// Appends one vector, scaled to unit length (a zero vector stays zero).
    pub fn push_normalized(&mut self, v: &[f32]) {
        let i = self.rows();
        self.data.resize((i + 1) * self.dim, 0.0);
        self.set_normalized(i, v);
    }

    /// Sets row `i` to `v` scaled to unit length.
    pub fn set_normalized(&mut self, i: usize, v: &[f32]) {
        assert_eq!(
            v.len(),
            self.dim,
            "vector of {} dims into {}",
            v.len(),
            self.dim
        );
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        // As torch's F.normalize (which sentence-transformers calls): divide by max(norm, eps).
        let scale = 1.0 / norm.max(1e-12);
        let row = &mut self.data[i * self.dim..(i + 1) * self.dim];
        for (d, x) in row.iter_mut().zip(v) {
            *d = x * scale;
        }
    }
}

/// The dot product of two equal-length vectors, summed in 16 lanes then pairwise: an order
/// fixed in the source, so the same on every CPU, that the compiler can vectorise (a
/// one-by-one sum cannot be reordered).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = (ca.remainder().iter().zip(cb.remainder()))
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; LANES];
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// How texts are turned into vectors.
#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    /// Sequences per forward pass.
    pub batch_size: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { batch_size: 64 }
    }
}

/// Texts per encoder call: sorting by length happens inside one; this size already groups
/// lengths well, and token ids never pile up for a whole corpus.
pub const CHUNK: usize = 8192;

/// The encoder's vectors of `texts`, in order (as it returns them: not re-normalised).
pub fn encode(
    encoder: &SentenceEncoder,
    texts: &[&str],
    options: EmbedOptions,
) -> Result<Vec<Vec<f32>>> {
    let ids = encoder.tokenize(texts)?;
    Ok(encoder.encode_ids(&ids, options.batch_size, &schemas::NoProgress)?)
}

#[cfg(test)]
mod tests {
    use super::dot;

    #[test]
    fn dot_agrees_with_a_double_precision_sum_at_every_length() {
        for len in 0..100 {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.4)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 104_729) % 17) as f32 / 17.0 - 0.6)
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "len {len}: {got} vs {want}"
            );
        }
    }
}
