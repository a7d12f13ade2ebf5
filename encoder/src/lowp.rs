//! bf16 and int8 weights for the packed CPU path ([`crate::cpu`]): `y = x · W + b` with `W`
//! stored in a low-precision format, packed once at load, and f32 accumulation.
//!
//! Layout: `W` (`[k, n]`) is cut into panels of [`NR`] = 16 output columns; inside a panel,
//! one 32-bit word per column holds the values of consecutive input rows: two bf16 values
//! (rows `2p, 2p+1`, low half first) or four int8 values (rows `4q..4q+3`, low byte first).
//! Those are the operand layouts of AVX-512's `vdpbf16ps` (bf16 pairs) and `vpdpbusd` (byte
//! quads), and the portable and AVX2 loops read the same words. The activations are converted
//! to the same words per forward (`k` padded with zeros).
//!
//! - bf16: weights and activations rounded to bf16 (nearest-even); the product of two bf16
//!   values is exact in f32, accumulated in f32. With AVX512_BF16 the inner step is one
//!   `vdpbf16ps`; elsewhere see the last paragraph (the portable loop widens each pair to f32).
//! - int8: symmetric per-output-column weight scales `sw[j] = max|W[:, j]| / 127` and dynamic
//!   activation scales per row and group of 32 inputs, `sa[r, g] = max|x[r, g]| / 127`;
//!   `q = round(v / s)` in [-127, 127]. Products accumulate exactly in i32 per group, each
//!   group's sum is scaled by `sa[r, g]` into an f32 accumulator, and `y = acc · sw[j] + b`.
//!   With AVX512_VNNI the inner step is one `vpdpbusd` (64 products): it multiplies unsigned
//!   bytes by signed ones, so the activations go in as `q + 128` (their top bit flipped) and
//!   `128 · Σ_group w[k, j]`, kept per panel and group at packing, is subtracted from each
//!   group's sum. With AVX2, `vpmaddubsw` on `|q_a|` and `w · sign(q_a)` (at most 2 · 127² per
//!   i16 pair: no saturation) and `vpmaddwd` by ones. Every path gives the same i32 sums.
//!   Why groups: BERT's LayerNorm outputs carry a few outlier channels (largest in the
//!   [CLS]/[SEP] rows); with one scale per row they coarsen every channel's step and the
//!   embedding of a blank text drops to cosine 0.991 to f32; with groups they coarsen only
//!   their own group's (0.998), for one extra convert and FMA per 8 quads. Per-channel
//!   smoothing (SmoothQuant, ranges estimated from the LayerNorm parameters) was tried and
//!   gained nothing on top.
//!
//! bf16 on a CPU without AVX512_BF16 ([`has_bf16_dot`] false): the weight's bf16 values are kept
//! widened to f32 and the activations are rounded to bf16 before the `gemm` crate's f32
//! product. The products are the same (two bf16 values multiply exactly in f32) and the sums
//! f32 as before, at the f32 kernel's rate: widening each pair inside a kernel before an
//! ordinary FMA, as this path once did, ran slower than f32 itself (95 against 157
//! sentences/s on the 2-core Zen 3).

use rayon::prelude::*;

use crate::linalg::{self, MatRef, Parallelism};

/// Output columns per packed panel (one AVX-512 register of f32, two of AVX2).
pub const NR: usize = 16;
/// Rows and panels of one output tile (`MR × NP·NR`): AVX-512's 32 registers hold its 16
/// accumulators with room for two panel rows and a broadcast, and 16 independent chains hide
/// the dot products' latency (4 did not: the kernels ran at a third of their rate).
const MR: usize = 8;
const NP: usize = 2;
/// One tile of f32 results.
type Tile = [[f32; NP * NR]; MR];
/// Rows per parallel task: one task's activations (`ROWS × k` values) stay in L2 while every
/// panel of the weight streams past them.
const ROWS: usize = 64;
/// int8 activations get one scale per row and group of this many quads (32 values): BERT's few
/// outlier channels then coarsen only their own group's step, not the whole row's.
const GROUP: usize = 8;

/// The number formats a packed weight can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Bf16,
    Int8,
}

/// True where this CPU multiplies bf16 pairs in hardware (AVX512_BF16's `vdpbf16ps`); elsewhere
/// a bf16 [`PackedWeight`] runs as an f32 product of bf16-rounded values (see the module docs).
pub fn has_bf16_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        return true;
    }
    false
}

/// What runs `format`'s products on this CPU, for the user (e.g. "vdpbf16ps (AVX512_BF16)").
pub fn kernel_name(format: Format) -> &'static str {
    match format {
        Format::Bf16 if has_bf16_dot() => "vdpbf16ps (AVX512_BF16)",
        Format::Bf16 => {
            "f32 FMAs on bf16-rounded values (this CPU has no AVX512_BF16; bf16 runs at f32's rate)"
        }
        Format::Int8 if kernels::unsigned_activations() => "vpdpbusd (AVX512_VNNI)",
        Format::Int8 if kernels::avx2() => "vpmaddubsw/vpmaddwd (AVX2; no AVX512_VNNI on this CPU)",
        Format::Int8 => "portable integer loops (no AVX2 on this CPU)",
    }
}

/// `xs` rounded to bf16 (nearest even), as f32 values, into `out` (resized to fit).
fn bf16_values(xs: &[f32], out: &mut Vec<f32>, threaded: bool) {
    const CHUNK: usize = 16 * 1024;
    out.resize(xs.len(), 0.0);
    let work = |(o, x): (&mut [f32], &[f32])| {
        crate::simd::dispatch(
            #[inline(always)]
            || {
                for (o, x) in o.iter_mut().zip(x) {
                    *o = f32::from_bits(bf16_bits(*x) << 16);
                }
            },
        )
    };
    if threaded {
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .for_each(work);
    } else {
        out.chunks_mut(CHUNK).zip(xs.chunks(CHUNK)).for_each(work);
    }
}

thread_local! {
    /// The rounded activations of [`PackedWeight::forward_widened`], kept per calling thread:
    /// a fresh buffer per product (megabytes at the feed-forward width) cost more in page
    /// faults than the rounding itself.
    static ROUNDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A `[k, n]` weight in [`Format`], stored for the kernels this CPU runs (see the module docs).
pub struct PackedWeight {
    format: Format,
    storage: Storage,
    k: usize,
    n: usize,
}

/// How a [`PackedWeight`] holds its values.
enum Storage {
    /// Packed 32-bit words for the kernels.
    Panels(Panels),
    /// bf16 without [`has_bf16_dot`]: the weight's bf16 values widened to f32, row-major
    /// `[k, n]`, for the `gemm` crate.
    Widened(Vec<f32>),
}

/// A weight packed in panels of 32-bit words.
struct Panels {
    /// `n.div_ceil(NR)` panels of `words(k) × NR` words.
    words: Vec<u32>,
    /// int8: per-column scales (`n` of them); bf16: empty.
    scales: Vec<f32>,
    /// int8: `128 · Σ_group w[k, j]` per panel, group and column (`vpdpbusd`'s offset); bf16:
    /// empty.
    offsets: Vec<i32>,
}

impl Format {
    /// Values per packed 32-bit word.
    fn per_word(self) -> usize {
        match self {
            Format::Bf16 => 2,
            Format::Int8 => 4,
        }
    }

    /// Words per column for `k` input rows.
    fn words(self, k: usize) -> usize {
        k.div_ceil(self.per_word())
    }
}

/// `v / scale` rounded to the nearest integer (ties away from zero) in [-127, 127]. `round()`
/// would be a libm call outside an SSE4.1 frame; adding ±0.5 and truncating is one `cvttss2si`.
#[inline(always)]
fn quant(v: f32, inv_scale: f32) -> i32 {
    let q = v * inv_scale;
    ((q + 0.5f32.copysign(q)) as i32).clamp(-127, 127)
}

/// Four values quantised into one word's bytes (low byte first).
#[inline(always)]
fn quad_word(v: [f32; 4], inv_scale: f32) -> u32 {
    let b = v.map(|v| quant(v, inv_scale) as u8);
    u32::from_le_bytes(b)
}

/// `127 / max|v|`, the factor to quantise `v` with (1 for an all-zero `v`), and its inverse.
#[inline(always)]
fn int8_scale(max_abs: f32) -> (f32, f32) {
    if max_abs > 0.0 && max_abs.is_finite() {
        (127.0 / max_abs, max_abs / 127.0)
    } else {
        (1.0, 1.0)
    }
}

/// `v` rounded to bf16 (nearest even; NaN kept a quiet NaN), as `half` rounds it but without
/// branches, so loops over it vectorise.
#[inline(always)]
fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        (b >> 16) | 0x40
    } else {
        rounded
    }
}

/// One row of activations as bf16 pairs.
#[inline(always)]
fn bf16_row(row: &[f32], out: &mut [u32]) {
    for (o, p) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o = bf16_bits(p[0]) | bf16_bits(p[1]) << 16;
    }
    if row.len() % 2 == 1 {
        out[row.len() / 2] = bf16_bits(row[row.len() - 1]);
    }
}

/// [`bf16_row`] with AVX512_BF16's conversion (`vcvtne2ps2bf16`: 32 values per instruction,
/// nearest-even like [`bf16_bits`], except that subnormal inputs, below 1.2e-38, become
/// zero; their products are below f32's range anyway).
///
/// # Safety
/// The CPU must support AVX512F and AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_row_avx512(row: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    let blocks = row.chunks_exact(32);
    let tail = blocks.remainder();
    for (x, o) in blocks.zip(out.chunks_exact_mut(16)) {
        // SAFETY: `x` holds 32 floats and `o` 16 words; the result is 32 bf16 values in input
        // order (the second operand's 16 in the low half), i.e. 16 little-endian pairs.
        unsafe {
            let lo = _mm512_loadu_ps(x.as_ptr());
            let hi = _mm512_loadu_ps(x.as_ptr().add(16));
            let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(o.as_mut_ptr().cast(), pairs);
        }
    }
    let done = row.len() - tail.len();
    bf16_row(tail, &mut out[done / 2..]);
}

/// One row of activations as int8 quads, a scale per [`GROUP`] quads, each word XORed with
/// `flip`.
#[inline(always)]
fn int8_row(row: &[f32], out: &mut [u32], scales: &mut [f32], flip: u32) {
    let values = row.chunks(4 * GROUP);
    for ((vals, out), scale) in values.zip(out.chunks_mut(GROUP)).zip(scales) {
        // Sixteen running maxima: a float max reduction does not vectorise on its own.
        let mut lanes = [0f32; 16];
        for c in vals.chunks(16) {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = m.max(v.abs());
            }
        }
        let (inv, s) = int8_scale(lanes.iter().fold(0f32, |m, v| m.max(*v)));
        *scale = s;
        let quads = vals.chunks_exact(4);
        let tail = quads.remainder();
        for (o, q) in out.iter_mut().zip(quads) {
            *o = quad_word([q[0], q[1], q[2], q[3]], inv) ^ flip;
        }
        if !tail.is_empty() {
            let mut q = [0f32; 4];
            q[..tail.len()].copy_from_slice(tail);
            out[vals.len() / 4] = quad_word(q, inv) ^ flip;
        }
    }
}

/// `128 · Σ_group w[k, j]` of packed int8 panels (`kw` words per column), per panel, group and
/// column.
fn int8_offsets(panels: &[u32], kw: usize) -> Vec<i32> {
    let mut out = Vec::new();
    for panel in panels.chunks_exact(kw * NR) {
        for group in panel.chunks(GROUP * NR) {
            out.extend((0..NR).map(|j| {
                let bytes = group.chunks_exact(NR).flat_map(|w| w[j].to_le_bytes());
                128 * bytes.map(|b| i32::from(b as i8)).sum::<i32>()
            }));
        }
    }
    out
}

impl PackedWeight {
    /// Packs row-major `w` (`[k, n]`) for the kernels this CPU runs: bf16 without
    /// [`has_bf16_dot`] keeps the values widened to f32.
    pub fn pack(w: &[f32], k: usize, n: usize, format: Format) -> Self {
        if format == Format::Bf16 && !has_bf16_dot() {
            assert_eq!(w.len(), k * n, "pack: weight is not k × n");
            let mut widened = Vec::new();
            bf16_values(w, &mut widened, false);
            let storage = Storage::Widened(widened);
            return PackedWeight {
                format,
                storage,
                k,
                n,
            };
        }
        Self::pack_panels(w, k, n, format)
    }

    /// Packs row-major `w` (`[k, n]`) into panels of 32-bit words.
    fn pack_panels(w: &[f32], k: usize, n: usize, format: Format) -> Self {
        assert_eq!(w.len(), k * n, "pack: weight is not k × n");
        let (kw, per) = (format.words(k), format.per_word());
        let at = |r: usize, c: usize| if r < k && c < n { w[r * n + c] } else { 0.0 };
        let (inv, scales): (Vec<f32>, Vec<f32>) = match format {
            Format::Bf16 => (Vec::new(), Vec::new()),
            Format::Int8 => (0..n)
                .map(|c| int8_scale((0..k).map(|r| at(r, c).abs()).fold(0.0, f32::max)))
                .unzip(),
        };
        let word = |r: usize, c: usize| match format {
            Format::Bf16 => bf16_bits(at(r, c)) | bf16_bits(at(r + 1, c)) << 16,
            Format::Int8 => {
                let s = inv.get(c).copied().unwrap_or(0.0);
                quad_word(std::array::from_fn(|i| at(r + i, c)), s)
            }
        };
        let mut panels = Vec::with_capacity(n.div_ceil(NR) * kw * NR);
        for p in 0..n.div_ceil(NR) {
            for q in 0..kw {
                panels.extend((0..NR).map(|j| word(per * q, p * NR + j)));
            }
        }
        let offsets = match format {
            Format::Bf16 => Vec::new(),
            Format::Int8 => int8_offsets(&panels, kw),
        };
        let storage = Storage::Panels(Panels {
            words: panels,
            scales,
            offsets,
        });
        PackedWeight {
            format,
            storage,
            k,
            n,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The panels of a weight packed by [`PackedWeight::pack_panels`].
    #[cfg(test)]
    fn panels(&self) -> &Panels {
        match &self.storage {
            Storage::Panels(p) => p,
            Storage::Widened(_) => panic!("a widened weight has no panels"),
        }
    }

    /// `y[m, n] = x[m, k] · W + bias`, rows in parallel tasks when `threaded`.
    pub fn forward(&self, x: &[f32], y: &mut [f32], bias: &[f32], m: usize, threaded: bool) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && y.len() >= m * n && bias.len() == n);
        let panels = match &self.storage {
            Storage::Panels(p) => p,
            Storage::Widened(w) => {
                return self.forward_widened(w, &x[..m * k], &mut y[..m * n], bias, threaded)
            }
        };
        let work = |(block, ys): (usize, &mut [f32])| {
            let rows = ys.len() / n;
            let xs = &x[block * ROWS * k..][..rows * k];
            let (a, row_scales) = self.pack_rows(xs, rows);
            self.block(panels, &a, &row_scales, ys, bias);
        };
        let y = &mut y[..m * n];
        if threaded {
            y.par_chunks_mut(ROWS * n).enumerate().for_each(work);
        } else {
            y.chunks_mut(ROWS * n).enumerate().for_each(work);
        }
    }

    /// bf16 without [`has_bf16_dot`]: `x` rounded to bf16, times the `widened` weight, in f32.
    fn forward_widened(
        &self,
        widened: &[f32],
        x: &[f32],
        y: &mut [f32],
        bias: &[f32],
        threaded: bool,
    ) {
        let (k, n) = (self.k, self.n);
        let m = x.len() / k;
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
        let par = if threaded {
            linalg::parallelism()
        } else {
            Parallelism::None
        };
        ROUNDED.with_borrow_mut(|rounded| {
            bf16_values(x, rounded, threaded);
            let (x, w) = (MatRef::rows(rounded, k), MatRef::rows(widened, n));
            linalg::gemm((m, n, k), y, n, x, w, true, 1.0, par);
        });
    }

    /// Activations as packed words (`rows × words(k)`), with int8's scales per row and
    /// [`GROUP`] quads (`rows × groups`). Vectorised: done per forward, it cost as much as the
    /// products themselves when each value went through `half`'s scalar conversion.
    fn pack_rows(&self, xs: &[f32], rows: usize) -> (Vec<u32>, Vec<f32>) {
        let (k, kw) = (self.k, self.format.words(self.k));
        let groups = kw.div_ceil(GROUP);
        let mut a = vec![0u32; rows * kw];
        let mut scales = match self.format {
            Format::Bf16 => Vec::new(),
            Format::Int8 => vec![0f32; rows * groups],
        };
        let rows_in = xs.chunks_exact(k).take(rows);
        crate::simd::dispatch(
            #[inline(always)]
            || match self.format {
                Format::Bf16 => {
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx512bf16") {
                        for (row, out) in rows_in.zip(a.chunks_exact_mut(kw)) {
                            // SAFETY: AVX512_BF16 (which implies AVX512F) detected just above.
                            unsafe { bf16_row_avx512(row, out) };
                        }
                        return;
                    }
                    for (row, out) in rows_in.zip(a.chunks_exact_mut(kw)) {
                        bf16_row(row, out);
                    }
                }
                Format::Int8 => {
                    let flip = if kernels::unsigned_activations() {
                        0x8080_8080
                    } else {
                        0
                    };
                    let outs = a.chunks_exact_mut(kw).zip(scales.chunks_exact_mut(groups));
                    for (row, (out, scales)) in rows_in.zip(outs) {
                        int8_row(row, out, scales, flip);
                    }
                }
            },
        );
        (a, scales)
    }

    /// One row block against every pair of `p`'s panels.
    fn block(&self, p: &Panels, a: &[u32], act_scales: &[f32], ys: &mut [f32], bias: &[f32]) {
        let (n, kw) = (self.n, self.format.words(self.k));
        let groups = kw.div_ceil(GROUP);
        let rows = ys.len() / n;
        for (t, panels) in p.words.chunks(NP * kw * NR).enumerate() {
            let c0 = t * NP * NR;
            let cols = (NP * NR).min(n - c0);
            let (b, sw) = (&bias[c0..][..cols], p.scales.get(c0..c0 + cols));
            let offsets = p.offsets.get(t * NP * groups * NR..).unwrap_or(&[]);
            for r0 in (0..rows).step_by(MR) {
                let mr = MR.min(rows - r0);
                let a = &a[r0 * kw..(r0 + mr) * kw];
                let acc = match self.format {
                    Format::Bf16 => kernels::bf16(a, mr, panels, kw),
                    Format::Int8 => {
                        let s = &act_scales[r0 * groups..(r0 + mr) * groups];
                        kernels::int8(a, mr, panels, kw, s, offsets)
                    }
                };
                for (i, acc) in acc.iter().take(mr).enumerate() {
                    let y = &mut ys[(r0 + i) * n + c0..][..cols];
                    match sw {
                        None => y
                            .iter_mut()
                            .zip(acc)
                            .zip(b)
                            .for_each(|((y, v), b)| *y = v + b),
                        Some(sw) => {
                            for (((y, v), b), s) in y.iter_mut().zip(acc).zip(b).zip(sw) {
                                *y = v * s + b;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The inner loops, one per format and instruction set, chosen at run time. Each computes one
/// [`Tile`]: `mr ≤ MR` rows of activations (`kw` words each) against one or two panels.
mod kernels {
    use super::{Tile, GROUP, MR, NP, NR};

    /// Rows of the AVX2 and portable bodies: 4 × 16 accumulators fit AVX2's 16 registers.
    const HALF: usize = 4;
    /// The 4-row, one-panel results of those bodies.
    type Quarter = [[f32; NR]; HALF];

    /// True where the AVX2+FMA kernels run.
    pub(super) fn avx2() -> bool {
        cfg!(target_arch = "x86_64") && crate::simd::level() != crate::simd::Level::Baseline
    }

    /// bf16: the best kernel this CPU runs. Without AVX512_BF16, [`super::PackedWeight::pack`]
    /// keeps bf16 weights widened to f32 instead of packing panels, so the portable kernel runs
    /// only on panels the tests pack explicitly.
    pub fn bf16(a: &[u32], mr: usize, panels: &[u32], kw: usize) -> Tile {
        #[cfg(target_arch = "x86_64")]
        if super::has_bf16_dot() {
            // SAFETY: AVX512_BF16 (which implies AVX512F) detected there.
            return unsafe { bf16_avx512(a, mr, panels, kw) };
        }
        bf16_portable_tile(a, mr, panels, kw)
    }

    /// bf16 on any CPU, as a tile of [`bf16_portable`] bodies.
    pub fn bf16_portable_tile(a: &[u32], mr: usize, panels: &[u32], kw: usize) -> Tile {
        quarters(mr, panels, kw, |r0, rows, panel| {
            bf16_portable(&a[r0 * kw..], rows, panel)
        })
    }

    /// True where [`int8`] runs [`int8_avx512`], whose activations are `q + 128` (each byte's
    /// top bit flipped), not `q`.
    pub fn unsigned_activations() -> bool {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            return true;
        }
        false
    }

    /// int8 with activation scales `scales` (`mr × groups`) and the panels' `offsets` (see
    /// [`super::int8_offsets`]; only `vpdpbusd` needs them): the best kernel this CPU runs.
    pub fn int8(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
        scales: &[f32],
        offsets: &[i32],
    ) -> Tile {
        #[cfg(target_arch = "x86_64")]
        if unsigned_activations() {
            // SAFETY: AVX512_VNNI (which implies AVX512F) detected there.
            return unsafe { int8_avx512(a, mr, panels, kw, scales, offsets) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: as above.
            return unsafe { int8_avx2(a, mr, panels, kw, scales) };
        }
        int8_portable_tile(a, mr, panels, kw, scales)
    }

    /// int8 on any CPU, as a tile of [`int8_portable`] bodies.
    pub fn int8_portable_tile(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
        scales: &[f32],
    ) -> Tile {
        int8_quarters(a, mr, panels, kw, scales, int8_portable)
    }

    /// An int8 tile from 4-row, one-panel bodies `body(rows' words, rows, panel, rows' scales)`.
    #[inline(always)]
    fn int8_quarters(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
        scales: &[f32],
        body: impl Fn(&[u32], usize, &[u32], &[f32]) -> Quarter,
    ) -> Tile {
        let groups = kw.div_ceil(GROUP);
        quarters(mr, panels, kw, |r0, rows, panel| {
            body(&a[r0 * kw..], rows, panel, &scales[r0 * groups..])
        })
    }

    /// A tile from 4-row, one-panel bodies: `body(first row, rows, panel)`.
    #[inline(always)]
    fn quarters(
        mr: usize,
        panels: &[u32],
        kw: usize,
        body: impl Fn(usize, usize, &[u32]) -> Quarter,
    ) -> Tile {
        assert!((1..=MR).contains(&mr) && panels.len() <= NP * kw * NR);
        let mut tile = [[0f32; NP * NR]; MR];
        for (pi, panel) in panels.chunks_exact(kw * NR).enumerate() {
            for r0 in (0..mr).step_by(HALF) {
                let rows = HALF.min(mr - r0);
                for (out, acc) in tile[r0..].iter_mut().zip(&body(r0, rows, panel)[..rows]) {
                    out[pi * NR..][..NR].copy_from_slice(acc);
                }
            }
        }
        tile
    }

    /// The two halves of a 32-bit pair as f32 (bf16 is the top half of an f32).
    #[inline(always)]
    fn bf16_pair(w: u32) -> (f32, f32) {
        (f32::from_bits(w << 16), f32::from_bits(w & 0xFFFF_0000))
    }

    /// The four bytes of a 32-bit quad as signed integers.
    #[inline(always)]
    fn i8_quad(w: u32) -> [i32; 4] {
        w.to_le_bytes().map(|b| i32::from(b as i8))
    }

    /// Row indices for a kernel of `R` rows: rows beyond `mr` repeat row 0 (their sums are
    /// discarded), so the kernels have no branch on `mr` inside.
    #[cfg(target_arch = "x86_64")]
    fn rows<const R: usize>(mr: usize) -> [usize; R] {
        assert!((1..=R).contains(&mr), "1 to {R} rows, not {mr}");
        std::array::from_fn(|r| if r < mr { r } else { 0 })
    }

    /// The AVX-512 kernels' operands: each row's first pair, and the two panels (the first
    /// twice when there is one: the second half of the tile is then discarded).
    #[cfg(target_arch = "x86_64")]
    fn tile_operands(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
    ) -> ([*const u32; MR], [*const u32; NP]) {
        assert!(
            a.len() >= mr * kw,
            "activations shorter than {mr} × {kw} pairs"
        );
        let np = panels.len() / (kw * NR);
        assert!((1..=NP).contains(&np) && panels.len() == np * kw * NR);
        let xs = rows::<MR>(mr).map(|r| a[r * kw..][..kw].as_ptr());
        let ps = std::array::from_fn(|i| panels[i.min(np - 1) * kw * NR..].as_ptr());
        (xs, ps)
    }

    /// Stores AVX-512 accumulators into a [`Tile`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn store_tile(acc: &[[std::arch::x86_64::__m512; NP]; MR]) -> Tile {
        let mut tile = [[0f32; NP * NR]; MR];
        for (out, acc) in tile.iter_mut().zip(acc) {
            for (o, v) in out.chunks_exact_mut(NR).zip(acc) {
                // SAFETY: `o` holds 16 floats.
                unsafe { std::arch::x86_64::_mm512_storeu_ps(o.as_mut_ptr(), *v) };
            }
        }
        tile
    }

    /// bf16 with AVX512_BF16: one `vdpbf16ps` per row, pair and panel (both products of the
    /// pair, 16 columns) into 16 f32 registers.
    ///
    /// # Safety
    /// The CPU must support AVX512F and AVX512_BF16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_avx512(a: &[u32], mr: usize, panels: &[u32], kw: usize) -> Tile {
        use std::arch::x86_64::*;
        let (xs, ps) = tile_operands(a, mr, panels, kw);
        let mut acc = [[_mm512_setzero_ps(); NP]; MR];
        for p in 0..kw {
            // SAFETY: p < kw: each panel holds kw × NR words and each `xs` row kw words. The
            // transmutes reinterpret 512 bits of bf16 pairs as the type `vdpbf16ps` takes.
            unsafe {
                let b: [__m512bh; NP] =
                    ps.map(|w| std::mem::transmute(_mm512_loadu_si512(w.add(p * NR).cast())));
                for (acc, x) in acc.iter_mut().zip(&xs) {
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*x.add(p) as i32));
                    for (acc, b) in acc.iter_mut().zip(&b) {
                        *acc = _mm512_dpbf16_ps(*acc, x, *b);
                    }
                }
            }
        }
        store_tile(&acc)
    }

    /// int8 with AVX512_VNNI: one `vpdpbusd` (four byte products added into each i32 lane)
    /// per row, quad and panel. It takes unsigned activations, `q + 128` (packed so when
    /// [`unsigned_activations`] says this kernel runs), and each group's i32 sums lose the
    /// panel's `offsets` before they are converted and scaled into f32.
    ///
    /// # Safety
    /// The CPU must support AVX512F and AVX512_VNNI.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn int8_avx512(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
        scales: &[f32],
        offsets: &[i32],
    ) -> Tile {
        use std::arch::x86_64::*;
        let (xs, ps) = tile_operands(a, mr, panels, kw);
        let groups = kw.div_ceil(GROUP);
        let np = panels.len() / (kw * NR);
        assert!(scales.len() >= mr * groups && offsets.len() >= np * groups * NR);
        let offs: [&[i32]; NP] = std::array::from_fn(|i| &offsets[i.min(np - 1) * groups * NR..]);
        let row_of = rows::<MR>(mr);
        let mut out = [[_mm512_setzero_ps(); NP]; MR];
        for g in 0..groups {
            let quads = g * GROUP..((g + 1) * GROUP).min(kw);
            let mut acc = [[_mm512_setzero_si512(); NP]; MR];
            for q in quads {
                // SAFETY: q < kw: each panel holds kw × NR words and each `xs` row kw words.
                unsafe {
                    let b = ps.map(|w| _mm512_loadu_si512(w.add(q * NR).cast()));
                    for (acc, x) in acc.iter_mut().zip(&xs) {
                        let x = _mm512_set1_epi32(*x.add(q) as i32);
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            *acc = _mm512_dpbusd_epi32(*acc, x, *b);
                        }
                    }
                }
            }
            // SAFETY: each `offs` slice holds groups × NR values (asserted above).
            let off =
                offs.map(|o| unsafe { _mm512_loadu_si512(o[g * NR..][..NR].as_ptr().cast()) });
            for ((out, acc), &r) in out.iter_mut().zip(&acc).zip(&row_of) {
                let s = _mm512_set1_ps(scales[r * groups + g]);
                for ((out, acc), off) in out.iter_mut().zip(acc).zip(&off) {
                    let sum = _mm512_sub_epi32(*acc, *off);
                    *out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, *out);
                }
            }
        }
        store_tile(&out)
    }

    /// bf16 on any CPU, 4 rows and one panel: pairs widened to f32 (exact), products summed in
    /// f32. LLVM vectorises the column loop.
    #[inline(always)]
    pub fn bf16_portable(a: &[u32], mr: usize, panel: &[u32]) -> Quarter {
        let kw = panel.len() / NR;
        let mut acc = [[0f32; NR]; HALF];
        for (p, bw) in panel.chunks_exact(NR).enumerate() {
            let (mut b0, mut b1) = ([0f32; NR], [0f32; NR]);
            for j in 0..NR {
                (b0[j], b1[j]) = bf16_pair(bw[j]);
            }
            for (r, acc) in acc.iter_mut().enumerate().take(mr) {
                let (a0, a1) = bf16_pair(a[r * kw + p]);
                for j in 0..NR {
                    acc[j] = acc[j] + a0 * b0[j] + a1 * b1[j];
                }
            }
        }
        acc
    }

    /// int8 on any CPU, 4 rows and one panel: exact i32 sums of byte quads per group, scaled
    /// into f32 sums.
    pub fn int8_portable(a: &[u32], mr: usize, panel: &[u32], scales: &[f32]) -> Quarter {
        let kw = panel.len() / NR;
        let groups = kw.div_ceil(GROUP);
        let mut out = [[0f32; NR]; HALF];
        for (g, bg) in panel.chunks(GROUP * NR).enumerate() {
            for (r, out) in out.iter_mut().enumerate().take(mr) {
                let mut acc = [0i32; NR];
                for (q, bw) in bg.chunks_exact(NR).enumerate() {
                    let x = i8_quad(a[r * kw + g * GROUP + q]);
                    for j in 0..NR {
                        let w = i8_quad(bw[j]);
                        acc[j] += (0..4).map(|i| x[i] * w[i]).sum::<i32>();
                    }
                }
                let s = scales[r * groups + g];
                for j in 0..NR {
                    out[j] += acc[j] as f32 * s;
                }
            }
        }
        out
    }

    /// int8 with AVX2, as a tile of [`int8_avx2_quarter`]s.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int8_avx2(
        a: &[u32],
        mr: usize,
        panels: &[u32],
        kw: usize,
        scales: &[f32],
    ) -> Tile {
        int8_quarters(a, mr, panels, kw, scales, |a, rows, panel, scales| {
            // SAFETY: this frame has AVX2 and FMA (the caller's contract).
            unsafe { int8_avx2_quarter(a, rows, panel, scales) }
        })
    }

    /// int8 with AVX2, 4 rows and one panel: per row and 8 columns, `vpmaddubsw` of the
    /// activation quad's magnitudes with the weights given its signs (`vpsignb`: pair sums at
    /// most 2 · 127², so no saturation), then `vpmaddwd` by ones into i32 registers, converted
    /// and scaled into f32 registers at the end of each group.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn int8_avx2_quarter(a: &[u32], mr: usize, panel: &[u32], scales: &[f32]) -> Quarter {
        use std::arch::x86_64::*;
        let kw = panel.len() / NR;
        let groups = kw.div_ceil(GROUP);
        assert!(a.len() >= mr * kw && scales.len() >= mr * groups);
        let rows = rows::<HALF>(mr);
        let ones = _mm256_set1_epi16(1);
        let mut out = [[_mm256_setzero_ps(); 2]; HALF];
        for (g, bg) in panel.chunks(GROUP * NR).enumerate() {
            let mut acc = [[_mm256_setzero_si256(); 2]; HALF];
            let len = bg.len() / NR;
            // Each row's quads of this group: `len` words from these pointers.
            let xs = rows.map(|r| a[r * kw + g * GROUP..][..len].as_ptr());
            for q in 0..len {
                // SAFETY: q < len: `bg` holds `len × NR` words and each `xs` row `len` words
                // (sliced above). The broadcast reads a quad's 32 bits straight from memory
                // (`vbroadcastss`: a load, no shuffle); they are moved, never computed as f32.
                unsafe {
                    let bw = bg.as_ptr().add(q * NR);
                    let b = [
                        _mm256_loadu_si256(bw.cast()),
                        _mm256_loadu_si256(bw.add(8).cast()),
                    ];
                    for (acc, x) in acc.iter_mut().zip(&xs) {
                        let x = _mm256_castps_si256(_mm256_broadcast_ss(&*x.add(q).cast::<f32>()));
                        let ax = _mm256_abs_epi8(x);
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            let pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(*b, x));
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
            }
            for ((out, acc), &r) in out.iter_mut().zip(&acc).zip(&rows) {
                let s = _mm256_set1_ps(scales[r * groups + g]);
                out[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[0]), s, out[0]);
                out[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[1]), s, out[1]);
            }
        }
        let mut res = [[0f32; NR]; HALF];
        for (o, v) in res.iter_mut().zip(&out) {
            // SAFETY: `o` holds 16 floats: two unaligned 8-float stores.
            unsafe {
                _mm256_storeu_ps(o.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), v[1]);
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// f64 reference `x · W + b`.
    fn reference(x: &[f32], w: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[t * n + j] as f64)
                    .sum();
                y[i * n + j] = (s + b[j] as f64) as f32;
            }
        }
        y
    }

    /// The branch-free bf16 rounding equals `half`'s on ties, subnormals, infinities, NaNs and a
    /// sweep of ordinary values.
    #[test]
    fn fast_bf16_rounding_equals_half() {
        let special = [
            0.0f32,
            -0.0,
            1.0 + f32::EPSILON * 64.0, // a tie: rounds to even
            1.0 + f32::EPSILON * 192.0,
            f32::MIN_POSITIVE / 3.0,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001), // a signalling NaN
        ];
        let sweep = (0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)));
        for v in special.into_iter().chain(sweep) {
            let half = u32::from(half::bf16::from_f32(v).to_bits());
            assert_eq!(bf16_bits(v), half, "{v:e} ({:#x})", v.to_bits());
        }
    }

    /// The hardware conversion packs the same pairs as the portable one (normal values; an odd
    /// tail goes through the portable one).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn hardware_bf16_rows_equal_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx512bf16") {
            eprintln!("skipping: this CPU has no AVX512_BF16");
            return;
        }
        let mut row = random(101, 6);
        row[7] = 1.0 + f32::EPSILON * 64.0; // a tie
        row[40] = f32::NAN;
        row[41] = f32::INFINITY;
        let (mut want, mut got) = (vec![0u32; 51], vec![0u32; 51]);
        bf16_row(&row, &mut want);
        // SAFETY: AVX512_BF16 detected above.
        unsafe { bf16_row_avx512(&row, &mut got) };
        assert_eq!(got, want);
    }

    /// Odd sizes (k odd, n not a multiple of 16, m not a multiple of 4) against f64, with
    /// error bounds from each format's rounding: bf16 rounds each input by ≤ 2⁻⁹ relative,
    /// int8 each by ≤ half a step of max/127. Both storages of each format (what
    /// [`PackedWeight::pack`] picks on this CPU, and panels) run, and agree with each other up to
    /// the order of their f32 sums.
    #[test]
    fn packed_formats_match_f64_on_odd_shapes() {
        let (m, k, n) = (70, 37, 41);
        let (x, w, b) = (random(m * k, 1), random(k * n, 2), random(n, 3));
        let want = reference(&x, &w, &b, (m, k, n));
        for (format, tol) in [(Format::Bf16, 0.02), (Format::Int8, 0.08)] {
            let mut outputs = Vec::new();
            for packed in [
                PackedWeight::pack(&w, k, n, format),
                PackedWeight::pack_panels(&w, k, n, format),
            ] {
                for threaded in [false, true] {
                    let mut y = vec![f32::NAN; m * n];
                    packed.forward(&x, &mut y, &b, m, threaded);
                    let worst = y
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(worst < tol, "{format:?}: max error {worst}");
                    assert!(worst > 0.0, "{format:?}: rounding must show");
                    outputs.push(vec![y]);
                }
            }
            for got in &outputs[1..] {
                assert_close(got, &outputs[0], &format!("{format:?}, two storages"));
            }
        }
    }

    /// Equal up to f32 rounding of the per-group (int8) or per-pair (bf16) partial sums, whose
    /// size is about the tile's largest value: ≤ 2⁻²⁴ each, a few dozen of them.
    fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
        let scale = want.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!(
                (g - w).abs() <= 2e-6 * scale,
                "{what}: {g} vs {w} (scale {scale})"
            );
        }
    }

    /// Every kernel this CPU runs against the portable ones, on tiles of one and two panels and
    /// 3 or 7 rows (short of both body heights, so the repeated-row trick is exercised): the
    /// same exact products, summed in another order.
    #[test]
    fn kernels_agree_with_the_portable_ones() {
        let k = 300;
        let (kp, kq) = (Format::Bf16.words(k), Format::Int8.words(k));
        let mut ran = vec!["portable"];
        for (n, mr) in [(16, 3), (32, 7), (32, 8)] {
            let w = random(k * n, 4);
            let x = random(mr * k, 5);
            let bf = PackedWeight::pack_panels(&w, k, n, Format::Bf16);
            let (a, _) = bf.pack_rows(&x, mr);
            let want = kernels::bf16_portable_tile(&a, mr, &bf.panels().words, kp);
            let i8w = PackedWeight::pack(&w, k, n, Format::Int8);
            let (mut q, scales) = i8w.pack_rows(&x, mr);
            let unsigned = kernels::unsigned_activations();
            let flip = |q: &mut [u32]| q.iter_mut().for_each(|w| *w ^= 0x8080_8080);
            if unsigned {
                flip(&mut q);
            }
            let want8 = kernels::int8_portable_tile(&q, mr, &i8w.panels().words, kq, &scales);
            assert!(want[mr - 1][n - 1] != 0.0 && want8[mr - 1][n - 1] != 0.0);
            let close = |got: Tile, want: &Tile, what: &str| {
                let (got, want) = (&got[..mr], &want[..mr]);
                let cut = |t: &[[f32; NP * NR]]| -> Vec<Vec<f32>> {
                    t.iter().map(|r| r[..n].to_vec()).collect()
                };
                assert_close(&cut(got), &cut(want), &format!("{what}, {mr} × {n}"));
            };
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") && has!("fma") {
                    // SAFETY: AVX2 and FMA detected just above.
                    let i = unsafe { kernels::int8_avx2(&q, mr, &i8w.panels().words, kq, &scales) };
                    close(i, &want8, "int8 avx2");
                    ran.push("avx2");
                }
                if has!("avx512bf16") {
                    // SAFETY: AVX512_BF16 detected just above.
                    let b = unsafe { kernels::bf16_avx512(&a, mr, &bf.panels().words, kp) };
                    close(b, &want, "bf16 avx512bf16");
                    ran.push("avx512bf16");
                }
                if unsigned {
                    flip(&mut q);
                    // SAFETY: AVX512_VNNI detected there.
                    let i = unsafe {
                        kernels::int8_avx512(
                            &q,
                            mr,
                            &i8w.panels().words,
                            kq,
                            &scales,
                            &i8w.panels().offsets,
                        )
                    };
                    close(i, &want8, "int8 avx512vnni");
                    ran.push("avx512vnni");
                }
            }
        }
        eprintln!("kernels compared on this CPU: {ran:?}");
    }
}
