//! `prep bench collective`: the data-parallel step's two exchanges alone, at the recipe's shape:
//! the all-gather of every column's embeddings (B/W rows × 384 per rank and column) and the
//! all-reduce of the whole gradient (the model's parameter count, f32). On a GPU built with
//! `--features nccl` they run over NCCL (a world of one needs no launcher: NCCL's own path from
//! the device buffer through the communicator and back); on the CPU, or under `mpirun` in an
//! MPI build, over MPI. Prints milliseconds per call and the bus bandwidth NCCL's tests report
//! (bytes each rank moves, scaled by 2(W−1)/W for an all-reduce, (W−1)/W for an all-gather).

use std::time::Instant;

use anyhow::Result;
use encoder::candle_core::{DType, Device, Tensor};
use train::Collective;

use crate::cmd::train::Launch;
use crate::compute::ComputeArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Global batch (pairs); each rank holds batch/W rows of each column.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Columns gathered per step (2 for pairs, 3 for triplets).
    #[arg(long, default_value_t = 2)]
    pub columns: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Gradient elements reduced per step [default: all-MiniLM-L6-v2's 22,713,216 parameters].
    #[arg(long, default_value_t = 22_713_216)]
    pub params: usize,
    /// Timed repetitions (after one untimed warm-up).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub parallel: crate::cmd::train::Parallel,
}

pub fn run(args: Args) -> Result<()> {
    let (launch, compute) = Launch::from_env(&args.parallel, &args.compute, true)?;
    let result = exchange(&args, &compute, launch.collective());
    launch.or_abort(result)
}

/// Times the two exchanges over `coll` and (rank 0) prints them.
fn exchange(args: &Args, compute: &ComputeArgs, coll: &dyn Collective) -> Result<()> {
    let device = compute.open()?;
    let (world, rank) = (coll.world_size(), coll.rank());
    anyhow::ensure!(
        args.batch_size.is_multiple_of(world) && args.batch_size > 0,
        "--batch-size {} is not a positive multiple of the world size {world}",
        args.batch_size
    );
    let rows = args.batch_size / world;
    let local = Tensor::ones((rows, args.dim), DType::F32, &device)?;
    let grads = vec![Tensor::ones(args.params, DType::F32, &device)?];
    let gather = time(args.iters, || {
        for _ in 0..args.columns {
            let all = coll.all_gather_rows(&local)?;
            anyhow::ensure!(
                all.dims2()? == (args.batch_size, args.dim),
                "gathered shape"
            );
        }
        Ok(())
    })?;
    let reduce = time(args.iters, || {
        let summed = coll.all_reduce_sum_tensors(grads.clone())?;
        // The first element proves the sum (every rank contributed ones).
        let first = summed[0].narrow(0, 0, 1)?.to_vec1::<f32>()?[0];
        anyhow::ensure!(
            first == world as f32,
            "all-reduce gave {first}, not {world}"
        );
        Ok(())
    })?;
    if rank == 0 && world == 1 && backend(&device) != "NCCL" {
        println!(
            "a world of one over {}: nothing leaves the process (start the ranks with mpirun, \
             or use --device cuda in a build with --features nccl)",
            backend(&device)
        );
        return Ok(());
    }
    if rank == 0 {
        let w = world as f64;
        let gather_bytes = (args.columns * rows * args.dim * 4) as f64 * w;
        let reduce_bytes = (args.params * 4) as f64;
        let bus = |bytes: f64, factor: f64, s: f64| bytes * factor / s / 1e9;
        println!(
            "collectives on {} over {}, world of {world}: batch {} × {} columns × {} dims, {} gradient elements",
            compute.device, backend(&device), args.batch_size, args.columns, args.dim, args.params
        );
        println!(
            "all-gather of embeddings (per step, {} calls): {:8.3} ms  ({:.1} MB, bus {:.1} GB/s)",
            args.columns,
            gather * 1e3,
            gather_bytes / 1e6,
            bus(gather_bytes, (w - 1.0).max(1.0) / w, gather)
        );
        println!(
            "all-reduce of gradients (per step):          {:8.3} ms  ({:.1} MB, bus {:.1} GB/s)",
            reduce * 1e3,
            reduce_bytes / 1e6,
            bus(reduce_bytes, (2.0 * (w - 1.0)).max(1.0) / w, reduce)
        );
    }
    Ok(())
}

/// Mean seconds of `iters` calls of `f`, after one untimed warm-up call.
fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t0 = Instant::now();
    for _ in 0..iters.max(1) {
        f()?;
    }
    Ok(t0.elapsed().as_secs_f64() / iters.max(1) as f64)
}

fn backend(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "host memory",
        _ if cfg!(feature = "nccl") => "NCCL",
        _ => "host memory (no NCCL in this build)",
    }
}
