//! `prep download`: a source's raw files from the built-in catalogue into the local cache, or a
//! model from the Hugging Face Hub into the HF cache.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fetch::{ArchiveFormat, DownloadConfig, Downloader, HubConfig, SourceFile};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use schemas::{Progress, Unit};

// The catalogue lives in `ingest` (ARCHITECTURE.md), std+serde only.
use ingest::catalogue;

#[derive(clap::Args)]
#[command(
    long_about = "Download a source's raw files from its publisher into the cache (default ~/.cache/prep), \
or a model from the Hugging Face Hub into the HF cache.\n\nDownloads resume from `.part` files with HTTP \
Range requests (with If-Range, so a file changed on the server restarts from byte 0 instead of being \
joined to the old part), retry connection errors and 5xx with backoff, and verify every file's size \
(and sha256 where the publisher gives one) before it takes its final name. Archives (.tar.gz, .7z) are \
then unpacked into a folder beside them (`collection.tar.gz` -> `collection/`), up to a size cap \
(--max-unpacked-gib). Each file and folder is locked while it is written: a second `prep download` of \
the same file fails at once. `prep ingest --source <name>` \
without `--input` reads what this command finished.\n\nModels and datasets (--dataset org/name[@rev], \
listed through the Hub's tree API and fetched into the same cache as huggingface_hub's snapshot_download) \
honour HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN."
)]
pub struct Args {
    /// Source to download (names from --list).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// With --source: `official` (the publisher's URLs) or `hub` (the source's Hugging Face Hub
    /// mirror, into the HF cache; `prep ingest --source <name>` then reads it with no more flags).
    #[arg(long, value_name = "WHERE", default_value = "official", requires = "source",
          value_parser = ["official", "hub"])]
    from: String,
    /// List the catalogue (sources, files, sizes) and what is already downloaded.
    #[arg(long)]
    list: bool,
    /// Fetch a model into the HF cache and print its folder: a Hub id `org/name[@revision]`.
    #[arg(long, value_name = "ID")]
    model: Option<String>,
    /// Fetch a dataset repository into the HF cache (`$HF_HOME/hub/datasets--org--name/`, shared
    /// with Python's huggingface_hub and datasets) and print its snapshot folder:
    /// `org/name[@revision]` (branch, tag or commit).
    #[arg(long, value_name = "ID")]
    dataset: Option<String>,
    /// With --dataset: only files matching this pattern (repeatable; huggingface_hub's
    /// allow_patterns: fnmatch, `*` crosses `/`, `dir/` means everything below it).
    #[arg(long, value_name = "GLOB", requires = "dataset")]
    include: Vec<String>,
    /// With --dataset: never files matching this pattern (repeatable; ignore_patterns).
    #[arg(long, value_name = "GLOB", requires = "dataset")]
    exclude: Vec<String>,
    /// Cache folder for sources [default: $XDG_CACHE_HOME/prep or ~/.cache/prep].
    #[arg(long, value_name = "DIR")]
    dest: Option<PathBuf>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    jobs: u64,
    /// Consecutive failed attempts tolerated per file before giving up.
    #[arg(long, default_value_t = 6)]
    retries: u32,
    /// Most GiB one archive may unpack to [default: 32 × the archive's size, at least 1 GiB];
    /// beyond it the unpack stops and what it wrote is removed.
    #[arg(long, value_name = "GIB")]
    max_unpacked_gib: Option<f64>,
}

pub fn run(args: Args) -> Result<()> {
    let chosen = [
        args.list,
        args.source.is_some(),
        args.model.is_some(),
        args.dataset.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if chosen != 1 {
        bail!("give exactly one of --source <name>, --model <id>, --dataset <id> or --list");
    }
    let dest = args.dest.clone().unwrap_or_else(fetch::default_dest);
    let max_unpacked = match args.max_unpacked_gib {
        Some(g) if !(g.is_finite() && g > 0.0) => bail!("--max-unpacked-gib must be above 0"),
        Some(g) => Some((g * (1u64 << 30) as f64) as u64),
        None => None,
    };
    let cfg = DownloadConfig {
        jobs: args.jobs as usize,
        retries: args.retries,
        max_unpacked,
        ..DownloadConfig::default()
    };
    if args.list {
        // `prep download --list | head` closes the pipe early: that is a normal end, not an error.
        return match list(&mut std::io::stdout().lock(), &dest) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.context("writing the catalogue to stdout"),
        };
    }
    if let Some(model) = &args.model {
        let hub = HubConfig {
            download: cfg,
            ..HubConfig::from_env()
        };
        let path = fetch::hub::resolve_model_with(model, &hub, &MultiBar::new())
            .with_context(|| format!("downloading model `{model}`"))?;
        println!("{}", path.display());
        return Ok(());
    }
    if let Some(dataset) = &args.dataset {
        let hub = HubConfig {
            download: cfg,
            ..HubConfig::from_env()
        };
        let req = fetch::DatasetRequest {
            include: args.include.clone(),
            exclude: args.exclude.clone(),
            ..fetch::DatasetRequest::parse(dataset)?
        };
        let snap = download_dataset(&req, &hub)?;
        println!("{}", snap.dir.display());
        return Ok(());
    }
    let name = args.source.as_deref().expect("checked above");
    let Some(entry) = catalogue::find(name) else {
        let names: Vec<&str> = catalogue::catalogue().iter().map(|s| s.source).collect();
        bail!("unknown source `{name}`; known: {}", names.join(", "));
    };
    if args.from == "hub" {
        let hub = HubConfig {
            download: cfg,
            ..HubConfig::from_env()
        };
        return download_mirror(name, &dest, &hub);
    }
    if let Some(manual) = entry.manual {
        bail!("`{name}` cannot be downloaded automatically: {manual}");
    }
    let files: Vec<SourceFile> = entry
        .files
        .iter()
        .map(|f| SourceFile {
            name: f.name.to_owned(),
            url: f.url.to_owned(),
            size: f.size,
            sha256: f.sha256.map(str::to_owned),
            unpack: match f.packing {
                catalogue::Packing::TarGz => Some(ArchiveFormat::TarGz),
                catalogue::Packing::SevenZip => Some(ArchiveFormat::SevenZip),
                catalogue::Packing::Plain | catalogue::Packing::Gzip => None,
            },
        })
        .collect();
    let downloader = Downloader::new(cfg);
    let record = fetch::download_source(name, &files, &dest, &downloader, &MultiBar::new())
        .with_context(|| format!("downloading source `{name}` into {}", dest.display()))?;
    let total: u64 = record.files.iter().map(|f| f.size).sum();
    eprintln!(
        "{name}: {} files, {} in {}",
        record.files.len(),
        HumanBytes(total),
        fetch::source_dir(name, &dest).display()
    );
    let unpacked: Vec<&str> = record
        .files
        .iter()
        .filter_map(|f| f.unpacked.as_deref())
        .collect();
    if !unpacked.is_empty() {
        eprintln!(
            "{name}: {} archives unpacked ({}/); `prep ingest` reads those folders, and the archives \
             may be deleted to save disk",
            unpacked.len(),
            unpacked.join("/, ")
        );
    }
    if entry.ingest_with != name {
        eprintln!(
            "note: these files are read by `prep ingest --source {}` (one dataset per file)",
            entry.ingest_with
        );
    }
    Ok(())
}

/// `--source NAME --from hub`: the source's Hub mirror into the HF cache, recorded in
/// `<dest>/<name>/` for `prep ingest --source NAME`.
fn download_mirror(name: &str, dest: &std::path::Path, hub: &HubConfig) -> Result<()> {
    let mirror = catalogue::hub_mirror(name).context("the catalogue has no mirror entry")?;
    let Some(repo) = mirror.repo.filter(|_| !mirror.include.is_empty()) else {
        bail!("`{name}` has no Hub mirror to fetch: {}", mirror.note);
    };
    let req = fetch::DatasetRequest {
        include: mirror.include.iter().map(|s| s.to_string()).collect(),
        ..fetch::DatasetRequest::parse(repo)?
    };
    let snap = download_dataset(&req, hub)?;
    fetch::hub_dataset::record_hub_source(name, dest, &snap)?;
    let reader = match mirror.table {
        Some(t) => format!(
            "the table source into `{}` ({})",
            t.dataset,
            t.columns.unwrap_or("the first two string columns")
        ),
        None => format!(
            "`--source {}`",
            catalogue::find(name).map_or(name, |e| e.ingest_with)
        ),
    };
    eprintln!(
        "{name}: mirror {repo} at {}; `prep ingest --source {name}` reads it with {reader}",
        snap.commit
    );
    println!("{}", snap.dir.display());
    Ok(())
}

/// Fetches a dataset repository (or the files of it `req` selects) and says what it holds.
pub fn download_dataset(
    req: &fetch::DatasetRequest,
    hub: &HubConfig,
) -> Result<fetch::DatasetSnapshot> {
    let snap = fetch::download_dataset(req, hub, &MultiBar::new())
        .with_context(|| format!("downloading dataset `{}`", req.id()))?;
    let bytes: u64 = snap.files.iter().map(|f| f.size).sum();
    let fetched = snap.files.iter().filter(|f| f.fetched).count();
    eprintln!(
        "{}: {} files, {} at commit {} ({} downloaded now, {} already in the cache)",
        req.id(),
        snap.files.len(),
        HumanBytes(bytes),
        snap.commit,
        fetched,
        snap.files.len() - fetched
    );
    Ok(snap)
}

fn list(out: &mut impl Write, dest: &std::path::Path) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<18} {:>5} {:>10}  {:<11} description",
        "source", "files", "size", "cached"
    )?;
    for s in catalogue::catalogue() {
        let size = match s.known_size() {
            _ if s.files.is_empty() => "-".to_owned(),
            Some(b) => HumanBytes(b).to_string(),
            None => "?".to_owned(),
        };
        let cached = if s.manual.is_some() {
            "manual"
        } else if fetch::cached_inputs(s.source, dest).is_ok() {
            "yes"
        } else {
            "no"
        };
        writeln!(
            out,
            "{:<18} {:>5} {:>10}  {:<11} {}",
            s.source,
            s.files.len(),
            size,
            cached,
            s.description
        )?;
    }
    writeln!(
        out,
        "\nHub mirrors (`prep download --source NAME --from hub`):"
    )?;
    for m in catalogue::hub_mirrors() {
        let fetchable = m.repo.is_some() && !m.include.is_empty();
        writeln!(
            out,
            "{:<18} {:<48} {}",
            m.source,
            match (m.repo, fetchable) {
                (Some(r), true) => format!("{r} [{}]", m.include.join(" ")),
                (Some(r), false) => format!("({r}: not fetched)"),
                (None, _) => "-".to_owned(),
            },
            m.note.split_whitespace().collect::<Vec<_>>().join(" ")
        )?;
    }
    writeln!(out, "\ncache: {}", dest.display())?;
    out.flush()
}

/// indicatif behind `fetch::MultiProgress`: one bar per active file plus a total; a plain line
/// per finished file when stderr is not a terminal.
pub struct MultiBar {
    multi: MultiProgress,
    total: Bar,
    terminal: bool,
}

impl MultiBar {
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        });
        let total = multi.add(ProgressBar::no_length());
        total.enable_steady_tick(Duration::from_millis(250));
        MultiBar {
            multi,
            total: Bar {
                bar: total,
                name: "total".into(),
                log: None,
            },
            terminal,
        }
    }
}

impl Default for MultiBar {
    fn default() -> Self {
        MultiBar::new()
    }
}

impl fetch::MultiProgress for MultiBar {
    fn file(&self, name: &str) -> Box<dyn Progress> {
        let bar = self
            .multi
            .insert_before(&self.total.bar, ProgressBar::no_length());
        Box::new(Bar {
            bar,
            name: name.to_owned(),
            log: (!self.terminal).then_some(()),
        })
    }
    fn total(&self) -> &dyn Progress {
        &self.total
    }
}

struct Bar {
    bar: ProgressBar,
    name: String,
    /// Some when stderr is not a terminal: print one line when the file ends.
    log: Option<()>,
}

fn style(known: bool) -> ProgressStyle {
    let t = if known {
        "{prefix:<28!} {wide_bar} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>11} {eta:>4} {msg}"
    } else {
        "{prefix:<28!} {spinner} {bytes:>10} {bytes_per_sec:>11} {msg}"
    };
    ProgressStyle::with_template(t).expect("valid template")
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: Option<u64>, _unit: Unit) {
        self.bar.reset();
        self.bar.set_length(total.unwrap_or(0));
        if total.is_none() {
            self.bar.unset_length();
        }
        self.bar.set_style(style(total.is_some()));
        self.bar.set_prefix(what.to_owned());
    }
    fn advance(&self, delta: u64) {
        self.bar.inc(delta);
    }
    fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_owned());
    }
    fn finish(&self) {
        if self.log.is_some() {
            eprintln!(
                "{}: {} {}",
                self.name,
                HumanBytes(self.bar.position()),
                self.bar.message()
            );
        }
        self.bar.finish_and_clear();
    }
}
