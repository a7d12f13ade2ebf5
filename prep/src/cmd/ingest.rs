//! `prep ingest`: a source's raw dump into normalized Parquet datasets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ingest::IngestOptions;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Source to ingest (see the list below).
    #[arg(long)]
    pub source: String,
    /// Raw input files or folders (plain or .gz). Without it, the files `prep download` cached.
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Output folder: one sub-folder per dataset id.
    #[arg(long, default_value = "data/pairs")]
    pub out: PathBuf,
    /// Malformed records tolerated (each counted and reported) before the run fails.
    #[arg(long, default_value_t = 1000)]
    pub max_errors: u64,
    /// Parsing threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dataset id for sources that write one dataset named by the user (`jsonl`).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Memory budget (MiB) for sources that join on disk (paq; default 1024).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Longest line (bytes) a line-oriented input may have: a longer one is counted as a
    /// malformed record naming its line and skipped without being held in memory.
    #[arg(long, default_value_t = ingest::input::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: u64,
    /// Download cache folder searched when --input is not given.
    #[arg(long, env = "PREP_CACHE")]
    pub dest: Option<PathBuf>,
}

/// The `--help` epilogue: every source and what it expects, then the text-normalisation policy.
pub fn sources_help() -> String {
    let mut s = String::from("Sources:\n");
    for src in ingest::sources() {
        let datasets: Vec<_> = src
            .datasets()
            .iter()
            .map(|(id, a)| format!("{id} ({} cols)", a.columns()))
            .collect();
        let writes = if datasets.is_empty() {
            "named by --dataset".to_owned()
        } else {
            datasets.join(", ")
        };
        s.push_str(&format!(
            "\n  {}  -> {}\n      {}\n",
            src.name(),
            writes,
            src.about()
        ));
    }
    s.push('\n');
    s.push_str(&ingest::text::policy_help());
    s.push_str(
        "\nReliability: each dataset folder is locked for the run (a second run into it fails \
         at once, naming the pid); a run that yields no rows fails and leaves earlier output as \
         it was; a whole-document file that does not parse fails naming its line; symlink loops \
         and duplicate files are read once and reported.\n",
    );
    s
}

pub fn run(args: Args) -> Result<()> {
    let source = ingest::source(&args.source)?;
    let inputs = if args.input.is_empty() {
        let dest = args.dest.clone().unwrap_or_else(fetch::default_dest);
        fetch::cached_inputs(source.name(), &dest)
            .with_context(|| format!("no --input given for `{}`", source.name()))?
    } else {
        args.input.clone()
    };
    let mut record = BTreeMap::new();
    record.insert("source".to_owned(), serde_json::json!(args.source));
    record.insert("max_errors".to_owned(), serde_json::json!(args.max_errors));
    if args.max_line_bytes != ingest::input::DEFAULT_MAX_LINE_BYTES {
        record.insert(
            "max_line_bytes".to_owned(),
            serde_json::json!(args.max_line_bytes),
        );
    }
    if let Some(m) = args.memory_mib {
        record.insert("memory_mib".to_owned(), serde_json::json!(m));
    }
    if let Some(d) = &args.dataset {
        record.insert("dataset".to_owned(), serde_json::json!(d));
    }
    let defaults = IngestOptions::default();
    let opts = IngestOptions {
        max_errors: args.max_errors,
        max_line_bytes: args.max_line_bytes,
        threads: args.threads.unwrap_or(defaults.threads).max(1),
        dataset: args.dataset.clone(),
        memory_mib: args.memory_mib,
        record,
        ..defaults
    };
    let bar = Bar::new();
    let started = std::time::Instant::now();
    let report = ingest::run(source.name(), &inputs, &args.out, &opts, &bar)
        .with_context(|| format!("ingesting {} into {}", source.name(), args.out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    for m in &report.manifests {
        let skipped: Vec<_> = m.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "{:<28} {:>12} rows  {} cols  skipped {}{}",
            m.dataset,
            m.rows,
            m.columns.columns(),
            m.skipped_total(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join(", "))
            }
        );
    }
    if report.malformed > 0 {
        eprintln!(
            "{} malformed records skipped; first ones:",
            report.malformed
        );
        for e in &report.examples {
            eprintln!("  {e}");
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("wrote {} in {secs:.1}s", args.out.display());
    Ok(())
}
