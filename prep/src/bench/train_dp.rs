//! `prep bench train --world-size W`: data-parallel training against one process, in one run.
//!
//! The same global batch three ways: one process with W×T threads computing the step in one
//! graph (what `prep train` does alone); the same process through the data-parallel step in a
//! world of one (embeddings computed twice, GradCache-style: the compute the data-parallel step
//! adds, with no exchange); and W ranks started by `mpirun -np W`, T threads each, each on its
//! B/W rows, exchanging embeddings (all-gather) and gradients (all-reduce) over MPI. Each prints
//! seconds per step, CPU seconds per step, time in collectives, bytes this rank handed to them
//! per step, and peak RSS.

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use encoder::candle_core::Device;
use serde::{Deserialize, Serialize};
use train::{
    loss_and_grads_distributed, AdamW, AdamWConfig, Collective, Columns, Dropout, LossConfig,
    Trainable,
};

use super::train::{prepare, time_one_process, time_steps, Args, Prepared, Timing};

/// Marks the line of rank 0's stdout that carries every rank's figures to the parent.
const MARKER: &str = "prep-bench-ranks ";

/// One rank's figures (per timed step unless said).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RankFigures {
    mean_s: f64,
    min_s: f64,
    cpu_s: f64,
    /// In barriers before each collective: waiting for the slower rank.
    wait_s: f64,
    gather_s: f64,
    reduce_s: f64,
    gather_bytes: f64,
    reduce_bytes: f64,
    peak_rss_mib: f64,
}

// Carried between ranks only in an MPI build.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
impl RankFigures {
    const LEN: usize = 9;

    fn to_vec(&self) -> Vec<f32> {
        [
            self.mean_s,
            self.min_s,
            self.cpu_s,
            self.wait_s,
            self.gather_s,
            self.reduce_s,
            self.gather_bytes,
            self.reduce_bytes,
            self.peak_rss_mib,
        ]
        .iter()
        .map(|&x| x as f32)
        .collect()
    }

    fn from_slice(v: &[f32]) -> RankFigures {
        let f = |i: usize| v[i] as f64;
        RankFigures {
            mean_s: f(0),
            min_s: f(1),
            cpu_s: f(2),
            wait_s: f(3),
            gather_s: f(4),
            reduce_s: f(5),
            gather_bytes: f(6),
            reduce_bytes: f(7),
            peak_rss_mib: f(8),
        }
    }
}

/// A collective that times its all-gathers and all-reduces and counts the bytes handed to each.
/// A barrier before each separates waiting for the slower rank from the exchange itself.
struct Timed<'a> {
    inner: &'a dyn Collective,
    wait_s: Cell<f64>,
    gather_s: Cell<f64>,
    reduce_s: Cell<f64>,
    gather_bytes: Cell<u64>,
    reduce_bytes: Cell<u64>,
}

impl<'a> Timed<'a> {
    fn new(inner: &'a dyn Collective) -> Self {
        Timed {
            inner,
            wait_s: Cell::new(0.0),
            gather_s: Cell::new(0.0),
            reduce_s: Cell::new(0.0),
            gather_bytes: Cell::new(0),
            reduce_bytes: Cell::new(0),
        }
    }

    fn reset(&self) {
        self.wait_s.set(0.0);
        self.gather_s.set(0.0);
        self.reduce_s.set(0.0);
        self.gather_bytes.set(0);
        self.reduce_bytes.set(0);
    }

    /// Waits for every rank (timed as waiting), then starts timing a collective.
    fn start(&self) -> (Instant, u64) {
        let t0 = Instant::now();
        // Errors surface in the collective that follows; the barrier only times the wait.
        let _ = self.inner.barrier();
        self.wait_s
            .set(self.wait_s.get() + t0.elapsed().as_secs_f64());
        (Instant::now(), self.inner.bytes_sent())
    }

    /// Adds the seconds since `start` and the bytes handed to the inner collective since.
    fn stop(&self, (t0, b0): (Instant, u64), secs: &Cell<f64>, bytes: &Cell<u64>) {
        secs.set(secs.get() + t0.elapsed().as_secs_f64());
        bytes.set(bytes.get() + self.inner.bytes_sent() - b0);
    }
}

impl Collective for Timed<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn all_gather(&self, local: &[f32]) -> train::Result<Vec<f32>> {
        let started = self.start();
        let out = self.inner.all_gather(local);
        self.stop(started, &self.gather_s, &self.gather_bytes);
        out
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> train::Result<()> {
        let started = self.start();
        let out = self.inner.all_reduce_sum(buf);
        self.stop(started, &self.reduce_s, &self.reduce_bytes);
        out
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) -> train::Result<()> {
        self.inner.broadcast(buf, root)
    }
    fn barrier(&self) -> train::Result<()> {
        self.inner.barrier()
    }
    fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent()
    }
}

/// This rank's figures: the data-parallel step (as `prep train` runs it on several ranks:
/// per-chunk dropout, clip on the global gradient, AdamW) on its B/W rows of the batch.
fn time_rank(args: &Args, prepared: &Prepared, coll: &Timed) -> Result<RankFigures> {
    let rows = args.batch_size / coll.world_size();
    let mine = coll.rank() * rows..(coll.rank() + 1) * rows;
    let (a, p) = prepared.columns(mine)?;
    let model = Trainable::from_pretrained(&prepared.model_dir, None, &Device::Cpu)?;
    let mut opt = AdamW::new(&model.vars, AdamWConfig::default())?;
    let cols = Columns {
        anchor: &a,
        positive: &p,
        negatives: Vec::new(),
    };
    let mut index = 0u64;
    let step = || -> Result<()> {
        index += 1;
        let dropout = Dropout::PerChunk {
            seed: 1,
            step: index,
            first_row: 0,
        };
        let mut out = loss_and_grads_distributed(
            &model,
            &cols,
            LossConfig::default(),
            args.mini_batch_size,
            dropout,
            coll,
        )?;
        train::optim::clip_grad_norm(&mut out.grads, 1.0)?;
        opt.step(&model.vars, &out.grads, 2e-5)?;
        Ok(())
    };
    let timing = time_steps(args.steps, step, || coll.reset())?;
    Ok(figures(&timing, coll))
}

fn figures(timing: &Timing, coll: &Timed) -> RankFigures {
    let n = timing.times.len().max(1) as f64;
    RankFigures {
        mean_s: timing.mean(),
        min_s: timing.min(),
        cpu_s: timing.cpu_per_step.unwrap_or(f64::NAN),
        wait_s: coll.wait_s.get() / n,
        gather_s: coll.gather_s.get() / n,
        reduce_s: coll.reduce_s.get() / n,
        gather_bytes: coll.gather_bytes.get() as f64 / n,
        reduce_bytes: coll.reduce_bytes.get() as f64 / n,
        peak_rss_mib: super::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0),
    }
}

/// The parent: both one-process measurements here, then the W ranks under mpirun.
pub fn run(args: &Args) -> Result<()> {
    let w = args.world_size;
    if !args.batch_size.is_multiple_of(w) {
        bail!(
            "--batch-size {} does not split over {w} ranks",
            args.batch_size
        );
    }
    if !cfg!(feature = "mpi") {
        bail!(
            "--world-size {w} starts MPI ranks, and this prep was built without MPI: \
             `cargo build --release -p prep --features mpi` (Open MPI: openmpi-bin, \
             libopenmpi-dev, libclang-dev)"
        );
    }
    let per_rank = args.threads.unwrap_or(1);
    let threads = w * per_rank;
    // Set before the first parallel op sizes rayon's pool.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let prepared = prepare(args)?;
    let b = args.batch_size;
    eprintln!(
        "model {}, global batch {b} pairs ({} real tokens), max len {}, dropout as configured, \
         {} timed steps after one warm-up",
        prepared.model_dir.display(),
        prepared.tokens(0..b),
        args.max_length,
        args.steps
    );
    super::reset_peak_rss();
    let one = time_one_process(args, &prepared)?;
    let one_rss = super::peak_rss_mib();
    super::reset_peak_rss();
    let single = Timed::new(&train::Single);
    let dp1 = time_rank(args, &prepared, &single)?;
    let ranks = launch_ranks(args, &prepared, per_rank)?;
    report(
        args,
        &prepared,
        threads,
        per_rank,
        (&one, one_rss.as_str()),
        &dp1,
        &ranks,
    );
    Ok(())
}

/// `mpirun -np W` this binary as rank workers; rank 0's marked stdout line carries every rank's
/// figures back.
fn launch_ranks(args: &Args, prepared: &Prepared, per_rank: usize) -> Result<Vec<RankFigures>> {
    let exe = std::env::current_exe().context("locating this prep binary")?;
    let mut cmd = Command::new(&args.mpirun);
    cmd.args(["-np", &args.world_size.to_string()])
        // The ranks share the cores with nothing else of this benchmark; the OS places them.
        .args(["--oversubscribe", "--bind-to", "none"])
        .arg(exe)
        .args(["bench", "train", "--rank-worker"])
        .args(["--world-size", &args.world_size.to_string()])
        .args(["--threads", &per_rank.to_string()])
        .args(prepared.batch_flags(args));
    if let Some(m) = args.mini_batch_size {
        cmd.args(["--mini-batch-size", &m.to_string()]);
    }
    // Open MPI refuses to start as root (containers, CI machines) without both variables; the
    // benchmark starts only its own ranks.
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .with_context(|| format!("starting {} (Open MPI: openmpi-bin)", args.mpirun))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} -np {} failed ({}):\n{stdout}",
            args.mpirun,
            args.world_size,
            out.status
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .with_context(|| format!("rank 0 printed no figures:\n{stdout}"))?;
    serde_json::from_str(line).context("rank 0's figures")
}

fn mb(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} kB", bytes / 1e3)
    }
}

/// Prints the three measurements, one line each, then the ratio that matters.
fn report(
    args: &Args,
    prepared: &Prepared,
    threads: usize,
    per_rank: usize,
    one: (&Timing, &str),
    dp1: &RankFigures,
    ranks: &[RankFigures],
) {
    let (b, w) = (args.batch_size, args.world_size);
    let tokens = prepared.tokens(0..b) as f64;
    let (t1, rss1) = one;
    println!(
        "1 process x {threads} threads, one graph:          {:.3} s/step (min {:.3}), {} CPU s/step, {:.1} pairs/s, {:.0} tokens/s, peak RSS {rss1}",
        t1.mean(),
        t1.min(),
        t1.cpu(),
        b as f64 / t1.mean(),
        tokens / t1.mean()
    );
    println!(
        "1 process x {threads} threads, data-parallel step: {:.3} s/step (min {:.3}), {:.2} CPU s/step, {:.1} pairs/s (world of 1: embeddings computed twice, nothing exchanged), peak RSS {:.1} MiB",
        dp1.mean_s,
        dp1.min_s,
        dp1.cpu_s,
        b as f64 / dp1.mean_s,
        dp1.peak_rss_mib
    );
    let slowest = ranks.iter().map(|r| r.mean_s).fold(0.0, f64::max);
    let cpu: f64 = ranks.iter().map(|r| r.cpu_s).sum();
    let r0 = &ranks[0];
    let rss: Vec<String> = ranks
        .iter()
        .map(|r| format!("{:.1}", r.peak_rss_mib))
        .collect();
    println!(
        "{w} ranks x {per_rank} thread(s) over MPI:            {slowest:.3} s/step (rank 0 min {:.3}), {cpu:.2} CPU s/step (all ranks), {:.1} pairs/s, peak RSS {} MiB",
        r0.min_s,
        b as f64 / slowest,
        rss.join(" / ")
    );
    println!(
        "  per step, rank 0: waiting for the slower rank {:.3} s, all-gather of embeddings {:.3} s ({} handed over), all-reduce of gradients {:.3} s ({} handed over: reduce to rank 0 + broadcast)",
        r0.wait_s,
        r0.gather_s,
        mb(r0.gather_bytes),
        r0.reduce_s,
        mb(r0.reduce_bytes)
    );
    println!(
        "{w} ranks against 1 process on {threads} threads: {:.2}x the one-graph step's speed, {:.2}x the data-parallel step's",
        t1.mean() / slowest,
        dp1.mean_s / slowest
    );
}

/// One rank of the comparison (started by [`launch_ranks`] through mpirun).
#[cfg(feature = "mpi")]
pub fn rank_worker(args: &Args) -> Result<()> {
    if let Some(t) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let mpi = train::mpi::Mpi::init(std::time::Duration::from_secs(600)).context("starting MPI")?;
    let result = (|| -> Result<Vec<RankFigures>> {
        if mpi.world_size() != args.world_size {
            bail!(
                "MPI started {} ranks, --world-size says {}",
                mpi.world_size(),
                args.world_size
            );
        }
        let prepared = prepare(args)?;
        let timed = Timed::new(&mpi);
        let mine = time_rank(args, &prepared, &timed)?;
        let all = mpi.all_gather(&mine.to_vec())?;
        Ok(all
            .chunks_exact(RankFigures::LEN)
            .map(RankFigures::from_slice)
            .collect::<Vec<_>>())
    })();
    match result {
        Ok(all) if mpi.rank() == 0 => {
            println!("{MARKER}{}", serde_json::to_string(&all)?);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // The other ranks would wait in their next collective: end them all.
            eprintln!("error: rank {}: {e:#}", mpi.rank());
            mpi.abort(1)
        }
    }
}

#[cfg(not(feature = "mpi"))]
pub fn rank_worker(_: &Args) -> Result<()> {
    bail!("--rank-worker needs a build with --features mpi")
}
