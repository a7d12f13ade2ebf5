//! The crate's one matrix multiply: a bounds-checked wrapper over the `gemm` crate, so no other
//! module holds a raw pointer. The checks are `assert!`s (kept in release builds): a wrong shape
//! panics instead of reading or writing out of bounds.

pub use gemm::Parallelism;

/// A read-only `rows × cols` matrix inside `data`, element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Dense row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// Floats a `rows × cols` matrix with these strides spans (0 when empty).
fn span(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

/// `dst[m, n] = (accumulate ? dst : 0) + scale · lhs[m, k] · rhs[k, n]`, where `dst` is
/// row-major with row stride `dst_stride` (≥ n, so no two elements alias).
///
/// Panics when a slice is too short for its shape and strides.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    scale: f32,
    par: Parallelism,
) {
    assert!(dst_stride >= n, "gemm: dst row stride {dst_stride} < n {n}");
    let need = span(m, n, dst_stride, 1);
    assert!(
        dst.len() >= need,
        "gemm: dst holds {} floats, {m}×{n} needs {need}",
        dst.len()
    );
    let need = span(m, k, lhs.row_stride, lhs.col_stride);
    assert!(
        lhs.data.len() >= need,
        "gemm: lhs holds {} floats, {m}×{k} needs {need}",
        lhs.data.len()
    );
    let need = span(k, n, rhs.row_stride, rhs.col_stride);
    assert!(
        rhs.data.len() >= need,
        "gemm: rhs holds {} floats, {k}×{n} needs {need}",
        rhs.data.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let s = |x: usize| isize::try_from(x).expect("gemm: stride overflows isize");
    // SAFETY: the asserts above keep every element gemm touches inside its slice; `dst` is
    // borrowed mutably, so it aliases neither input, and its row stride ≥ n keeps writes disjoint.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(dst_stride),
            accumulate,
            lhs.data.as_ptr(),
            s(lhs.col_stride),
            s(lhs.row_stride),
            rhs.data.as_ptr(),
            s(rhs.col_stride),
            s(rhs.row_stride),
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// Rayon parallelism over all pool threads (none for one).
pub fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}
