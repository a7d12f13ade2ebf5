//! The checked gemm wrapper: agrees with a naive matmul on odd shapes and strides, and panics
//! (in this workspace's optimised dev profile too) rather than read past a slice.

use encoder::linalg::{gemm, MatRef, Parallelism};

/// Deterministic, non-trivial values (no RNG needed).
fn values(len: usize, salt: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn at(m: &MatRef<'_>, i: usize, j: usize) -> f32 {
    m.data[i * m.row_stride + j * m.col_stride]
}

#[test]
fn matches_naive_matmul_on_odd_shapes_and_strides() {
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 13, 9), (33, 1, 65), (2, 31, 1)] {
        let lhs_data = values(m * (k + 2), 1);
        // lhs row-major with padding; rhs read transposed (as attention reads Kᵀ).
        let lhs = MatRef {
            data: &lhs_data,
            row_stride: k + 2,
            col_stride: 1,
        };
        let rhs_data = values(n * k, 2);
        let rhs = MatRef {
            data: &rhs_data,
            row_stride: 1,
            col_stride: k,
        };
        let stride = n + 3;
        let start = values(m * stride, 3);
        for (accumulate, scale) in [(false, 0.5f32), (true, 1.0)] {
            let mut dst = start.clone();
            gemm(
                (m, n, k),
                &mut dst,
                stride,
                lhs,
                rhs,
                accumulate,
                scale,
                Parallelism::None,
            );
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|p| at(&lhs, i, p) * at(&rhs, p, j)).sum();
                    let base = if accumulate {
                        start[i * stride + j]
                    } else {
                        0.0
                    };
                    let want = base + scale * dot;
                    let got = dst[i * stride + j];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{m}x{n}x{k} ({i},{j}): {got} vs {want}"
                    );
                }
                // Padding columns are left alone.
                assert_eq!(
                    dst[i * stride + n..(i + 1) * stride],
                    start[i * stride + n..(i + 1) * stride]
                );
            }
        }
    }
}

/// A 4×5 · 5×3 product of row-major operands, with floats taken off lhs or dst.
fn row_major_product(short_lhs: usize, short_dst: usize) {
    let (m, n, k) = (4, 3, 5);
    let lhs = values(m * k - short_lhs, 1);
    let rhs = values(k * n, 2);
    let mut dst = vec![0f32; m * n - short_dst];
    gemm(
        (m, n, k),
        &mut dst,
        n,
        MatRef::rows(&lhs, k),
        MatRef::rows(&rhs, n),
        false,
        1.0,
        Parallelism::None,
    );
}

#[test]
#[should_panic(expected = "lhs holds")]
fn panics_on_a_too_short_lhs() {
    row_major_product(1, 0);
}

#[test]
#[should_panic(expected = "dst holds")]
fn panics_on_a_too_short_dst() {
    row_major_product(0, 1);
}

#[test]
#[should_panic(expected = "rhs holds")]
fn panics_on_a_too_short_strided_rhs() {
    let (m, n, k) = (2, 3, 4);
    let lhs = values(m * k, 1);
    // Transposed read needs (n-1)·k + k floats; one short.
    let rhs = values(n * k - 1, 2);
    let mut dst = vec![0f32; m * n];
    let rhs = MatRef {
        data: &rhs,
        row_stride: 1,
        col_stride: k,
    };
    gemm(
        (m, n, k),
        &mut dst,
        n,
        MatRef::rows(&lhs, k),
        rhs,
        false,
        1.0,
        Parallelism::None,
    );
}
