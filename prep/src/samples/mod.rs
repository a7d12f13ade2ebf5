//! The demo's bundled samples: one small file set per source, in each source's raw format, all
//! invented by [`world`] (never copies of real records). They are generated once by
//! [`generate`], committed under `samples/`, and embedded in the binary, so an installed `prep`
//! runs `prep demo` with nothing beside it. A test regenerates them and compares, so the committed
//! files cannot drift from the generator (`PREP_WRITE_SAMPLES=1 cargo test -p prep samples`
//! rewrites them after a change).

#[cfg(test)]
mod render;
#[cfg(test)]
mod world;

#[cfg(test)]
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
#[cfg(test)]
use rand::SeedableRng;
#[cfg(test)]
use rand_chacha::ChaCha8Rng;

#[cfg(test)]
/// Seed of the world; fixed, so the samples are the same on every machine.
const WORLD_SEED: u64 = 20_261_202;

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/", $path)))),*]
    };
}

/// Every sample file (path under `samples/`, bytes), as committed.
pub static EMBEDDED: &[(&str, &[u8])] = embedded![
    "amazon_qa/qa_Appliances.json.gz",
    "eli5/eli5-category-train.json",
    "gooaq/gooaq.jsonl",
    "jsonl/world_facts.jsonl.gz",
    "msmarco/triples.train.small.tsv",
    "natural_questions/simplified-nq-train.jsonl",
    "paq/PAQ.metadata.jsonl",
    "paq/psgs_w100.tsv",
    "quora/QQP.train.tsv",
    "searchqa/data_json/train/000001-4680_jeopardy_dishs_800.json",
    "searchqa/data_json/train/000002-4680_jeopardy_animals_800.json",
    "searchqa/data_json/train/000003-4680_jeopardy_persons_800.json",
    "searchqa/data_json/train/000004-4680_jeopardy_persons_800.json",
    "searchqa/data_json/train/000005-4680_jeopardy_towns_800.json",
    "searchqa/data_json/train/000006-4680_jeopardy_towns_800.json",
    "searchqa/data_json/train/000007-4680_jeopardy_persons_800.json",
    "searchqa/data_json/train/000008-4680_jeopardy_persons_800.json",
    "searchqa/data_json/train/000009-4680_jeopardy_persons_800.json",
    "searchqa/data_json/train/000010-4680_jeopardy_animals_800.json",
    "searchqa/data_json/train/000011-4680_jeopardy_dishs_800.json",
    "searchqa/data_json/train/000012-4680_jeopardy_persons_800.json",
    "squad2/train-v2.0.json",
    "stackexchange/PostLinks.xml",
    "stackexchange/Posts.xml",
    "triviaqa/qa/web-train.json",
    "wikianswers/part-00.txt.gz",
    "yahoo_answers/train.csv",
];

#[cfg(test)]
/// How many facts each source renders (besides Amazon's appliance facts).
const COUNTS: &[(&str, usize)] = &[
    ("gooaq", 60),
    ("yahoo_answers", 45),
    ("squad", 40),
    ("stackexchange", 40),
    ("msmarco", 30),
    ("quora", 25),
    ("wikianswers", 25),
    ("paq", 25),
    ("natural_questions", 25),
    ("triviaqa", 20),
    ("searchqa", 12),
    ("eli5", 25),
    ("jsonl", 25),
];
#[cfg(test)]
const AMAZON: usize = 35;
#[cfg(test)]
const SE_DUPLICATES: usize = 12;

#[cfg(test)]
/// Every sample file as the generator writes it (`.gz` files compressed), sorted by path.
pub fn generate() -> Vec<(String, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(WORLD_SEED);
    let facts = world::facts(&mut rng);
    let (appliances, rest): (Vec<_>, Vec<_>) =
        facts.into_iter().partition(|f| f.kind == "appliance");
    let mut rest = appliances[AMAZON..]
        .iter()
        .cloned()
        .chain(rest)
        .collect::<Vec<_>>()
        .into_iter();
    let mut files: Vec<(String, String)> = Vec::new();
    // Each source draws from its own stream, so changing one renderer leaves the others alone.
    let rng = |i: u64| ChaCha8Rng::seed_from_u64(WORLD_SEED + 1 + i);
    files.push((
        "amazon_qa/qa_Appliances.json.gz".into(),
        render::amazon(&appliances[..AMAZON], &mut rng(0)),
    ));
    for (i, (source, n)) in COUNTS.iter().enumerate() {
        let part: Vec<world::Fact> = rest.by_ref().take(*n).collect();
        assert_eq!(part.len(), *n, "the world has too few facts for {source}");
        let mut r = rng(1 + i as u64);
        render_source(source, &part, &mut r, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|(path, text)| {
            let bytes = if path.ends_with(".gz") {
                gzip(text.as_bytes())
            } else {
                text.into_bytes()
            };
            (path, bytes)
        })
        .collect()
}

#[cfg(test)]
fn render_source(
    source: &str,
    facts: &[world::Fact],
    r: &mut ChaCha8Rng,
    files: &mut Vec<(String, String)>,
) {
    let mut add = |path: &str, text: String| files.push((path.to_owned(), text));
    match source {
        "gooaq" => add("gooaq/gooaq.jsonl", render::gooaq(facts, r)),
        "yahoo_answers" => add("yahoo_answers/train.csv", render::yahoo(facts, r)),
        "squad" => add("squad2/train-v2.0.json", render::squad(facts, r)),
        "stackexchange" => {
            let (posts, links) = render::stackexchange(facts, SE_DUPLICATES, r);
            add("stackexchange/Posts.xml", posts);
            add("stackexchange/PostLinks.xml", links);
        }
        "msmarco" => add("msmarco/triples.train.small.tsv", render::msmarco(facts, r)),
        "quora" => add("quora/QQP.train.tsv", render::quora(facts, r)),
        "wikianswers" => add("wikianswers/part-00.txt.gz", render::wikianswers(facts, r)),
        "paq" => {
            let (meta, passages) = render::paq(facts, r);
            add("paq/PAQ.metadata.jsonl", meta);
            add("paq/psgs_w100.tsv", passages);
        }
        "natural_questions" => add(
            "natural_questions/simplified-nq-train.jsonl",
            render::natural_questions(facts, r),
        ),
        "triviaqa" => add("triviaqa/qa/web-train.json", render::triviaqa(facts, r)),
        "searchqa" => {
            for (i, f) in facts.iter().enumerate() {
                let path = format!(
                    "searchqa/data_json/train/{:06}-4680_jeopardy_{}s_800.json",
                    i + 1,
                    f.kind
                );
                add(&path, render::searchqa(f, i + 1, r));
            }
        }
        "eli5" => add("eli5/eli5-category-train.json", render::eli5(facts, r)),
        "jsonl" => add("jsonl/world_facts.jsonl.gz", render::normalized(facts, r)),
        other => unreachable!("no renderer for {other}"),
    }
}

#[cfg(test)]
/// Gzip with a zero timestamp and no file name, so the bytes depend on the content only.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("in memory");
    enc.finish().expect("in memory")
}

#[cfg(test)]
/// The content of a sample file: `.gz` files decompressed (their bytes may differ between
/// compressor versions; their content may not).
pub fn content(path: &str, bytes: &[u8]) -> Vec<u8> {
    if !path.ends_with(".gz") {
        return bytes.to_vec();
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("embedded gzip files are valid");
    out
}

/// Writes the embedded samples under `dir` (`dir/<source>/...`, the layout of shared/fixtures).
pub fn write_to(dir: &Path) -> Result<()> {
    for (path, bytes) in EMBEDDED {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed samples are what the generator writes (rewrite them with PREP_WRITE_SAMPLES=1).
    #[test]
    fn samples_match_the_generator() {
        let generated = generate();
        if std::env::var_os("PREP_WRITE_SAMPLES").is_some() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
            for (path, bytes) in &generated {
                let target = root.join(path);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, bytes).unwrap();
            }
            eprintln!("wrote {} files under {}", generated.len(), root.display());
            return;
        }
        let names: Vec<&str> = generated.iter().map(|(p, _)| p.as_str()).collect();
        let embedded: Vec<&str> = EMBEDDED.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            names, embedded,
            "the embedded list names every generated file"
        );
        for ((path, bytes), (_, committed)) in generated.iter().zip(EMBEDDED) {
            assert!(
                content(path, bytes) == content(path, committed),
                "samples/{path} differs from the generator; rerun with PREP_WRITE_SAMPLES=1"
            );
        }
    }

    /// The generator is deterministic: same code, same bytes.
    #[test]
    fn generation_is_reproducible() {
        assert_eq!(generate(), generate());
    }
}
