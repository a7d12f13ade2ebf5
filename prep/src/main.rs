//! `prep`: a thin command line over the stage crates. Each subcommand lives in `cmd/<name>.rs`
//! with its own clap `Args`; this file only dispatches and prints errors.

mod bench;
mod cmd;
mod compute;
mod holdout;
mod model;
mod progress;
mod samples;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "prep",
    version,
    about = "Turn public question-answer dumps into training data and train sentence embedders",
    long_about = "prep turns the public question-answer datasets behind multi-qa-MiniLM-L6-cos-v1 into \
training data and trains the model.\n\nPipeline: download -> ingest (raw dumps to Parquet pairs) -> mix \
(weighted, tokenized shards) -> train (candle MNRL trainer) -> embed / search / eval.\n\nStart with \
`prep demo`, which runs the whole pipeline on bundled samples with no network."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    storage: cmd::storage::StoreArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch a source's raw files (or list the catalogue) into the local cache.
    Download(cmd::download::Args),
    /// Normalize a source's raw dump into Parquet pairs/triplets.
    Ingest(cmd::ingest::Args),
    /// Curate a pairs dataset with a model: hard negatives, consistency filter, semantic dedup.
    Mine(cmd::mine::Args),
    /// Sample datasets by data_config.json weights into tokenized training shards.
    Mix(cmd::mix::Args),
    /// Summarize a pairs dataset or a shard folder (counts, lengths, duplicates, samples).
    #[cfg(feature = "inspect")]
    Inspect(cmd::inspect::Args),
    /// Train a sentence embedder with MultipleNegativesRankingLoss on mixed shards.
    Train(cmd::train::Args),
    /// Embed texts with a sentence-transformers model.
    Embed(cmd::embed::Args),
    /// Search a corpus for the texts closest to a query.
    Search(cmd::search::Args),
    /// Measure retrieval quality (MRR@10, Recall@1/10, nDCG@10) on a pairs dataset.
    Eval(cmd::eval::Args),
    /// Run the whole pipeline on the bundled samples: ingest, mix, train, eval before and after.
    Demo(cmd::demo::Args),
    /// Measure the throughput and peak memory of a stage.
    Bench(cmd::bench::Args),
}

/// candle allocates a fresh buffer for every tensor op (a training step: thousands, many of
/// megabytes) and glibc's malloc hands large freed blocks back to the kernel, so the next op
/// page-faults fresh zeroed pages in again (a quarter of a CPU step's samples were the kernel's
/// page faults and page clearing). Keeping freed memory in the heap (trim threshold 2 GiB, 256
/// MiB top pad) took the bench step from 3.14 to 2.61 s (`prep bench train`, mean of 3 alternating runs
/// each). `PREP_MALLOC_DEFAULTS=1` keeps glibc's defaults; `MALLOC_*_` variables still apply.
///
/// Only commands that train set it: elsewhere it would keep every freed buffer in the
/// process's memory for the rest of the run (`prep mine --max-memory` counts on freed memory
/// going back: with these settings a 300k-pair mining run peaked ~60 MiB higher).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    if std::env::var_os("PREP_MALLOC_DEFAULTS").is_some() {
        return;
    }
    // SAFETY: mallopt only sets malloc's tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    // candle 0.11 runs large elementwise ops on its own pool whose caller spins until every
    // worker is done; beside gemm's rayon threads that spinning took a third of a training
    // step's CPU (perf), and the heavy elementwise work runs in the encoder's fused rayon ops
    // anyway. Set before any thread exists; a user's own setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // The ingest help lists every source with what it expects, built from the sources themselves.
    let command =
        Cli::command().mut_subcommand("ingest", |c| c.after_long_help(cmd::ingest::sources_help()));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let trains = match &cli.command {
        Command::Train(_) | Command::Demo(_) => true,
        Command::Bench(b) => b.trains(),
        _ => false,
    };
    if trains {
        // Still before any other thread exists: parsing the command line starts none.
        keep_freed_memory();
    }
    cli.storage.configure();
    let result = match cli.command {
        Command::Download(a) => cmd::download::run(a),
        Command::Ingest(a) => cmd::ingest::run(a),
        Command::Mine(a) => cmd::mine::run(a),
        Command::Mix(a) => cmd::mix::run(a),
        #[cfg(feature = "inspect")]
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Embed(a) => cmd::embed::run(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    if let Err(err) = result {
        // One readable line per cause, outermost first.
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
