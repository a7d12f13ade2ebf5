//! `prep train`: MultipleNegativesRankingLoss training on mixed shards, upstream's recipe by
//! default (AdamW 2e-5, warmup 500 then linear decay, clip 1.0, scale 20, symmetric pair loss).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use train::{AdamWConfig, ClipScope, LossKind, RunOptions, ScheduleKind, TrainConfig};

use crate::compute::ComputeArgs;
use crate::progress::Bar;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Loss {
    /// (CE(S) + CE(Sᵀ)) / 2 for pairs (upstream's train_script)
    Symmetric,
    /// CE(S) only (sentence-transformers' MultipleNegativesRankingLoss)
    OneWay,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Schedule {
    Linear,
    Constant,
}

/// What --max-grad-norm clips on several ranks.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Clip {
    /// The exact global-batch gradient's norm: the same update as one process on the whole
    /// batch, at any world size
    Global,
    /// Upstream's TPU semantics: each rank clips its own share of the gradient, then the ranks
    /// average (depends on the world size; the same as global on one process)
    PerRank,
}

/// How shards are checked before the first step.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum VerifyMode {
    /// Hash every shard the run reads (about 1 s per GB here; see the README)
    Full,
    /// Check every shard's Parquet footer and row count and hash the first and last; the others
    /// are hashed just before they are read, so a damaged one fails when reached
    Fast,
}

#[derive(clap::Args)]
pub struct Args {
    /// Shard folder written by `prep mix` (index.json + shard-*.parquet), or its s3:// (gs://,
    /// az://, https://) location: shards are streamed into a local cache (--cache-dir) as
    /// training reaches them, --prefetch-shards ahead, each verified by sha256 before use. Not
    /// needed with --resume.
    pub shards: Option<PathBuf>,
    /// Model folder to start from: a sentence-transformers/HF BERT folder, or a folder with only
    /// config.json + tokenizer files (weights initialised from --seed).
    #[arg(long)]
    pub model: Option<String>,
    /// Run folder: checkpoint-N/ folders are written here [default: run, or with --resume the
    /// run folder being resumed]. Locked for the run: a second run into it fails at once.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Continue from a checkpoint-N folder, or the newest complete one in a run folder, with the
    /// settings saved there (the other numeric flags are ignored). Continues in that run folder
    /// unless --output says otherwise.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Train even though index.json says the mix is incomplete (`complete: false`: killed or
    /// still running): on the batches listed so far. A shard set with no batches is always refused.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// How shards are checked against index.json before the first step.
    #[arg(long, value_enum, default_value = "full")]
    pub verify: VerifyMode,
    /// Optimizer steps (0: every batch in the shards). The linear schedule decays to 0 here.
    #[arg(long, default_value_t = 0)]
    pub steps: u64,
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    #[arg(long, value_enum, default_value = "linear")]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// Gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// On several ranks: clip the global gradient, or each rank's share then average (upstream).
    #[arg(long, value_enum, default_value = "global")]
    pub clip_scope: Clip,
    /// Dropout for hidden states and attention (default: the model config's, 0.1 for MiniLM).
    #[arg(long)]
    pub dropout: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "symmetric")]
    pub loss: Loss,
    /// Scores = scale × cosine.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// GradCache: compute each batch in chunks of this many rows (same loss and gradients,
    /// the memory of one chunk).
    #[arg(long)]
    pub mini_batch_size: Option<usize>,
    /// Save a checkpoint every N steps (always at the end).
    #[arg(long)]
    pub save_steps: Option<u64>,
    /// JSONL log: one line per step (step, loss, lr, grad_norm before clipping, dataset, seconds).
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub parallel: Parallel,
    /// max_seq_length written into the saved sentence_bert_config.json.
    #[arg(long, default_value_t = 256)]
    pub max_seq_length: usize,
    /// Batches the loader reads ahead on its thread.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Threads for the math (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Data-parallel training: W ranks started by a launcher (`mpirun -np W`, `srun`) train one model.
#[derive(clap::Args, Clone)]
pub struct Parallel {
    /// This process's rank [default: the launcher's: OMPI_COMM_WORLD_RANK, PMI_RANK or
    /// SLURM_PROCID; 0 without one]. An override: it must match MPI's rank.
    #[arg(long)]
    pub rank: Option<usize>,
    /// Ranks in the run [default: the launcher's: OMPI_COMM_WORLD_SIZE, PMI_SIZE or
    /// SLURM_NTASKS; 1 without one]. More than 1 needs a build with `--features mpi`.
    #[arg(long)]
    pub world_size: Option<usize>,
    /// Seconds a collective (embedding all-gather, gradient all-reduce, start-up checks) may
    /// wait for the other ranks before this rank aborts the whole MPI job: a rank that died or
    /// hangs never holds the others forever. It covers rank 0's checkpoint saves and the
    /// ranks' differing start-up times (shard verification), so keep it well above those.
    #[arg(long, default_value_t = 120)]
    pub collective_timeout: u64,
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel {
            rank: None,
            world_size: None,
            collective_timeout: 120,
        }
    }
}

impl Args {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            warmup: self.warmup,
            schedule: match self.schedule {
                Schedule::Linear => ScheduleKind::Linear,
                Schedule::Constant => ScheduleKind::Constant,
            },
            adamw: AdamWConfig {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: self.weight_decay,
            },
            max_grad_norm: self.max_grad_norm,
            dropout: self.dropout,
            seed: self.seed,
            steps: self.steps,
            loss: match self.loss {
                Loss::Symmetric => LossKind::Symmetric,
                Loss::OneWay => LossKind::OneWay,
            },
            scale: self.scale,
            mini_batch_size: self.mini_batch_size,
            save_steps: self.save_steps,
            max_seq_length: self.max_seq_length,
            rank: 0,
            world_size: 1,
            dropout_per_chunk: false,
            clip_scope: match self.clip_scope {
                Clip::Global => ClipScope::Global,
                Clip::PerRank => ClipScope::PerRank,
            },
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        // candle's CPU kernels size their pools from this.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let (launch, compute) = Launch::from_env(&args.parallel, &args.compute, false)?;
    let coll = launch.collective();
    let summary = if coll.rank() == 0 {
        train_on(&args, &compute, &Bar::new(), coll)
    } else {
        train_on(&args, &compute, &schemas::NoProgress, coll)
    };
    let summary = launch.or_abort(summary)?;
    if coll.world_size() > 1 {
        stderr_line(&format!(
            "rank {} of {}: final weights sha256 {}; {:.2} MB sent to collectives per step",
            coll.rank(),
            coll.world_size(),
            summary.weights_sha256,
            summary.bytes_per_step / 1e6
        ));
    }
    if let Some(ck) = &summary.last_checkpoint {
        println!("model saved to {}", ck.display());
    }
    Ok(())
}

/// Writes `line` and its newline to stderr in one `write` call. Rust's stderr is unbuffered, so
/// `eprintln!` issues a write per formatted piece, and the ranks of an `mpirun` job (which share
/// one forwarded stderr) would interleave mid-line.
fn stderr_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

/// This process's place in a data-parallel run, and the collective its ranks exchange through.
pub(crate) enum Launch {
    Single(train::Single),
    #[cfg(feature = "mpi")]
    Mpi(train::mpi::Mpi),
    #[cfg(feature = "nccl")]
    Nccl(train::nccl::Nccl),
}

impl Launch {
    /// Reads the launcher's environment and starts this rank's collective; plain `--device
    /// cuda` becomes this rank's own GPU, `cuda:<local rank>` (the compute settings returned).
    /// `nccl_alone`: a world of one on a GPU still exchanges through NCCL (its path, timed by
    /// `prep bench collective`), where training takes the no-op collective.
    pub(crate) fn from_env(
        p: &Parallel,
        compute: &ComputeArgs,
        nccl_alone: bool,
    ) -> Result<(Launch, ComputeArgs)> {
        let env = train::Placement::from_env().context("reading the launcher's environment")?;
        let compute = ComputeArgs {
            device: compute.device.for_local_rank(env.local_rank),
            ..compute.clone()
        };
        Ok((Self::start(p, env, &compute, nccl_alone)?, compute))
    }

    /// One process, or (launcher with several ranks, or `--world-size` > 1) MPI, checked
    /// against the overrides; on GPUs, NCCL between the ranks when built with it.
    fn start(
        p: &Parallel,
        env: train::Placement,
        compute: &ComputeArgs,
        nccl_alone: bool,
    ) -> Result<Launch> {
        let world = p.world_size.unwrap_or(env.world_size);
        if world <= 1 && env.world_size <= 1 {
            if let Some(r) = p.rank.filter(|&r| r != 0) {
                bail!("--rank {r} in a world of 1: give --world-size, or start the ranks with mpirun/srun");
            }
            if nccl_alone {
                return Self::alone_on_gpu(p, compute);
            }
            return Ok(Launch::Single(train::Single));
        }
        let mpi = Self::start_mpi(p, world)?;
        Self::between_gpus(mpi, p, compute)
    }

    /// NCCL in a world of one on a GPU (bootstrapped by the no-op collective).
    #[cfg(feature = "nccl")]
    fn alone_on_gpu(p: &Parallel, compute: &ComputeArgs) -> Result<Launch> {
        if compute.device == encoder::DeviceSpec::Cpu {
            return Ok(Launch::Single(train::Single));
        }
        let device = compute.open()?;
        let nccl = train::nccl::Nccl::init(Box::new(train::Single), &device, collective_timeout(p))
            .context("starting NCCL")?;
        Ok(Launch::Nccl(nccl))
    }

    #[cfg(not(feature = "nccl"))]
    fn alone_on_gpu(_: &Parallel, _: &ComputeArgs) -> Result<Launch> {
        Ok(Launch::Single(train::Single))
    }

    #[cfg(feature = "mpi")]
    fn start_mpi(p: &Parallel, world: usize) -> Result<train::mpi::Mpi> {
        use train::Collective;
        let mpi = train::mpi::Mpi::init(collective_timeout(p)).context("starting MPI")?;
        let (rank, size) = (mpi.rank(), mpi.world_size());
        if size != world || p.rank.is_some_and(|r| r != rank) {
            let asked = p
                .rank
                .map_or("this rank".to_owned(), |r| format!("rank {r}"));
            let msg = format!(
                "rank {rank}: MPI started {size} rank(s) and this is rank {rank}, but {asked} of \
                 {world} was asked for (--rank/--world-size must match the launcher's, e.g. \
                 mpirun -np {world}; processes not started together by mpirun or srun cannot \
                 exchange gradients)"
            );
            eprintln!("error: {msg}");
            mpi.abort(2);
        }
        Ok(mpi)
    }

    #[cfg(not(feature = "mpi"))]
    fn start_mpi(_: &Parallel, world: usize) -> Result<std::convert::Infallible> {
        bail!(
            "a world of {world} ranks needs MPI, and this prep was built without it: build with \
             `cargo build --release -p prep --features mpi` (Open MPI: openmpi-bin, libopenmpi-dev, \
             libclang-dev) and start the ranks with `mpirun -np {world} prep train ...` or srun"
        )
    }

    /// On GPUs the step's exchanges go over NCCL (built with `--features nccl`); otherwise MPI
    /// carries them through host memory, which works on any device.
    #[cfg(feature = "mpi")]
    fn between_gpus(mpi: train::mpi::Mpi, p: &Parallel, compute: &ComputeArgs) -> Result<Launch> {
        if compute.device == encoder::DeviceSpec::Cpu {
            return Ok(Launch::Mpi(mpi));
        }
        #[cfg(feature = "nccl")]
        {
            let device = match compute.open() {
                Ok(device) => device,
                Err(e) => return Launch::Mpi(mpi).or_abort(Err(e)),
            };
            let nccl = train::nccl::Nccl::init(Box::new(mpi), &device, collective_timeout(p))
                .context("starting NCCL")?;
            Ok(Launch::Nccl(nccl))
        }
        #[cfg(not(feature = "nccl"))]
        {
            let _ = p;
            if train::Collective::rank(&mpi) == 0 {
                eprintln!(
                    "warning: this prep has no NCCL: the ranks exchange embeddings and gradients \
                     through host memory over MPI (rebuild with --features cuda,mpi,nccl)"
                );
            }
            Ok(Launch::Mpi(mpi))
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn between_gpus(
        never: std::convert::Infallible,
        _: &Parallel,
        _: &ComputeArgs,
    ) -> Result<Launch> {
        match never {}
    }

    pub(crate) fn collective(&self) -> &dyn train::Collective {
        match self {
            Launch::Single(s) => s,
            #[cfg(feature = "mpi")]
            Launch::Mpi(m) => m,
            #[cfg(feature = "nccl")]
            Launch::Nccl(n) => n,
        }
    }

    /// With several ranks, a failing rank says why and ends every rank of the job (the others
    /// would otherwise wait in their next collective until the watchdog's timeout).
    pub(crate) fn or_abort<T>(&self, r: Result<T>) -> Result<T> {
        let coll = self.collective();
        match r {
            Err(e) if coll.world_size() > 1 => {
                stderr_line(&format!("error: rank {}: {e:#}", coll.rank()));
                // Ranks failing the same check at once (a mismatch) all get to say so.
                std::thread::sleep(std::time::Duration::from_millis(500));
                coll.abort(1)
            }
            r => r,
        }
    }
}

#[cfg(any(feature = "mpi", feature = "nccl"))]
fn collective_timeout(p: &Parallel) -> std::time::Duration {
    std::time::Duration::from_secs(p.collective_timeout.max(1))
}

/// The run folder: `--output`, else the run being resumed, else `run`.
fn output_folder(args: &Args) -> PathBuf {
    match (&args.output, &args.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(from)) => train::run_folder_of(from),
        (None, None) => PathBuf::from("run"),
    }
}

/// Says so before training when the shard set is incomplete (and allowed).
fn notice_incomplete(shards: &std::path::Path, allow: bool) -> Result<()> {
    let set = train::check_shards(shards, allow)
        .with_context(|| format!("checking {}", shards.display()))?;
    if let Some(notice) = set.incomplete_notice() {
        eprintln!("warning: {}: {notice}", shards.display());
    }
    Ok(())
}

/// Runs training as one rank of `coll`'s world; rank 0 prints a one-line summary.
fn train_on(
    args: &Args,
    compute: &ComputeArgs,
    bar: &dyn schemas::Progress,
    coll: &dyn train::Collective,
) -> Result<train::TrainSummary> {
    let mut opts = RunOptions::new(output_folder(args));
    opts.device = compute.open()?;
    opts.precision = compute.precision;
    opts.log = args.log.clone();
    opts.prefetch = args.prefetch;
    opts.allow_incomplete = args.allow_incomplete;
    opts.verify = match args.verify {
        VerifyMode::Full => loader::Verify::Full,
        VerifyMode::Fast => loader::Verify::Fast,
    };
    let summary = match &args.resume {
        Some(from) => {
            let context = || format!("resuming from {}", from.display());
            let resumption = train::Resumption::find(from, &opts, coll).with_context(context)?;
            notice_incomplete(resumption.shards(), args.allow_incomplete)?;
            train::resume_from(resumption, &opts, bar, coll).with_context(context)?
        }
        None => {
            let Some(shards) = &args.shards else {
                bail!("give the shard folder (prep train SHARDS --model M) or --resume DIR")
            };
            // A remote shard set trains from its mirror folder, which the loader fills.
            let mirror = match super::storage::remote(shards)? {
                Some(r) => Some(
                    store::Mirror::open(r.url())
                        .with_context(|| format!("opening {}", shards.display()))?,
                ),
                None => None,
            };
            let shards = &mirror
                .as_ref()
                .map_or_else(|| shards.clone(), |m| m.dir().to_owned());
            let Some(model) = &args.model else {
                bail!("--model is required (a model folder to fine-tune or a config-only folder)")
            };
            notice_incomplete(shards, args.allow_incomplete)?;
            let model = crate::model::resolve(model)?;
            let mut config = args.config();
            (config.rank, config.world_size) = (coll.rank(), coll.world_size());
            train::train_with(shards, &model, &config, &opts, bar, coll)
                .with_context(|| format!("training on {}", shards.display()))?
        }
    };
    let n = summary.records.len();
    if n > 0 && coll.rank() == 0 {
        let last = summary.records.last().expect("n > 0");
        let mean_loss_tail: f64 = summary.records[n.saturating_sub(10)..]
            .iter()
            .map(|r| r.loss)
            .sum::<f64>()
            / n.min(10) as f64;
        stderr_line(&format!(
            "trained {n} steps (to step {}) in {:.1}s, {:.3} s/step; loss (last 10 mean) {mean_loss_tail:.4}, lr {:.2e}",
            summary.steps_done,
            summary.seconds,
            summary.seconds / n as f64,
            last.lr
        ));
    }
    Ok(summary)
}
