//! Loss and gradients of one batch, either in one graph or GradCache-style in mini-batches.
//!
//! GradCache (Gao et al. 2021; sentence-transformers' `CachedMultipleNegativesRankingLoss`):
//! 1. embed every mini-batch without a graph, remembering the dropout RNG before each one;
//! 2. compute the full-batch loss on those (detached) embeddings and its gradient w.r.t. them;
//! 3. re-embed each mini-batch with a graph, replaying its dropout masks from the remembered RNG,
//!    and backpropagate `sum(embedding · cached_gradient)`, accumulating parameter gradients.
//!
//! The loss and gradients equal the full-batch ones (up to float summation order), with the
//! activation memory of one mini-batch.

use candle_core::{Tensor, Var};
use encoder::DropoutRng;
use loader::Column;

use crate::collective::Collective;
use crate::error::{Ctx, Result};
use crate::loss::{mnrl, LossKind};
use crate::model::Trainable;

#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    pub kind: LossKind,
    pub scale: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: LossKind::Symmetric,
            scale: 20.0,
        }
    }
}

/// The token columns of one batch: anchor, positive, and any number of negative columns.
pub struct Columns<'a> {
    pub anchor: &'a Column,
    pub positive: &'a Column,
    /// None in pair batches, one in triplet batches, N for N-negative datasets.
    pub negatives: Vec<&'a Column>,
}

impl<'a> Columns<'a> {
    pub fn of(batch: &'a loader::Batch) -> Self {
        Columns {
            anchor: &batch.anchor,
            positive: &batch.positive,
            negatives: batch.negatives.iter().collect(),
        }
    }

    /// A pair batch's columns.
    pub fn pair(anchor: &'a Column, positive: &'a Column) -> Self {
        Columns {
            anchor,
            positive,
            negatives: Vec::new(),
        }
    }

    /// Every column in loss order: anchor, positive, negatives. Column `i`'s GradCache chunks
    /// and (per-chunk) dropout streams are keyed by `i`.
    fn list(&self) -> Vec<&'a Column> {
        let mut v = vec![self.anchor, self.positive];
        v.extend(&self.negatives);
        v
    }
}

pub struct StepGrads {
    pub loss: f64,
    /// One gradient per parameter, in `Trainable::names` order (zeros where none flowed).
    pub grads: Vec<Tensor>,
}

/// Rows `start..start+len` of a column, cut to the longest real row among them (padding beyond
/// it changes nothing: masked keys, masked pooling).
fn chunk(col: &Column, start: usize, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let ids = col.ids.narrow(0, start, len)?;
    let mask = col.mask.narrow(0, start, len)?;
    let longest = mask
        .to_dtype(candle_core::DType::F32)?
        .sum(1)?
        .max(0)?
        .to_scalar::<f32>()? as usize;
    let t = longest.max(1).min(ids.dims()[1]);
    Ok((ids.narrow(1, 0, t)?, mask.narrow(1, 0, t)?))
}

/// Rows per length bucket in the one-graph path. On the CPU, one forward takes the whole
/// column: its fused attention runs over each sequence's own tokens, so padding costs nothing,
/// and a forward's fixed costs (the embedding table's gradient alone is 11.7M floats) are paid
/// once. On a GPU each bucket is a round of kernel launches and attention runs per group of
/// similar lengths; buckets of 128 rows keep the products big.
fn bucket_rows(device: &candle_core::Device) -> usize {
    if device.is_cpu() {
        usize::MAX
    } else {
        128
    }
}

/// One column's embeddings with a graph, computed over rows sorted by length in buckets of
/// [`bucket_rows`], each cut to its own longest row, then put back in batch order. Same vectors as one
/// padded forward (padding is masked everywhere), without the compute a batch padded to its one
/// long row wastes (attention is quadratic in the padded length).
fn embed_bucketed(
    model: &Trainable,
    col: &Column,
    mut rng: Option<&mut DropoutRng>,
) -> Result<Tensor> {
    let n = col.ids.dims()[0];
    let bucket = bucket_rows(col.ids.device());
    if n <= bucket {
        let (ids, mask) = chunk(col, 0, n).ctx("trimming padding")?;
        return model.embed(&ids, &mask, rng).ctx("forward");
    }
    let lens: Vec<u32> = col
        .mask
        .to_dtype(candle_core::DType::U32)
        .and_then(|m| m.sum(1))
        .and_then(|s| s.to_vec1::<u32>())
        .ctx("row lengths")?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Stable: equal lengths keep batch order, so the bucketing is deterministic.
    order.sort_by_key(|&i| lens[i as usize]);
    let device = col.ids.device();
    let perm = Tensor::new(order.as_slice(), device).ctx("bucketing")?;
    let sorted = Column {
        ids: col.ids.index_select(&perm, 0).ctx("bucketing")?,
        mask: col.mask.index_select(&perm, 0).ctx("bucketing")?,
    };
    let mut parts = Vec::new();
    for start in (0..n).step_by(bucket) {
        let len = bucket.min(n - start);
        let (ids, mask) = chunk(&sorted, start, len).ctx("trimming padding")?;
        parts.push(
            model
                .embed(&ids, &mask, rng.as_deref_mut())
                .ctx("forward")?,
        );
    }
    let mut inverse = vec![0u32; n];
    for (pos, &row) in order.iter().enumerate() {
        inverse[row as usize] = pos as u32;
    }
    let inverse = Tensor::new(inverse.as_slice(), device).ctx("bucketing")?;
    Tensor::cat(&parts, 0)
        .and_then(|e| e.index_select(&inverse, 0))
        .ctx("bucketing")
}

/// Rows `start..start+len` of a column embedded as [`embed_bucketed`] does: a GradCache chunk
/// (or a rank's whole slice) of short rows does not pay for its longest row's padding.
fn embed_rows(
    model: &Trainable,
    col: &Column,
    start: usize,
    len: usize,
    rng: Option<&mut DropoutRng>,
) -> Result<Tensor> {
    let rows = Column {
        ids: col.ids.narrow(0, start, len).ctx("chunk rows")?,
        mask: col.mask.narrow(0, start, len).ctx("chunk rows")?,
    };
    embed_bucketed(model, &rows, rng)
}

fn collect(model: &Trainable, store: &candle_core::backprop::GradStore) -> Result<Vec<Tensor>> {
    model
        .vars
        .iter()
        .zip(&model.names)
        .map(|(v, n)| match store.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => v.as_tensor().zeros_like().ctx(n),
        })
        .collect()
}

/// Loss and parameter gradients for one batch. `mini_batch: None` (or ≥ the batch) builds one
/// graph; otherwise GradCache with chunks of `mini_batch` rows. `rng: None` disables dropout.
pub fn loss_and_grads(
    model: &Trainable,
    cols: &Columns,
    loss: LossConfig,
    mini_batch: Option<usize>,
    mut rng: Option<&mut DropoutRng>,
) -> Result<StepGrads> {
    let rows = cols.anchor.ids.dims()[0];
    let m = mini_batch.unwrap_or(rows).max(1);
    if m >= rows {
        let mut embs = Vec::new();
        for col in cols.list() {
            embs.push(embed_bucketed(model, col, rng.as_deref_mut())?);
        }
        let l = mnrl(&embs[0], &embs[1], &embs[2..], loss.scale, loss.kind).ctx("loss")?;
        let store = l.backward().ctx("backward")?;
        return Ok(StepGrads {
            loss: l.to_scalar::<f32>().ctx("loss")? as f64,
            grads: collect(model, &store)?,
        });
    }

    // 1. Embed without a graph, remembering each chunk's RNG.
    let dropout = rng.map_or(Dropout::Off, Dropout::Stream);
    let (pieces, embs) = embed_pieces(model, cols, m, dropout)?;

    // 2. Full-batch loss on leaf copies of the embeddings; their gradients are the cache.
    let leaves: Vec<Var> = embs
        .iter()
        .map(|parts| Var::from_tensor(&Tensor::cat(parts, 0)?))
        .collect::<candle_core::Result<_>>()
        .ctx("GradCache embeddings")?;
    let (l, store) = loss_on_leaves(&leaves, &loss, "loss")?;
    let cached: Vec<Tensor> = leaves
        .iter()
        .map(|v| {
            store
                .get(v.as_tensor())
                .cloned()
                .map_or_else(|| v.as_tensor().zeros_like(), Ok)
        })
        .collect::<candle_core::Result<_>>()
        .ctx("GradCache gradients")?;

    // 3. Re-embed each chunk with a graph and the same dropout masks; accumulate.
    let grads = backprop_pieces(model, cols, pieces, &cached)?;
    Ok(StepGrads {
        loss: l.to_scalar::<f32>().ctx("loss")? as f64,
        grads,
    })
}

/// One GradCache chunk: rows `start..start+len` of column `col`, and the dropout RNG before it.
struct Piece {
    col: usize,
    start: usize,
    len: usize,
    rng: Option<DropoutRng>,
}

/// The loss over leaf copies of the embeddings and its backward: the leaves' gradients are the
/// GradCache (one process or the gathered global batch).
fn loss_on_leaves(
    leaves: &[Var],
    loss: &LossConfig,
    what: &'static str,
) -> Result<(Tensor, candle_core::backprop::GradStore)> {
    // Every negative column's leaf, so each gets its own cached gradient.
    let negatives: Vec<Tensor> = leaves[2..].iter().map(|v| v.as_tensor().clone()).collect();
    let l = mnrl(&leaves[0], &leaves[1], &negatives, loss.scale, loss.kind).ctx(what)?;
    let store = l.backward().ctx("backward through the loss")?;
    Ok((l, store))
}

/// GradCache step 1: every column embedded without a graph in chunks of `m` rows.
fn embed_pieces(
    model: &Trainable,
    cols: &Columns,
    m: usize,
    mut dropout: Dropout,
) -> Result<(Vec<Piece>, Vec<Vec<Tensor>>)> {
    let mut pieces = Vec::new();
    let mut embs: Vec<Vec<Tensor>> = Vec::new();
    for (ci, col) in cols.list().into_iter().enumerate() {
        let n = col.ids.dims()[0];
        let mut parts = Vec::new();
        for start in (0..n).step_by(m) {
            let len = m.min(n - start);
            let mut own = dropout.chunk_rng(ci, start);
            let saved = own.clone().or_else(|| dropout.stream().cloned());
            let rng = own.as_mut().or(dropout.stream());
            let e = embed_rows(model, col, start, len, rng)?.detach();
            parts.push(e);
            pieces.push(Piece {
                col: ci,
                start,
                len,
                rng: saved,
            });
        }
        embs.push(parts);
    }
    Ok((pieces, embs))
}

/// Where the dropout masks of a batch come from.
pub enum Dropout<'a> {
    Off,
    /// One stream drawn in order through the batch (one process).
    Stream(&'a mut DropoutRng),
    /// Each chunk's masks from a stream of its own, seeded by (seed, step, column, the global
    /// batch row the chunk starts at): any world size whose chunks start at the same global rows
    /// (`--mini-batch-size` dividing every rank's slice) draws the very same masks, and a resume
    /// needs no RNG position.
    PerChunk {
        seed: u64,
        step: u64,
        /// Global row of this rank's first row (set by the data-parallel step).
        first_row: usize,
    },
}

impl Dropout<'_> {
    fn stream(&mut self) -> Option<&mut DropoutRng> {
        match self {
            Dropout::Stream(r) => Some(r),
            _ => None,
        }
    }

    /// The chunk's own stream (per-chunk seeding only).
    fn chunk_rng(&self, column: usize, start: usize) -> Option<DropoutRng> {
        let Dropout::PerChunk {
            seed,
            step,
            first_row,
        } = *self
        else {
            return None;
        };
        let row = (first_row + start) as u64;
        let mix = [step, column as u64, row]
            .iter()
            .fold(seed ^ 0x6A09_E667_F3BC_C908, |h, &x| splitmix(h ^ x));
        Some(DropoutRng::new(mix))
    }
}

/// SplitMix64's finaliser: well-spread seeds from small, structured inputs.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// GradCache step 3: re-embeds each chunk with a graph (replaying its dropout masks) and
/// backpropagates `sum(embedding · cached_gradient)`, summing parameter gradients.
fn backprop_pieces(
    model: &Trainable,
    cols: &Columns,
    pieces: Vec<Piece>,
    cached: &[Tensor],
) -> Result<Vec<Tensor>> {
    let all = cols.list();
    let mut grads: Option<Vec<Tensor>> = None;
    for p in pieces {
        let mut replay = p.rng;
        let e = embed_rows(model, all[p.col], p.start, p.len, replay.as_mut())?;
        let g = cached[p.col].narrow(0, p.start, p.len).ctx("GradCache")?;
        let surrogate = (e * g)
            .and_then(|x| x.sum_all())
            .ctx("GradCache surrogate")?;
        let store = surrogate.backward().ctx("GradCache backward")?;
        let these = collect(model, &store)?;
        grads = Some(match grads {
            None => these,
            Some(acc) => acc
                .iter()
                .zip(&these)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()
                .ctx("accumulating gradients")?,
        });
    }
    Ok(grads.expect("at least one chunk"))
}

/// Data-parallel loss and gradients. `cols` is this rank's contiguous slice of the global batch.
/// The detached embeddings of every column are all-gathered, the global-batch loss (the same
/// number on every rank) is differentiated w.r.t. this rank's rows, this rank's slice is
/// backpropagated GradCache-style (chunks of `mini_batch` rows, or the whole slice), and the
/// parameter gradients are summed over ranks: every rank ends with the global-batch gradient.
pub fn loss_and_grads_distributed(
    model: &Trainable,
    cols: &Columns,
    loss: LossConfig,
    mini_batch: Option<usize>,
    dropout: Dropout,
    coll: &dyn Collective,
) -> Result<StepGrads> {
    let StepGrads { loss, grads } =
        rank_loss_and_grads(model, cols, loss, mini_batch, dropout, coll)?;
    Ok(StepGrads {
        loss,
        grads: all_reduce_grads(grads, coll)?,
    })
}

/// [`loss_and_grads_distributed`] before the gradients are summed: the global-batch loss and
/// this rank's share of its gradient (the loss backpropagated through this rank's rows only;
/// the ranks' shares sum to the global-batch gradient).
pub fn rank_loss_and_grads(
    model: &Trainable,
    cols: &Columns,
    loss: LossConfig,
    mini_batch: Option<usize>,
    mut dropout: Dropout,
    coll: &dyn Collective,
) -> Result<StepGrads> {
    let rows = cols.anchor.ids.dims()[0];
    let m = mini_batch.unwrap_or(rows).clamp(1, rows.max(1));
    if let Dropout::PerChunk { first_row, .. } = &mut dropout {
        *first_row = coll.rank() * rows;
    }
    let (pieces, embs) = embed_pieces(model, cols, m, dropout)?;
    let leaves: Vec<Var> = embs
        .iter()
        .map(|parts| {
            let local = Tensor::cat(parts, 0).ctx("embeddings")?;
            Var::from_tensor(&coll.all_gather_rows(&local)?).ctx("gathered embeddings")
        })
        .collect::<Result<_>>()?;
    let (l, store) = loss_on_leaves(&leaves, &loss, "global-batch loss")?;
    let mine = coll.rank() * rows;
    let cached: Vec<Tensor> = leaves
        .iter()
        .map(|v| {
            let g = store
                .get(v.as_tensor())
                .cloned()
                .map_or_else(|| v.as_tensor().zeros_like(), Ok)?;
            g.narrow(0, mine, rows)
        })
        .collect::<candle_core::Result<_>>()
        .ctx("this rank's embedding gradients")?;
    Ok(StepGrads {
        loss: l.to_scalar::<f32>().ctx("loss")? as f64,
        grads: backprop_pieces(model, cols, pieces, &cached)?,
    })
}

/// Upstream's per-replica clipping ([`crate::optim::ClipScope::PerRank`]): clips this rank's
/// share of the gradient to `max_norm`, then averages the shares over ranks. Returns the
/// averaged gradients and the ranks' mean norm before clipping (the same on every rank).
pub fn clip_per_rank_and_average(
    mut grads: Vec<Tensor>,
    max_norm: f64,
    coll: &dyn Collective,
) -> Result<(Vec<Tensor>, f64)> {
    let norm = crate::optim::clip_grad_norm(&mut grads, max_norm).ctx("clipping")?;
    let w = coll.world_size() as f64;
    let norms = coll.all_gather(&[norm as f32])?;
    let mean_norm = norms.iter().map(|&n| n as f64).sum::<f64>() / w;
    let summed = all_reduce_grads(grads, coll)?;
    let averaged = summed
        .iter()
        .map(|g| g / w)
        .collect::<candle_core::Result<_>>()
        .ctx("averaging gradients")?;
    Ok((averaged, mean_norm))
}

/// Sums each parameter gradient over ranks (one flat buffer, one collective).
pub fn all_reduce_grads(grads: Vec<Tensor>, coll: &dyn Collective) -> Result<Vec<Tensor>> {
    coll.all_reduce_sum_tensors(grads)
}
