//! `prep inspect`: what a shard folder, a pairs dataset (or folder of them) or one Parquet file
//! holds, computed with Polars: row and batch counts per dataset, length distributions,
//! truncation and duplicate rates, and a few (decoded) samples.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use schemas::{ShardIndex, MANIFEST_FILE, SHARD_INDEX_FILE};
use serde_json::{json, Map, Value};

#[derive(clap::Args)]
pub struct Args {
    /// A shard folder (index.json), a dataset folder (manifest.json), a folder of datasets, or
    /// one .parquet file.
    pub path: PathBuf,
    /// Samples to show.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn scan(files: &[PathBuf]) -> Result<LazyFrame> {
    let mut frames = Vec::with_capacity(files.len());
    for f in files {
        let p = PlRefPath::try_from_path(f)?;
        frames.push(LazyFrame::scan_parquet(p, ScanArgsParquet::default())?);
    }
    if frames.is_empty() {
        bail!("no Parquet files to inspect");
    }
    Ok(concat(frames, UnionArgs::default())?)
}

/// The negative columns `name(0)`, `name(1)`, ... (`negative`, `negative_2`, ...) that `lf`
/// has, in order.
fn negative_names(lf: &LazyFrame, name: fn(usize) -> String) -> Result<Vec<String>> {
    let schema = lf.clone().collect_schema()?;
    Ok((0..)
        .map(name)
        .take_while(|c| schema.contains(c.as_str()))
        .collect())
}

fn u64s(df: &DataFrame, name: &str) -> Result<Vec<u64>> {
    let s = df.column(name)?.cast(&DataType::UInt64)?;
    Ok(s.u64()?.iter().map(|v| v.unwrap_or(0)).collect())
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let s = df.column(name)?;
    Ok(s.str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect())
}

/// min / mean / p50 / p90 / p99 / max of the non-null lengths in `col`, and how many reach `cap`.
fn distribution(lf: &LazyFrame, len_expr: Expr, cap: Option<u64>) -> Result<Value> {
    let df = lf
        .clone()
        .select([len_expr.alias("n")])
        .filter(col("n").is_not_null())
        .collect()?;
    let mut v = u64s(&df, "n")?;
    if v.is_empty() {
        return Ok(Value::Null);
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    let mut out = json!({
        "count": v.len(), "min": v[0], "mean": (mean * 10.0).round() / 10.0,
        "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": v[v.len() - 1],
    });
    if let Some(cap) = cap {
        let at_cap = v.iter().filter(|&&n| n >= cap).count();
        out["max_length"] = json!(cap);
        out["truncated"] = json!(at_cap);
        out["truncation_rate"] = json!(at_cap as f64 / v.len() as f64);
    }
    Ok(out)
}

/// Rows whose `cols` repeat an earlier row's, over all rows.
fn duplicate_rate(lf: &LazyFrame, cols: &[&str]) -> Result<Value> {
    let exprs: Vec<Expr> = cols.iter().map(|c| col(*c)).collect();
    let df = lf
        .clone()
        .select([
            len().alias("rows"),
            as_struct(exprs).n_unique().alias("distinct"),
        ])
        .collect()?;
    let rows = u64s(&df, "rows")?[0];
    let distinct = u64s(&df, "distinct")?[0];
    Ok(json!({
        "columns": cols, "rows": rows, "duplicates": rows - distinct,
        "rate": if rows == 0 { 0.0 } else { (rows - distinct) as f64 / rows as f64 },
    }))
}

fn shard_summary(dir: &Path, samples: usize) -> Result<Value> {
    let index = ShardIndex::read(dir)?;
    let files: Vec<PathBuf> = index.shards.iter().map(|s| dir.join(&s.file)).collect();
    let lf = scan(&files)?;
    let negatives = negative_names(&lf, schemas::shards::negative_ids_column)?;
    // Hand-made indexes record no caps (0).
    let cap = |n: usize| (n > 0).then_some(n as u64);
    let per = lf
        .clone()
        .group_by([col("dataset")])
        .agg([
            len().alias("rows"),
            col("batch").n_unique().alias("batches"),
            col("negative_ids")
                .is_not_null()
                .sum()
                .alias("with_negative"),
        ])
        .sort(["dataset"], Default::default())
        .collect()?;
    let names = strs(&per, "dataset")?;
    let rows = u64s(&per, "rows")?;
    let batches = u64s(&per, "batches")?;
    let mut datasets = Map::new();
    for i in 0..names.len() {
        let want = index.datasets.get(&names[i]);
        datasets.insert(
            names[i].clone(),
            json!({
                "rows": rows[i], "batches": batches[i],
                "index_batches": want.map(|d| d.batches),
                "weight": want.map(|d| d.weight),
                "share": want.map(|d| d.share),
                "realised_share": batches[i] as f64 / batches.iter().sum::<u64>().max(1) as f64,
                "epochs": want.map(|d| d.epochs),
            }),
        );
    }
    // Checks against the index: shard row counts and batch ranges.
    let mut problems = Vec::new();
    for (s, f) in index.shards.iter().zip(&files) {
        let df = LazyFrame::scan_parquet(PlRefPath::try_from_path(f)?, ScanArgsParquet::default())?
            .select([
                len().alias("rows"),
                col("batch").min().alias("lo"),
                col("batch").max().alias("hi"),
                col("batch").n_unique().alias("n"),
            ])
            .collect()?;
        let got = [
            u64s(&df, "rows")?[0],
            u64s(&df, "lo")?[0],
            u64s(&df, "hi")?[0],
            u64s(&df, "n")?[0],
        ];
        let want = [
            s.rows,
            s.first_batch,
            s.first_batch + s.batches - 1,
            s.batches,
        ];
        if got != want {
            problems.push(format!(
                "{}: rows/first/last/batches {got:?}, index says {want:?}",
                s.file
            ));
        }
    }
    let total_rows: u64 = rows.iter().sum();
    if total_rows != index.shards.iter().map(|s| s.rows).sum::<u64>() {
        problems.push("row total differs from the index".into());
    }
    let dup_cols: &[&str] = if index.mix.keep_text {
        &["anchor", "positive"]
    } else {
        &["anchor_ids", "positive_ids"]
    };
    let sample_df = lf.clone().limit(samples as u32).collect()?;
    let tokenizer = mixer::MixTokenizer::open(Path::new(&index.tokenizer.path), 512, 512).ok();
    let mut sample_rows = Vec::new();
    for i in 0..sample_df.height() {
        let mut row = Map::new();
        let id_columns = ["anchor_ids", "positive_ids"].into_iter();
        for c in id_columns.chain(negatives.iter().map(String::as_str)) {
            let cell = sample_df.column(c)?.get(i)?;
            let ids: Vec<u32> = match cell {
                AnyValue::List(s) => s
                    .cast(&DataType::UInt32)?
                    .u32()?
                    .into_no_null_iter()
                    .collect(),
                _ => continue,
            };
            let text = match &tokenizer {
                Some(t) => json!(t.decode(&ids)?),
                None => json!(ids),
            };
            row.insert(c.trim_end_matches("_ids").to_owned(), text);
        }
        row.insert("dataset".into(), json!(strs(&sample_df, "dataset")?[i]));
        row.insert("batch".into(), json!(u64s(&sample_df, "batch")?[i]));
        sample_rows.push(Value::Object(row));
    }
    let mut tokens = Map::new();
    let (cap_a, cap_b) = (cap(index.mix.max_length_a), cap(index.mix.max_length_b));
    for (c, cap) in [("anchor_ids", cap_a), ("positive_ids", cap_b)]
        .into_iter()
        .chain(negatives.iter().map(|c| (c.as_str(), cap_b)))
    {
        let d = distribution(&lf, col(c).list().len(), cap)?;
        tokens.insert(c.trim_end_matches("_ids").to_owned(), d);
    }
    Ok(json!({
        "kind": "shards",
        "path": dir.display().to_string(),
        "shards": index.shards.len(),
        "rows": total_rows,
        "batches": batches.iter().sum::<u64>(),
        "steps": index.steps,
        "batch_size": index.batch_size,
        "complete": index.complete,
        "mixing": index.mix.mixing,
        "mixing_deviation": index.mixing_deviation.as_ref().map(|d| d.max_abs),
        "datasets": datasets,
        "tokens": tokens,
        "duplicates": duplicate_rate(&lf, dup_cols)?,
        "index_problems": problems,
        "samples": sample_rows,
    }))
}

/// Character-length distribution of each text column, one file at a time into a histogram (the
/// `strings` feature of Polars drags in its whole temporal stack, so lengths are counted here).
/// `names`: the text columns (a file without one of them counts nothing there).
fn char_lengths(files: &[PathBuf], names: &[String]) -> Result<Value> {
    let mut hist = vec![std::collections::BTreeMap::<u64, u64>::new(); names.len()];
    for f in files {
        let lf = scan(std::slice::from_ref(f))?;
        let schema = lf.clone().collect_schema()?;
        let has: Vec<usize> = (0..names.len())
            .filter(|&i| schema.contains(names[i].as_str()))
            .collect();
        let df = lf.select(
            has.iter()
                .map(|&i| col(names[i].as_str()))
                .collect::<Vec<_>>(),
        );
        let df = df.collect()?;
        for &i in &has {
            for v in df.column(names[i].as_str())?.str()?.iter().flatten() {
                *hist[i].entry(v.chars().count() as u64).or_default() += 1;
            }
        }
    }
    let mut out = Map::new();
    for (h, name) in hist.iter().zip(names) {
        let count: u64 = h.values().sum();
        if count == 0 {
            out.insert(name.clone(), Value::Null);
            continue;
        }
        let q = |p: f64| {
            let target = ((count - 1) as f64 * p).round() as u64;
            let mut seen = 0;
            for (len, n) in h {
                seen += n;
                if seen > target {
                    return *len;
                }
            }
            0
        };
        let mean = h.iter().map(|(l, n)| l * n).sum::<u64>() as f64 / count as f64;
        out.insert(
            name.clone(),
            json!({
                "count": count, "min": h.keys().next(), "mean": (mean * 10.0).round() / 10.0,
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": h.keys().next_back(),
            }),
        );
    }
    Ok(Value::Object(out))
}

fn pairs_summary(path: &Path, samples: usize) -> Result<Value> {
    // A dataset folder, a folder of datasets, or one file.
    let mut files = Vec::new();
    if path.is_dir() && !path.join(MANIFEST_FILE).is_file() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            files.extend(schemas::part_files(&d)?);
        }
    } else {
        files = schemas::part_files(path)?;
    }
    let mut frames = Vec::new();
    let mut negatives: Vec<String> = Vec::new();
    for f in &files {
        // The dataset is the folder name (files hold no dataset column).
        let id = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lf = scan(std::slice::from_ref(f))?.with_column(lit(id).alias("dataset"));
        let has = negative_names(&lf, schemas::negative_column)?;
        if has.len() > negatives.len() {
            negatives = has;
        }
        frames.push(lf);
    }
    if frames.is_empty() {
        bail!("{}: no Parquet files", path.display());
    }
    let lf = concat(same_columns(frames, &negatives)?, UnionArgs::default())?;
    let datasets = pairs_per_dataset(&lf, &negatives)?;
    let rows: Vec<u64> = datasets
        .values()
        .map(|d| d["rows"].as_u64().unwrap_or(0))
        .collect();
    let sample_df = lf.clone().limit(samples as u32).collect()?;
    let mut sample_rows = Vec::new();
    for i in 0..sample_df.height() {
        let mut row = Map::new();
        let text_columns = ["dataset", "anchor", "positive"].into_iter();
        for c in text_columns.chain(negatives.iter().map(String::as_str)) {
            // Polars hands these out as borrowed or owned strings depending on the plan.
            if let Some(s) = sample_df.column(c)?.get(i)?.get_str() {
                row.insert(c.into(), json!(s));
            }
        }
        sample_rows.push(Value::Object(row));
    }
    Ok(json!({
        "kind": "pairs",
        "path": path.display().to_string(),
        "files": files.len(),
        "rows": rows.iter().sum::<u64>(),
        "datasets": datasets,
        "chars": char_lengths(&files, &text_names(&negatives))?,
        "duplicates": {
            "anchor": duplicate_rate(&lf, &["anchor"])?,
            "pair": duplicate_rate(&lf, &["anchor", "positive"])?,
        },
        "samples": sample_rows,
    }))
}

/// `anchor`, `positive` and the negative columns.
fn text_names(negatives: &[String]) -> Vec<String> {
    let mut names = vec!["anchor".to_owned(), "positive".to_owned()];
    names.extend(negatives.iter().cloned());
    names
}

/// The frames with the same columns in the same order (dataset, texts): files of datasets with
/// fewer negative columns get the others as nulls, so a folder mixing pairs, triplets and
/// n-tuples concatenates.
fn same_columns(frames: Vec<LazyFrame>, negatives: &[String]) -> Result<Vec<LazyFrame>> {
    let mut out = Vec::with_capacity(frames.len());
    for lf in frames {
        let schema = lf.clone().collect_schema()?;
        let mut cols = vec![col("dataset")];
        for name in text_names(negatives) {
            cols.push(match schema.contains(name.as_str()) {
                true => col(name.as_str()),
                false => lit(NULL).cast(DataType::String).alias(name.as_str()),
            });
        }
        out.push(lf.select(cols));
    }
    Ok(out)
}

/// Rows and columns (2 + the negative columns holding any value) per dataset.
fn pairs_per_dataset(lf: &LazyFrame, negatives: &[String]) -> Result<Map<String, Value>> {
    let mut aggs = vec![len().alias("rows")];
    aggs.extend(
        negatives
            .iter()
            .map(|c| col(c.as_str()).is_not_null().sum().alias(c.as_str())),
    );
    let per = lf
        .clone()
        .group_by([col("dataset")])
        .agg(aggs)
        .sort(["dataset"], Default::default())
        .collect()?;
    let names = strs(&per, "dataset")?;
    let rows = u64s(&per, "rows")?;
    let mut filled = vec![0usize; names.len()];
    for c in negatives {
        for (f, n) in filled.iter_mut().zip(u64s(&per, c)?) {
            *f += usize::from(n > 0);
        }
    }
    Ok((0..names.len())
        .map(|i| {
            let d = json!({"rows": rows[i], "columns": 2 + filled[i]});
            (names[i].clone(), d)
        })
        .collect())
}

/// The summary of `path` as JSON (what `--json` prints).
pub fn summarize(path: &Path, samples: usize) -> Result<Value> {
    if path.join(SHARD_INDEX_FILE).is_file() {
        return shard_summary(path, samples)
            .with_context(|| format!("inspecting shards {}", path.display()));
    }
    if path.is_file() {
        let is_shard = schemas::shards::ShardReader::open(path).is_ok();
        if is_shard {
            bail!(
                "{}: inspect the shard folder (with its index.json), not one shard",
                path.display()
            );
        }
    }
    pairs_summary(path, samples).with_context(|| format!("inspecting pairs {}", path.display()))
}

fn print_dist(name: &str, d: &Value) {
    if d.is_null() {
        return;
    }
    let mut line = format!(
        "  {name:<10} min {} mean {} p50 {} p90 {} p99 {} max {}",
        d["min"], d["mean"], d["p50"], d["p90"], d["p99"], d["max"]
    );
    if let Some(r) = d.get("truncation_rate").and_then(Value::as_f64) {
        line.push_str(&format!(
            "  truncated at {}: {:.2}%",
            d["max_length"],
            100.0 * r
        ));
    }
    println!("{line}");
}

pub fn run(args: Args) -> Result<()> {
    let path = super::storage::local_input(&args.path)?;
    let s = summarize(&path, args.samples)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{} ({}): {} rows",
        s["path"].as_str().unwrap_or(""),
        s["kind"].as_str().unwrap_or(""),
        s["rows"]
    );
    if s["kind"] == "shards" {
        println!(
            "  {} shards, {} batches of {} (steps {}, complete {}), mixing {} (max deviation {} batches)",
            s["shards"], s["batches"], s["batch_size"], s["steps"], s["complete"], s["mixing"], s["mixing_deviation"]
        );
    }
    println!("per dataset:");
    if let Some(m) = s["datasets"].as_object() {
        for (id, d) in m {
            let extra = match d.get("batches") {
                Some(b) => format!(
                    "batches {b:>7}  share {:.4} (weight share {:.4})  epochs {}",
                    d["realised_share"].as_f64().unwrap_or(0.0),
                    d["share"].as_f64().unwrap_or(0.0),
                    d["epochs"]
                ),
                None => format!("{} columns", d["columns"]),
            };
            println!("  {id:<28} rows {:>10}  {extra}", d["rows"]);
        }
    }
    let (title, dists) = if s["kind"] == "shards" {
        ("token lengths:", &s["tokens"])
    } else {
        ("character lengths:", &s["chars"])
    };
    println!("{title}");
    let negatives = (0..).map(schemas::negative_column);
    let present = negatives.take_while(|c| dists.get(c).is_some());
    for c in ["anchor".to_owned(), "positive".to_owned()]
        .into_iter()
        .chain(present)
    {
        print_dist(&c, &dists[&c]);
    }
    println!("duplicates: {}", s["duplicates"]);
    if let Some(p) = s["index_problems"].as_array() {
        if p.is_empty() {
            println!("index: every shard's rows and batch range match index.json");
        } else {
            for x in p {
                println!("index MISMATCH: {}", x.as_str().unwrap_or(""));
            }
        }
    }
    println!("samples:");
    for x in s["samples"].as_array().into_iter().flatten() {
        println!("  {x}");
    }
    Ok(())
}
