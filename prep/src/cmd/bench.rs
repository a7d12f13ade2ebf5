//! `prep bench <stage>`: throughput and peak memory of each stage, for the README's figures.

use clap::Subcommand;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Subcommand)]
enum Stage {
    /// Ingest throughput (MB/s, rows/s) on generated jsonl.gz and StackExchange XML.
    Ingest(crate::bench::ingest::Args),
    /// Hard-negative mining (texts/s embedded, queries/s searched) against sentence-transformers.
    Mine(crate::bench::mine::Args),
    /// Mix throughput (pairs/s, tokens/s) on the bench corpus.
    Mix(crate::bench::mix::Args),
    /// Encoder throughput (sentences/s, tokens/s) on the bench corpus.
    Encode(crate::bench::encode::Args),
    /// Seconds per training step (forward + backward + AdamW) and loader batches/s.
    Train(crate::bench::train::Args),
    /// Loader batches/s from an object store (e.g. a local S3 emulator) against local disk, and
    /// with --train-steps the trainer's s/step on each, with peak RSS.
    Store(crate::bench::store::Args),
    /// Embeddings and 3 AdamW steps against the PyTorch reference, on --device at --precision.
    Parity(crate::bench::parity::Args),
    /// The data-parallel step's exchanges alone (all-gather of embeddings, all-reduce of the
    /// gradient) at the recipe's shape: NCCL on GPUs, MPI under mpirun.
    Collective(crate::bench::collective::Args),
}

impl Args {
    /// Whether this benchmark trains (and so wants [`crate::keep_freed_memory`]'s heap).
    pub fn trains(&self) -> bool {
        matches!(
            self.stage,
            Stage::Train(_) | Stage::Store(_) | Stage::Parity(_)
        )
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.stage {
        Stage::Ingest(a) => crate::bench::ingest::run(a),
        Stage::Mine(a) => crate::bench::mine::run(a),
        Stage::Mix(a) => crate::bench::mix::run(a),
        Stage::Encode(a) => crate::bench::encode::run(a),
        Stage::Train(a) => crate::bench::train::run(a),
        Stage::Parity(a) => crate::bench::parity::run(a),
        Stage::Collective(a) => crate::bench::collective::run(a),
        Stage::Store(a) => crate::bench::store::run(a),
    }
}
