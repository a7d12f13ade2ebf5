//! The packed bf16/int8 products (`encoder::lowp`) against the `gemm` crate's f32 on the
//! encoder's shapes, one thread, in GFLOP per second of this thread's own CPU time (steadier than
//! wall time on a shared machine): `cargo run --release -p encoder --example lowp_speed`.

use encoder::linalg::{gemm, MatRef, Parallelism};
use encoder::lowp::{Format, PackedWeight};
/// Nanoseconds this thread has run (Linux's schedstat).
fn cpu_ns() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}
/// Products per shape and format: long enough for the CPU clock to settle.
const REPS: usize = 200;

fn main() {
    for (m, k, n) in [(512, 384, 1152), (512, 384, 1536), (512, 1536, 384)] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let b = vec![0f32; n];
        let mut y = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64 * REPS as f64;
        let mut line = format!("{m}x{k}x{n}:");
        for f in [Format::Bf16, Format::Int8] {
            let p = PackedWeight::pack(&w, k, n, f);
            let t = cpu_ns();
            for _ in 0..REPS {
                p.forward(&x, &mut y, &b, m, false);
            }
            line += &format!(" {f:?} {:.1}", flops / (cpu_ns() - t));
        }
        let t = cpu_ns();
        for _ in 0..REPS {
            gemm(
                (m, n, k),
                &mut y,
                n,
                MatRef::rows(&x, k),
                MatRef::rows(&w, n),
                false,
                1.0,
                Parallelism::None,
            );
        }
        line += &format!(" f32-gemm {:.1} GFLOP/CPU-s", flops / (cpu_ns() - t));
        println!("{line}");
    }
}
