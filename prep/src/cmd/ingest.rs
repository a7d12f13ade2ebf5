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
    /// Raw input files or folders (plain or .gz), or Hub datasets as
    /// `hf://datasets/ORG/NAME[@REV]/PATH-OR-GLOB` (fetched through the HF cache first). Without
    /// it, the files `prep download` cached.
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// `--source table`: the columns that make the rows, `anchor=COL,positive=COL[,negative=COL]`
    /// or `set=COL` [default: the first two, or three, string columns, printed].
    #[arg(long, value_name = "MAP")]
    pub columns: Option<String>,
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

/// The inputs with every `hf://datasets/...` URL replaced by the files it names in the HF cache
/// (downloaded when missing), and what each Hub input resolved to, for the manifest.
fn resolve_hub_inputs(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<serde_json::Value>)> {
    let mut files = Vec::new();
    let mut hub = Vec::new();
    for input in inputs {
        let text = input.to_string_lossy();
        let Some(req) = fetch::parse_hf_url(&text)? else {
            files.push(input.clone());
            continue;
        };
        let snap = crate::cmd::download::download_dataset(&req, &fetch::HubConfig::from_env())?;
        files.extend(snap.files.iter().map(|f| snap.dir.join(&f.path)));
        hub.push(serde_json::json!({
            "url": text,
            "repository": snap.repo,
            "revision": snap.revision,
            "commit": snap.commit,
            "files": snap.files.iter().map(|f| serde_json::json!({
                "path": f.path, "bytes": f.size, "sha256": f.sha256,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok((files, hub))
}

/// What `prep download --source NAME` left (the official files, else a `--from hub` mirror):
/// the files, the Hub record for the manifest, and how a mirror's files are read.
#[allow(clippy::type_complexity)]
fn cached_inputs(
    args: &Args,
    name: &str,
) -> Result<(
    Vec<PathBuf>,
    Vec<serde_json::Value>,
    Option<ingest::catalogue::TableRead>,
)> {
    let dest = args.dest.clone().unwrap_or_else(fetch::default_dest);
    let official = match fetch::cached_inputs(name, &dest) {
        Ok(files) => return Ok((files, Vec::new(), None)),
        Err(e) => e,
    };
    let hub = fetch::HubConfig::from_env();
    let Some((record, files)) = fetch::hub_dataset::cached_hub_source(name, &dest, &hub)? else {
        return Err(anyhow::Error::new(official).context(format!(
            "no --input given for `{name}` (nor a `--from hub` download)"
        )));
    };
    let mirror = ingest::catalogue::hub_mirror(name).and_then(|m| m.table);
    let meta = serde_json::json!({
        "repository": record.repo,
        "revision": record.revision,
        "commit": record.commit,
        "files": record.files,
    });
    Ok((files, vec![meta], mirror))
}

/// The table source reading a mirror with the catalogue's columns (or the defaults).
fn mirror_table(
    read: ingest::catalogue::TableRead,
    inputs: &[PathBuf],
) -> Result<ingest::sources::table::Table> {
    use ingest::sources::table::{resolve_columns, ColumnMap};
    let given = read.columns.map(ColumnMap::parse).transpose()?;
    let first = inputs
        .first()
        .context("the mirror download lists no file")?;
    let resolved = resolve_columns(first, given.as_ref())?;
    eprintln!("columns: {} ({})", resolved.columns, resolved.how);
    Ok(ingest::sources::table::Table {
        columns: Some(resolved.columns),
    })
}

/// `--source table`'s columns: as given, or the defaults, said on stderr either way.
fn table_source(args: &Args, inputs: &[PathBuf]) -> Result<ingest::sources::table::Table> {
    use ingest::sources::table::{resolve_columns, ColumnMap, Table};
    let given = args.columns.as_deref().map(ColumnMap::parse).transpose()?;
    let table = Table { columns: given };
    let files = ingest::input::expand_inputs(inputs, &|p| ingest::Source::accept(&table, p))?.files;
    let first = files
        .first()
        .context("no Parquet or jsonl file among the inputs")?;
    let resolved = resolve_columns(first, table.columns.as_ref())?;
    eprintln!("columns: {} ({})", resolved.columns, resolved.how);
    Ok(Table {
        columns: Some(resolved.columns),
    })
}

pub fn run(args: Args) -> Result<()> {
    let source = ingest::source(&args.source)?;
    if args.columns.is_some() && source.name() != "table" {
        anyhow::bail!("--columns is for --source table");
    }
    let (inputs, hub, mirror) = if args.input.is_empty() {
        cached_inputs(&args, source.name())?
    } else {
        let (files, hub) = resolve_hub_inputs(&args.input)?;
        (files, hub, None)
    };
    let table = match mirror {
        Some(read) => Some(mirror_table(read, &inputs)?),
        None if source.name() == "table" => Some(table_source(&args, &inputs)?),
        None => None,
    };
    // A mirror is ingested into its catalogue dataset; a Hub table is named after its repository
    // unless --dataset says otherwise.
    let dataset = args
        .dataset
        .clone()
        .or(mirror.map(|m| m.dataset.to_owned()))
        .or_else(|| match (&table, hub.as_slice()) {
            (Some(_), [one]) => one["repository"]
                .as_str()
                .map(|r| ingest::sources::table::dataset_id_for(std::path::Path::new(r))),
            _ => None,
        });
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
    if let Some(d) = &dataset {
        record.insert("dataset".to_owned(), serde_json::json!(d));
    }
    if let Some(t) = &table {
        let columns = t.columns.as_ref().map(|c| c.to_string());
        record.insert("columns".to_owned(), serde_json::json!(columns));
    }
    if !hub.is_empty() {
        record.insert("hub".to_owned(), serde_json::json!(hub));
    }
    let defaults = IngestOptions::default();
    let opts = IngestOptions {
        max_errors: args.max_errors,
        max_line_bytes: args.max_line_bytes,
        threads: args.threads.unwrap_or(defaults.threads).max(1),
        dataset,
        memory_mib: args.memory_mib,
        record,
        ..defaults
    };
    let bar = Bar::new();
    let started = std::time::Instant::now();
    let source: &dyn ingest::Source = match &table {
        Some(t) => t,
        None => source,
    };
    // A remote --out is ingested into a staging folder, then each dataset published whole.
    let remote_out = super::storage::remote_output(&args.out)?;
    let out = remote_out
        .as_ref()
        .map_or_else(|| args.out.clone(), super::storage::staging);
    let report = ingest::run_source(source, &inputs, &out, &opts, &bar)
        .with_context(|| format!("ingesting {} into {}", source.name(), args.out.display()))?;
    if let Some(remote) = &remote_out {
        for m in &report.manifests {
            super::storage::publish(&out.join(&m.dataset), &remote.child(&m.dataset))?;
        }
    }
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
