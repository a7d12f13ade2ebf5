//! `prep bench ingest`: MB/s of uncompressed input and rows/s for a line-oriented source
//! (normalized jsonl.gz), for StackExchange XML and for a Parquet table (`--source table`, pairs
//! of corpus lines in Snappy-compressed row groups as the Hub's mirrors are), on 1 thread and on
//! all cores, each run in its own child process so its peak RSS is its own. The Parquet table is
//! also read by pyarrow in the same run (`--python`): reading alone, and reading plus writing it
//! back zstd-compressed (the closest to what ingest does). Inputs are generated from the bench
//! corpus.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ingest::IngestOptions;
use schemas::NoProgress;

#[derive(clap::Args)]
pub struct Args {
    /// Text corpus the inputs are generated from (one text per line).
    #[arg(long, default_value = "../shared/bench/corpus.txt")]
    corpus: PathBuf,
    /// Uncompressed sizes (MB) of the generated jsonl.gz inputs; several show RSS flat in size
    /// (0 skips them).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    jsonl_mb: Vec<u64>,
    /// Uncompressed size (MB) of the generated StackExchange Posts.xml (0 skips it).
    #[arg(long, default_value_t = 200)]
    xml_mb: u64,
    /// Text (MB of anchor + positive bytes) of the generated Parquet table (0 skips it).
    #[arg(long, default_value_t = 200)]
    parquet_mb: u64,
    /// Python with pyarrow, the peer on the Parquet table (skipped, and said, when it has none).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Runs of each measurement; the fastest is printed (a shared machine's noise only slows).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    repeat: u64,
    /// Folder for generated inputs and outputs (default: a temporary folder).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, hide = true, requires = "child_input")]
    child_source: Option<String>,
    #[arg(long, hide = true)]
    child_input: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 1)]
    child_threads: usize,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Measurement {
    seconds: f64,
    /// User + system CPU time of the run: steadier than wall time on a shared machine.
    cpu_seconds: f64,
    rows: u64,
    peak_rss: u64,
}

pub fn run(args: Args) -> Result<()> {
    if let (Some(source), Some(input)) = (&args.child_source, &args.child_input) {
        return child(source, input, args.child_threads);
    }
    let texts: Vec<String> = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading the bench corpus {}", args.corpus.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if texts.len() < 2 {
        bail!(
            "{}: the corpus needs at least 2 texts",
            args.corpus.display()
        );
    }
    let tmp;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("ingest benchmark on {cores} cores; MB = 10^6 bytes of uncompressed input");
    println!(
        "{:<34} {:>7} {:>9} {:>10} {:>10} {:>12} {:>11}",
        "input", "threads", "seconds", "MB/s", "MB/CPU-s", "rows/s", "peak RSS"
    );
    // 0 skips the jsonl runs (as --xml-mb 0 and --parquet-mb 0 do theirs).
    for &mb in args.jsonl_mb.iter().filter(|&&mb| mb > 0) {
        let path = work.join(format!("bench-{mb}MB.jsonl.gz"));
        let size = generate_jsonl(&path, &texts, mb * 1_000_000)?;
        measure(
            "jsonl",
            &path,
            size,
            &format!("jsonl.gz {mb} MB"),
            &[1, cores],
            args.repeat,
        )?;
    }
    if args.parquet_mb > 0 {
        let path = work.join(format!("bench-{}MB.parquet", args.parquet_mb));
        let size = generate_parquet(&path, &texts, args.parquet_mb * 1_000_000)?;
        let label = format!("parquet table {} MB", args.parquet_mb);
        measure("table", &path, size, &label, &[1, cores], args.repeat)?;
        for (mode, what) in [
            ("read", "pyarrow read_table"),
            ("rewrite", "pyarrow read+write zstd"),
        ] {
            match best_of(args.repeat, || pyarrow(&args.python, mode, &path, &work)) {
                // pyarrow runs on its own thread pool (all cores); its threads column says so.
                Ok(m) => print_row(&format!("{what} {} MB", args.parquet_mb), cores, size, &m),
                Err(e) => println!("{what}: not measured ({e:#})"),
            }
        }
    }
    if args.xml_mb > 0 {
        let site = work.join("bench.stackexchange.com");
        let size = generate_stackexchange(&site, &texts, args.xml_mb * 1_000_000)?;
        measure(
            "stackexchange",
            &site,
            size,
            &format!("stackexchange XML {} MB", args.xml_mb),
            &[1, cores],
            args.repeat,
        )?;
    }
    Ok(())
}

/// The fastest of `n` runs of `run`.
fn best_of(n: u64, mut run: impl FnMut() -> Result<Measurement>) -> Result<Measurement> {
    let mut best: Option<Measurement> = None;
    for _ in 0..n {
        let m = run()?;
        if best.as_ref().is_none_or(|b| m.seconds < b.seconds) {
            best = Some(m);
        }
    }
    Ok(best.expect("n >= 1"))
}

fn measure(
    source: &str,
    input: &Path,
    size: u64,
    label: &str,
    threads: &[usize],
    repeat: u64,
) -> Result<()> {
    let mut seen = Vec::new();
    for &t in threads {
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let m = best_of(repeat, || child_run(source, input, label, t))?;
        print_row(label, t, size, &m);
    }
    Ok(())
}

/// One measurement in a child process of its own (so its peak RSS is its own).
fn child_run(source: &str, input: &Path, label: &str, t: usize) -> Result<Measurement> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "ingest",
            "--child-source",
            source,
            "--child-threads",
            &t.to_string(),
        ])
        .arg("--child-input")
        .arg(input)
        .output()
        .context("running the measurement child process")?;
    if !out.status.success() {
        bail!(
            "{label} on {t} threads failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the child's result")
}

fn print_row(label: &str, threads: usize, size: u64, m: &Measurement) {
    println!(
        "{:<34} {:>7} {:>9.2} {:>10.1} {:>10.1} {:>12.0} {:>8.1} MiB",
        label,
        threads,
        m.seconds,
        size as f64 / 1e6 / m.seconds,
        size as f64 / 1e6 / m.cpu_seconds,
        m.rows as f64 / m.seconds,
        m.peak_rss as f64 / (1024.0 * 1024.0)
    );
}

/// The peer: pyarrow reads the same table (all columns, to Arrow), and in `rewrite` mode writes
/// it back with zstd, in its own process; timed inside Python so interpreter start-up is left out.
fn pyarrow(python: &Path, mode: &str, table: &Path, work: &Path) -> Result<Measurement> {
    const SCRIPT: &str = r#"
import json, resource, sys, time
import pyarrow, pyarrow.parquet as pq
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
usage = lambda: resource.getrusage(resource.RUSAGE_SELF)
u0, t0 = usage(), time.perf_counter()
t = pq.read_table(path)
if mode == "rewrite":
    pq.write_table(t, out, compression="zstd", compression_level=1)
secs, u1 = time.perf_counter() - t0, usage()
cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "rows": t.num_rows,
                  "peak_rss": u1.ru_maxrss * 1024, "version": pyarrow.__version__}))
"#;
    let out_file = work.join("pyarrow-rewrite.parquet");
    let out = Command::new(python)
        .args(["-c", SCRIPT, mode])
        .arg(table)
        .arg(&out_file)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let _ = std::fs::remove_file(&out_file);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} failed: {}",
            python.display(),
            err.lines().last().unwrap_or("")
        );
    }
    let m: Measurement = serde_json::from_slice(&out.stdout).context("reading pyarrow's result")?;
    Ok(m)
}

/// Writes a Parquet table `question, answer` of corpus lines, up to `target` bytes of text, in
/// Snappy-compressed row groups of 10,000 rows (the `datasets` library writes small row groups
/// too); returns the text bytes.
fn generate_parquet(path: &Path, texts: &[String], target: u64) -> Result<u64> {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    const ROWS: usize = 10_000;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROWS))
        .build();
    let mut pick = Picker(3);
    let mut written = 0u64;
    let mut writer = None;
    while written < target {
        let (mut q, mut a) = (Vec::with_capacity(ROWS), Vec::with_capacity(ROWS));
        for _ in 0..ROWS {
            let (x, y) = (
                &texts[pick.next(texts.len())],
                &texts[pick.next(texts.len())],
            );
            written += (x.len() + y.len()) as u64;
            q.push(x.as_str());
            a.push(y.as_str());
        }
        let batch = RecordBatch::try_from_iter([
            ("question", Arc::new(StringArray::from(q)) as ArrayRef),
            ("answer", Arc::new(StringArray::from(a)) as ArrayRef),
        ])?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(path)?,
                batch.schema(),
                Some(props.clone()),
            )?),
        };
        w.write(&batch)?;
    }
    writer.expect("at least one batch").close()?;
    Ok(written)
}

fn child(source: &str, input: &Path, threads: usize) -> Result<()> {
    let out = tempfile::tempdir_in(input.parent().unwrap_or(Path::new(".")))?;
    let opts = IngestOptions {
        threads,
        ..IngestOptions::default()
    };
    let started = Instant::now();
    let report = ingest::run(
        source,
        &[input.to_path_buf()],
        out.path(),
        &opts,
        &NoProgress,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = report.manifests.iter().map(|m| m.rows).sum();
    let peak_rss = super::peak_rss_bytes().unwrap_or(0);
    let cpu_seconds = super::cpu_seconds().unwrap_or(f64::NAN);
    let m = Measurement {
        seconds,
        cpu_seconds,
        rows,
        peak_rss,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Deterministic pseudo-random index stream (no seed option needed: the corpus is the input).
struct Picker(u64);

impl Picker {
    fn next(&mut self, n: usize) -> usize {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// Writes `["a","b"]` lines up to `target` uncompressed bytes; returns the uncompressed size.
fn generate_jsonl(path: &Path, texts: &[String], target: u64) -> Result<u64> {
    let file = std::fs::File::create(path)?;
    let mut gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut pick = Picker(1);
    let mut written = 0u64;
    while written < target {
        let line = serde_json::to_string(&[
            &texts[pick.next(texts.len())],
            &texts[pick.next(texts.len())],
        ])?;
        gz.write_all(line.as_bytes())?;
        gz.write_all(b"\n")?;
        written += line.len() as u64 + 1;
    }
    gz.finish()?.flush()?;
    Ok(written)
}

/// An XML attribute value as the Stack Exchange dumps escape it (also used by `samples`).
pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\n', "&#xA;")
}

/// Writes a site folder (Posts.xml, PostLinks.xml) of questions with two answers each, bodies in
/// escaped HTML as in real dumps; returns the uncompressed size of both files.
fn generate_stackexchange(site: &Path, texts: &[String], target: u64) -> Result<u64> {
    std::fs::create_dir_all(site)?;
    let mut posts = std::io::BufWriter::new(std::fs::File::create(site.join("Posts.xml"))?);
    let mut links = std::io::BufWriter::new(std::fs::File::create(site.join("PostLinks.xml"))?);
    let head = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n";
    write!(posts, "{head}<posts>\r\n")?;
    write!(links, "{head}<postlinks>\r\n")?;
    let mut pick = Picker(2);
    let mut written = 0u64;
    let mut id = 1u64;
    while written < target {
        let q = id;
        let title = xml_escape(&texts[pick.next(texts.len())]);
        let body = xml_escape(&format!(
            "<p>{}</p>\n<p>{}</p>",
            texts[pick.next(texts.len())],
            texts[pick.next(texts.len())]
        ));
        let mut rows = format!(
            "  <row Id=\"{q}\" PostTypeId=\"1\" AcceptedAnswerId=\"{}\" Score=\"{}\" Title=\"{title}\" Body=\"{body}\" Tags=\"&lt;bench&gt;\" />\r\n",
            q + 1,
            pick.next(20)
        );
        for a in 1..=2 {
            let answer = xml_escape(&format!("<p>{}</p>", texts[pick.next(texts.len())]));
            rows.push_str(&format!(
                "  <row Id=\"{}\" PostTypeId=\"2\" ParentId=\"{q}\" Score=\"{}\" Body=\"{answer}\" />\r\n",
                q + a,
                pick.next(30)
            ));
        }
        posts.write_all(rows.as_bytes())?;
        written += rows.len() as u64;
        if q % 50 == 1 && q > 1 {
            let link = format!(
                "  <row Id=\"{q}\" PostId=\"{q}\" RelatedPostId=\"{}\" LinkTypeId=\"3\" />\r\n",
                q - 3
            );
            links.write_all(link.as_bytes())?;
            written += link.len() as u64;
        }
        id += 3;
    }
    posts.write_all(b"</posts>\r\n")?;
    links.write_all(b"</postlinks>\r\n")?;
    posts.flush()?;
    links.flush()?;
    Ok(written)
}
