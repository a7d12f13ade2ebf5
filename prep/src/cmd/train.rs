//! `prep train`: MultipleNegativesRankingLoss training on mixed shards, upstream's recipe by
//! default (AdamW 2e-5, warmup 500 then linear decay, clip 1.0, scale 20, symmetric pair loss).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use train::{AdamWConfig, LossKind, RunOptions, ScheduleKind, TrainConfig};

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
    /// Shard folder written by `prep mix` (index.json + shard-*.parquet). Not needed with --resume.
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
    /// This process's rank for data-parallel training (each rank reads its own slice of every batch).
    #[arg(long, default_value_t = 0)]
    pub rank: usize,
    #[arg(long, default_value_t = 1)]
    pub world_size: usize,
    /// max_seq_length written into the saved sentence_bert_config.json.
    #[arg(long, default_value_t = 256)]
    pub max_seq_length: usize,
    /// Batches the loader reads ahead on its thread.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Threads for the math (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
            rank: self.rank,
            world_size: self.world_size,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        // candle's CPU kernels size their pools from this.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let summary = run_with(&args, &Bar::new())?;
    if let Some(ck) = &summary.last_checkpoint {
        println!("model saved to {}", ck.display());
    }
    Ok(())
}

/// Runs training and prints a one-line summary; `prep demo` calls this too.
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

pub fn run_with(args: &Args, bar: &Bar) -> Result<train::TrainSummary> {
    let mut opts = RunOptions::new(output_folder(args));
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
            let dir = train::checkpoint::find_latest(from).with_context(context)?;
            let state = train::checkpoint::read_state(&dir).with_context(context)?;
            notice_incomplete(&state.shards, args.allow_incomplete)?;
            train::resume(from, &opts, bar)
                .with_context(|| format!("resuming from {}", from.display()))?
        }
        None => {
            let Some(shards) = &args.shards else {
                bail!("give the shard folder (prep train SHARDS --model M) or --resume DIR")
            };
            let Some(model) = &args.model else {
                bail!("--model is required (a model folder to fine-tune or a config-only folder)")
            };
            notice_incomplete(shards, args.allow_incomplete)?;
            let model = crate::model::resolve(model)?;
            train::train(shards, &model, &args.config(), &opts, bar)
                .with_context(|| format!("training on {}", shards.display()))?
        }
    };
    let n = summary.records.len();
    if n > 0 {
        let last = summary.records.last().expect("n > 0");
        let mean_loss_tail: f64 = summary.records[n.saturating_sub(10)..]
            .iter()
            .map(|r| r.loss)
            .sum::<f64>()
            / n.min(10) as f64;
        eprintln!(
            "trained {n} steps (to step {}) in {:.1}s, {:.3} s/step; loss (last 10 mean) {mean_loss_tail:.4}, lr {:.2e}",
            summary.steps_done,
            summary.seconds,
            summary.seconds / n as f64,
            last.lr
        );
    }
    Ok(summary)
}
