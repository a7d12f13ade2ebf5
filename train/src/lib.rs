//! The MultipleNegativesRankingLoss trainer behind `prep train`: the multi-qa-MiniLM recipe
//! (UPSTREAM.md, "Training loop") in candle.
//!
//! - [`model::Trainable`]: `encoder::BertModel` over named variables (HF names), mean pooling,
//!   L2 normalisation, seeded dropout.
//! - [`loss`]: symmetric / one-way MNRL for pairs, one-way over `[positives; all negatives]` for
//!   batches with one or more negative columns.
//! - [`step`]: loss and gradients in one graph or GradCache mini-batches (same result).
//! - [`optim`]: AdamW, warmup + linear decay, gradient-norm clipping, as PyTorch computes them.
//! - [`checkpoint`]: sentence-transformers folders plus trainer state, written atomically.
//! - [`train`] / [`resume`]: the loop over the loader, JSONL log, progress, exact resume.

pub mod checkpoint;
pub mod collective;
pub mod error;
pub mod loss;
pub mod model;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod optim;
pub mod replicas;
pub mod step;
pub mod vocab;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use encoder::{DropoutRng, OpsPath, Precision};
use loader::{Loader, LoaderOptions, LoaderState, Verify};
use schemas::{OutputLock, Progress, ShardIndex, Unit};
use serde::{Deserialize, Serialize};

pub use checkpoint::TrainerState;
pub use collective::{Collective, Placement, Single};
pub use error::{Result, TrainError};
pub use loss::LossKind;
pub use model::Trainable;
pub use optim::{AdamW, AdamWConfig, ClipScope, ScheduleKind};
pub use step::{
    all_reduce_grads, clip_per_rank_and_average, loss_and_grads, loss_and_grads_distributed,
    rank_loss_and_grads, Columns, Dropout, LossConfig, StepGrads,
};

/// Everything that decides the numbers a run produces. Saved in every checkpoint; a resume
/// continues with exactly these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lr: f64,
    pub warmup: u64,
    pub schedule: ScheduleKind,
    pub adamw: AdamWConfig,
    /// Gradient-norm clip; 0 turns clipping off.
    pub max_grad_norm: f64,
    /// Dropout rate for hidden states and attention; `None` keeps the model config's.
    pub dropout: Option<f64>,
    pub seed: u64,
    /// Optimizer steps in the run (the schedule's length); 0 = every batch in the shards.
    pub steps: u64,
    pub loss: LossKind,
    pub scale: f64,
    /// GradCache chunk size; `None` computes each batch in one graph.
    pub mini_batch_size: Option<usize>,
    /// Save a checkpoint every this many steps (and always at the end).
    pub save_steps: Option<u64>,
    /// `max_seq_length` written to `sentence_bert_config.json`.
    pub max_seq_length: usize,
    /// This process's rank and the run's world size (the launcher's; a resume takes the new
    /// launch's, so a run may continue at any world size dividing the batch size).
    pub rank: usize,
    pub world_size: usize,
    /// Dropout masks drawn per chunk from (seed, step, column, global row) instead of one
    /// stream in order: set when a run starts on several ranks, so that any world size with the
    /// same chunk boundaries draws the same masks. Checkpoints without it: `false`.
    #[serde(default)]
    pub dropout_per_chunk: bool,
    /// What `max_grad_norm` clips on several ranks (the exact global gradient by default).
    /// Checkpoints without it: `Global`.
    #[serde(default)]
    pub clip_scope: ClipScope,
}

impl Default for TrainConfig {
    /// Upstream's recipe.
    fn default() -> Self {
        TrainConfig {
            lr: 2e-5,
            warmup: 500,
            schedule: ScheduleKind::Linear,
            adamw: AdamWConfig::default(),
            max_grad_norm: 1.0,
            dropout: None,
            seed: 42,
            steps: 0,
            loss: LossKind::Symmetric,
            scale: 20.0,
            mini_batch_size: None,
            save_steps: None,
            max_seq_length: 256,
            rank: 0,
            world_size: 1,
            dropout_per_chunk: false,
            clip_scope: ClipScope::Global,
        }
    }
}

/// Per-invocation settings that do not change the numbers.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run folder: `checkpoint-N/` go here.
    pub output: PathBuf,
    /// JSONL log, one line per step.
    pub log: Option<PathBuf>,
    /// Where the run computes. Checkpoints hold no trace of it (weights and moments are saved as
    /// plain f32 tensors), so a run saved on one device resumes on any other.
    pub device: Device,
    /// Number format of the matrix products ([`Precision::check`]: the CPU takes f32 only).
    /// Master weights, gradients, AdamW moments, LayerNorm, softmax and the loss stay f32.
    pub precision: Precision,
    /// The ops path, when not the device's own ([`Compute::for_device`]): tests force
    /// [`OpsPath::Composed`] on the CPU to train the graph a GPU trains.
    pub ops: Option<OpsPath>,
    /// Batches the loader reads ahead.
    pub prefetch: usize,
    /// Stop (without a final save) after this many total steps: simulates an interruption.
    pub stop_after: Option<u64>,
    /// Test hook: make the save at this step fail midway.
    pub fail_save_at: Option<u64>,
    /// Train on a shard set whose index says it is incomplete (`complete: false`: a mix that
    /// was killed or is still running): the run covers the batches listed so far.
    pub allow_incomplete: bool,
    /// How shards are checked before the first step ([`Verify::Full`]: every shard hashed).
    pub verify: Verify,
}

impl RunOptions {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        RunOptions {
            output: output.into(),
            log: None,
            device: Device::Cpu,
            precision: Precision::F32,
            ops: None,
            prefetch: 4,
            stop_after: None,
            fail_save_at: None,
            allow_incomplete: false,
            verify: Verify::Full,
        }
    }
}

/// One line of the JSONL log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    pub dataset: String,
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for the loader's batch: near zero while the loader
    /// (on its own threads, reading ahead) keeps up, whatever the shards' location.
    #[serde(default)]
    pub data_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Records of the steps run by this call.
    pub records: Vec<StepRecord>,
    /// The last checkpoint written, if any.
    pub last_checkpoint: Option<PathBuf>,
    pub steps_done: u64,
    pub seconds: f64,
    /// sha256 of this rank's final parameters (ranks of one run print it: they must agree).
    pub weights_sha256: String,
    /// Bytes this rank handed to collectives per step (mean over this call's steps; 0 alone).
    pub bytes_per_step: f64,
}

/// What a shard folder holds, as far as training is concerned.
#[derive(Debug, Clone)]
pub struct ShardSet {
    pub index: ShardIndex,
    /// Batches listed in the index.
    pub batches: u64,
    /// The index says the mix is finished (an index without the flag: all `steps` listed).
    pub complete: bool,
}

impl ShardSet {
    /// One line for the user when training on an incomplete set.
    pub fn incomplete_notice(&self) -> Option<String> {
        (!self.complete).then(|| {
            format!(
                "the mix is incomplete: training on the {} batches listed so far (of {} asked \
                 of `prep mix`); with --steps 0 the learning-rate schedule is sized to those {}",
                self.batches, self.index.steps, self.batches
            )
        })
    }
}

/// Reads `dir/index.json` and refuses a set with no batches, or (unless `allow_incomplete`)
/// one whose mix is not finished.
pub fn check_shards(dir: &Path, allow_incomplete: bool) -> Result<ShardSet> {
    let index = ShardIndex::read(dir)?;
    let path = dir.join(schemas::SHARD_INDEX_FILE);
    let batches = index.total_batches();
    if batches == 0 {
        return Err(TrainError::invalid(
            path,
            format!(
                "lists no batches ({} shards): the mix wrote nothing yet; run `prep mix` to the end first",
                index.shards.len()
            ),
        ));
    }
    let complete = index.complete;
    if !complete && !allow_incomplete {
        return Err(TrainError::invalid(
            path,
            format!(
                "the mix is incomplete ({batches} of {} batches; `complete: false`: it was \
                 interrupted or is still running). Rerun the same `prep mix` to finish it, or \
                 pass --allow-incomplete to train on the {batches} batches there",
                index.steps
            ),
        ));
    }
    Ok(ShardSet {
        index,
        batches,
        complete,
    })
}

/// Opens a model folder: pretrained when it has `model.safetensors`, else a fresh model from its
/// `config.json` (seeded init), keeping its tokenizer files for the saved checkpoints.
pub fn open_model(dir: &Path, cfg: &TrainConfig, device: &Device) -> Result<Trainable> {
    if dir.join("model.safetensors").is_file() {
        Trainable::from_pretrained(dir, cfg.dropout, device)
    } else {
        let config = encoder::BertConfig::from_file(&dir.join("config.json"))?;
        let mut m = Trainable::fresh(&config, cfg.seed, cfg.dropout, device)?;
        m.source = Some(dir.to_owned());
        Ok(m)
    }
}

/// Sets `model` to compute as `run` asks: the device's ops path (or `run.ops`) with matrix
/// products at `run.precision` (refused where the device cannot run it).
pub fn configure_compute(model: &mut Trainable, run: &RunOptions) -> Result<()> {
    model.set_precision(run.precision, run.ops)
}

/// Trains from the start of `shards` with the model in `model_dir`, in one process.
pub fn train(
    shards: &Path,
    model_dir: &Path,
    cfg: &TrainConfig,
    run: &RunOptions,
    progress: &dyn Progress,
) -> Result<TrainSummary> {
    train_with(shards, model_dir, cfg, run, progress, &Single)
}

/// [`train`] as one rank of `coll`'s world: `cfg.rank`/`cfg.world_size` must be the
/// collective's (rank 0 alone writes the log and checkpoints).
pub fn train_with(
    shards: &Path,
    model_dir: &Path,
    cfg: &TrainConfig,
    run: &RunOptions,
    progress: &dyn Progress,
    coll: &dyn Collective,
) -> Result<TrainSummary> {
    check_placement(cfg.rank, cfg.world_size, coll)?;
    let lock = lock_if_root(run, coll)?;
    let set = check_shards(shards, run.allow_incomplete)?;
    let mut cfg = cfg.clone();
    if cfg.steps == 0 {
        // Fixed now, so a resume keeps this schedule even if the shard set grows meanwhile.
        cfg.steps = set.batches;
    }
    cfg.dropout_per_chunk |= coll.world_size() > 1;
    let cfg = &cfg;
    let mut model = open_model(model_dir, cfg, &run.device)?;
    configure_compute(&mut model, run)?;
    let opt = AdamW::new(&model.vars, cfg.adamw).map_err(|e| candle_err("optimizer", e))?;
    let rng = (model.dropout > 0.0).then(|| DropoutRng::new(dropout_seed(cfg)));
    let state = TrainerState {
        step: 0,
        loader: LoaderState::default(),
        dropout_rng: rng.as_ref().map(|r| r.state()),
        shards: shards.to_owned(),
        shards_url: store::Mirror::detect(shards)
            .map_err(loader::LoaderError::from)?
            .map(|m| m.remote().url().to_owned()),
        shards_fingerprint: set.index.fingerprint.clone(),
        config: cfg.clone(),
        prep_version: schemas::PREP_VERSION.to_owned(),
    };
    if let (Some(log), 0) = (&run.log, coll.rank()) {
        // A fresh run starts a fresh log.
        schemas::AtomicFile::write_all(log, b"")?;
    }
    run_loop(model, opt, rng, state, run, progress, coll, lock)
}

/// The run's rank and world size must be the collective's: the loader slices by them.
fn check_placement(rank: usize, world_size: usize, coll: &dyn Collective) -> Result<()> {
    if (rank, world_size) != (coll.rank(), coll.world_size()) {
        return Err(TrainError::Config(format!(
            "rank {rank} of {world_size} was asked for, but this process is rank {} of {} \
             ranks exchanging gradients{}",
            coll.rank(),
            coll.world_size(),
            if coll.world_size() == 1 {
                " (several ranks need a launcher: mpirun or srun, and a build with --features mpi)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// Rank 0 alone locks (and writes) the run folder; the others only read.
fn lock_if_root(run: &RunOptions, coll: &dyn Collective) -> Result<Option<OutputLock>> {
    if coll.rank() == 0 {
        Ok(Some(OutputLock::acquire(&run.output)?))
    } else {
        Ok(None)
    }
}

/// The run folder a resume from `from` continues in when no output is given: the folder
/// holding the checkpoint, or `from` itself when it is a run folder.
pub fn run_folder_of(from: &Path) -> PathBuf {
    if from.join(checkpoint::TRAINER_STATE_FILE).is_file() {
        match from.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    } else {
        from.to_owned()
    }
}

/// Continues from a checkpoint folder (or the newest complete one in a run folder) with the
/// settings saved in it, giving the same losses as a run that never stopped.
pub fn resume(from: &Path, run: &RunOptions, progress: &dyn Progress) -> Result<TrainSummary> {
    resume_with(from, run, progress, &Single)
}

/// [`resume`] as one rank of `coll`'s world, which may differ from the world that saved the
/// checkpoint: the global batch order does not depend on ranks.
pub fn resume_with(
    from: &Path,
    run: &RunOptions,
    progress: &dyn Progress,
    coll: &dyn Collective,
) -> Result<TrainSummary> {
    resume_from(Resumption::find(from, run, coll)?, run, progress, coll)
}

/// A checkpoint to resume from, found and read, with the shard folder it will read
/// ([`resume_shards`]), for callers that look at the shards before the run goes on. It holds
/// the run folder's lock (on rank 0) from the start: a folder another run is writing is
/// refused as such before anything is read from it.
pub struct Resumption {
    dir: PathBuf,
    state: TrainerState,
    lock: Option<OutputLock>,
}

impl Resumption {
    /// Locks `run`'s output folder (rank 0 of `coll`), then reads the newest complete
    /// checkpoint under `from` (or `from` itself): its state and shards.
    pub fn find(from: &Path, run: &RunOptions, coll: &dyn Collective) -> Result<Resumption> {
        let lock = lock_if_root(run, coll)?;
        let dir = checkpoint::find_latest(from)?;
        let mut state = checkpoint::read_state(&dir)?;
        state.shards = resume_shards(&state)?;
        Ok(Resumption { dir, state, lock })
    }

    /// The local shard folder the resumed run reads.
    pub fn shards(&self) -> &Path {
        &self.state.shards
    }
}

/// Continues the run saved at `resumption` ([`resume_with`] once it is found).
pub fn resume_from(
    resumption: Resumption,
    run: &RunOptions,
    progress: &dyn Progress,
    coll: &dyn Collective,
) -> Result<TrainSummary> {
    let Resumption {
        dir,
        mut state,
        lock,
    } = resumption;
    state.config.rank = coll.rank();
    state.config.world_size = coll.world_size();
    state.config.dropout_per_chunk |= coll.world_size() > 1;
    let mut model = Trainable::from_pretrained(&dir, state.config.dropout, &run.device)?;
    configure_compute(&mut model, run)?;
    let mut opt =
        AdamW::new(&model.vars, state.config.adamw).map_err(|e| candle_err("optimizer", e))?;
    checkpoint::load_optimizer(&dir, &model, &mut opt, state.step)?;
    // Saved folders keep the original tokenizer and config, so they are the source from now on.
    model.source = Some(dir.clone());
    let rng = state.dropout_rng.map(DropoutRng::from_state);
    if let (Some(log), 0) = (&run.log, coll.rank()) {
        truncate_log(log, state.step)?;
    }
    run_loop(model, opt, rng, state, run, progress, coll, lock)
}

/// The shard folder a resume of `state` reads: remote shards through a mirror reopened under
/// this process's cache (the saved mirror folder may be another machine's), local ones where they
/// were. Refuses a folder that now holds another mix than the one the run started on.
fn resume_shards(state: &TrainerState) -> Result<PathBuf> {
    let dir = match &state.shards_url {
        Some(url) => store::Mirror::open(url)
            .map_err(loader::LoaderError::from)?
            .dir()
            .to_owned(),
        None => state.shards.clone(),
    };
    let index = ShardIndex::read(&dir)?;
    if !state.shards_fingerprint.is_null() && index.fingerprint != state.shards_fingerprint {
        let place = state
            .shards_url
            .clone()
            .unwrap_or_else(|| dir.display().to_string());
        return Err(TrainError::invalid(
            dir.join(schemas::SHARD_INDEX_FILE),
            format!(
                "{place} now holds another mix than the one this run started on (its inputs or \
                 options differ): resume against the original shards"
            ),
        ));
    }
    Ok(dir)
}

fn dropout_seed(cfg: &TrainConfig) -> u64 {
    // One stream for the whole run: data-parallel ranks draw per-chunk streams from it
    // (`Dropout::PerChunk`), so no rank's masks depend on its rank.
    cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1)
}

fn candle_err(context: &str, source: candle_core::Error) -> TrainError {
    TrainError::Candle {
        context: context.to_owned(),
        source,
    }
}

/// Keeps the log lines of steps `<= step` (a resumed run rewrites what came after).
fn truncate_log(log: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in text.lines() {
        let keep = serde_json::from_str::<StepRecord>(line)
            .map(|r| r.step <= step)
            .unwrap_or(false);
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    schemas::AtomicFile::write_all(log, kept.as_bytes())?;
    Ok(())
}

/// What one step produced, before it is logged.
struct StepOutcome {
    loss: f64,
    lr: f64,
    grad_norm: f64,
}

/// Forward, backward (exchanging embeddings and gradients across ranks when there are several),
/// clipping (on the global gradient's norm, or upstream's per-rank clip then average), and the
/// AdamW update: identical on every rank.
#[allow(clippy::too_many_arguments)]
fn one_step(
    model: &Trainable,
    opt: &mut AdamW,
    rng: Option<&mut DropoutRng>,
    cfg: &TrainConfig,
    step: u64,
    total: u64,
    batch: &loader::Batch,
    coll: &dyn Collective,
) -> Result<StepOutcome> {
    let lr = optim::lr_at(cfg.schedule, cfg.lr, cfg.warmup, total, step);
    let loss_cfg = LossConfig {
        kind: cfg.loss,
        scale: cfg.scale,
    };
    let cols = Columns::of(batch);
    let (loss, grads, grad_norm) = if cfg.dropout_per_chunk || coll.world_size() > 1 {
        let dropout = if model.dropout > 0.0 {
            Dropout::PerChunk {
                seed: dropout_seed(cfg),
                step,
                first_row: 0,
            }
        } else {
            Dropout::Off
        };
        let mini = cfg.mini_batch_size;
        match cfg.clip_scope {
            ClipScope::Global => {
                let g = loss_and_grads_distributed(model, &cols, loss_cfg, mini, dropout, coll)?;
                clip_global(g, cfg.max_grad_norm)?
            }
            ClipScope::PerRank => {
                let g = rank_loss_and_grads(model, &cols, loss_cfg, mini, dropout, coll)?;
                let (grads, norm) = clip_per_rank_and_average(g.grads, cfg.max_grad_norm, coll)?;
                (g.loss, grads, norm)
            }
        }
    } else {
        let g = loss_and_grads(model, &cols, loss_cfg, cfg.mini_batch_size, rng)?;
        clip_global(g, cfg.max_grad_norm)?
    };
    if !loss.is_finite() {
        return Err(TrainError::NonFinite {
            step: step + 1,
            loss,
        });
    }
    opt.step(&model.vars, &grads, lr)
        .map_err(|e| candle_err("AdamW step", e))?;
    Ok(StepOutcome {
        loss,
        lr,
        grad_norm,
    })
}

/// Clips the (global-batch) gradients on their norm: loss, clipped gradients, norm before.
fn clip_global(g: StepGrads, max_norm: f64) -> Result<(f64, Vec<Tensor>, f64)> {
    let StepGrads { loss, mut grads } = g;
    let norm =
        optim::clip_grad_norm(&mut grads, max_norm).map_err(|e| candle_err("clipping", e))?;
    Ok((loss, grads, norm))
}

/// The steps this run takes, checked against what the shards hold.
fn total_steps(cfg: &TrainConfig, shards: &Path, allow_incomplete: bool) -> Result<u64> {
    let index = check_shards(shards, allow_incomplete)?.index;
    let total = if cfg.steps == 0 {
        index.total_batches()
    } else {
        cfg.steps
    };
    if total > index.total_batches() {
        return Err(TrainError::invalid(
            shards.join(schemas::SHARD_INDEX_FILE),
            format!(
                "holds {} batches but {total} steps were asked for (mix more steps or lower --steps)",
                index.total_batches()
            ),
        ));
    }
    if index.batch_size % cfg.world_size as u64 != 0 {
        return Err(TrainError::invalid(
            shards.join(schemas::SHARD_INDEX_FILE),
            format!(
                "batches of {} rows do not split evenly over {} ranks: use a world size dividing {}",
                index.batch_size, cfg.world_size, index.batch_size
            ),
        ));
    }
    Ok(total)
}

/// The JSONL log, opened for appending (rank 0 only).
fn open_log(run: &RunOptions, coll: &dyn Collective) -> Result<Option<std::fs::File>> {
    match (&run.log, coll.rank()) {
        (Some(p), 0) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(Some)
            .map_err(|e| TrainError::io(p, e)),
        _ => Ok(None),
    }
}

/// Ranks agree on shards, weights and settings, then all take rank 0's weights and moments.
fn start_replicas(
    coll: &dyn Collective,
    model: &Trainable,
    opt: &mut AdamW,
    state: &TrainerState,
) -> Result<()> {
    if coll.world_size() == 1 {
        return Ok(());
    }
    replicas::agree_at_start(coll, &state.shards, model, state)?;
    replicas::broadcast_state(coll, model, opt)
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    model: Trainable,
    mut opt: AdamW,
    mut rng: Option<DropoutRng>,
    mut state: TrainerState,
    run: &RunOptions,
    progress: &dyn Progress,
    coll: &dyn Collective,
    // Held (not read) for the whole loop: no other run writes this run folder meanwhile.
    _lock: Option<OutputLock>,
) -> Result<TrainSummary> {
    let cfg = state.config.clone();
    let shards = state.shards.clone();
    let total = total_steps(&cfg, &shards, run.allow_incomplete)?;
    let loader_opts = LoaderOptions {
        rank: coll.rank(),
        world_size: coll.world_size(),
        prefetch: run.prefetch,
        verify: run.verify,
        end_batch: Some(total),
        device: run.device.clone(),
    };
    // Verifies the shards this run reads (all of them, by default) before the first step.
    let mut loader = Loader::open_with_progress(&shards, state.loader, &loader_opts, progress)?;
    start_replicas(coll, &model, &mut opt, &state)?;
    let mut log = open_log(run, coll)?;
    let root = coll.rank() == 0;
    if root {
        std::fs::create_dir_all(&run.output).map_err(|e| TrainError::io(&run.output, e))?;
    }
    progress.begin("train", Some(total), Unit::Items);
    progress.advance(state.step);
    let started = Instant::now();
    let sent_before = coll.bytes_sent();
    let mut records = Vec::new();
    let mut last_checkpoint = None;
    while state.step < total {
        if run.stop_after.is_some_and(|s| state.step >= s) {
            break;
        }
        let t0 = Instant::now();
        let batch = loader.next().ok_or_else(|| {
            TrainError::invalid(
                &shards,
                format!("shards ended before step {}", state.step + 1),
            )
        })??;
        let data_seconds = t0.elapsed().as_secs_f64();
        let out = one_step(
            &model,
            &mut opt,
            rng.as_mut(),
            &cfg,
            state.step,
            total,
            &batch,
            coll,
        )?;
        state.step += 1;
        state.loader = batch.next;
        state.dropout_rng = rng.as_ref().map(|r| r.state());
        let rec = StepRecord {
            step: state.step,
            loss: out.loss,
            lr: out.lr,
            grad_norm: out.grad_norm,
            dataset: batch.dataset.clone(),
            seconds: t0.elapsed().as_secs_f64(),
            data_seconds,
        };
        if let (Some(f), Some(p)) = (log.as_mut(), run.log.as_ref()) {
            let line = serde_json::to_string(&rec).expect("plain record");
            writeln!(f, "{line}").map_err(|e| TrainError::io(p, e))?;
        }
        progress.advance(1);
        progress.message(&format!(
            "loss {:.4} lr {:.2e} |g| {:.3}",
            out.loss, out.lr, out.grad_norm
        ));
        records.push(rec);

        let periodic = cfg
            .save_steps
            .is_some_and(|s| s > 0 && state.step.is_multiple_of(s));
        if (periodic || state.step == total) && root {
            let target = run.output.join(checkpoint::checkpoint_name(state.step));
            let fail = run.fail_save_at == Some(state.step);
            checkpoint::save(&target, &model, &opt, &state, fail)?;
            last_checkpoint = Some(target);
        }
    }
    progress.finish();
    let bytes_per_step = (coll.bytes_sent() - sent_before) as f64 / records.len().max(1) as f64;
    // A rank never returns before the others are done (rank 0's last save included).
    coll.barrier()?;
    Ok(TrainSummary {
        bytes_per_step,
        records,
        last_checkpoint,
        steps_done: state.step,
        seconds: started.elapsed().as_secs_f64(),
        weights_sha256: replicas::weights_sha256(&model)?,
    })
}
