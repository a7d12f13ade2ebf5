//! `data_config.json` (upstream's format: `[{"name", "lines", "weight"}]`) and the resolution of
//! its names to datasets under the pairs folder.
//!
//! A name resolves, in this order, to: a dataset folder `<pairs>/<name>/` (our ids); a normalized
//! `<pairs>/<name>` jsonl(.gz) file (upstream's file layout); or, for upstream's file names, the
//! ingested dataset they became (`PAQ_pairs.jsonl.gz` -> `paq`,
//! `stackexchange_title_body/<site>.jsonl.gz` -> `stackexchange_title_body`). Entries that resolve
//! to the same dataset are merged and their weights summed (upstream's per-site Stack Exchange
//! files are one dataset here). Anything unresolved is an error listing every missing name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemas::{Arity, Manifest, MANIFEST_FILE};
use serde::Serialize;

use crate::error::{MixError, Result};

/// One config entry; index.json records the entries, so the type lives in `schemas`.
pub use schemas::ConfigEntry;

/// A parsed `data_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixConfig {
    pub path: PathBuf,
    pub entries: Vec<ConfigEntry>,
}

impl MixConfig {
    pub fn read(path: &Path) -> Result<MixConfig> {
        let bytes = std::fs::read(path).map_err(|e| MixError::io(path, e))?;
        MixConfig::from_slice(path, &bytes)
    }

    pub fn from_slice(path: &Path, bytes: &[u8]) -> Result<MixConfig> {
        let entries: Vec<ConfigEntry> =
            serde_json::from_slice(bytes).map_err(|e| MixError::Config {
                path: path.to_path_buf(),
                message: format!("not a list of {{\"name\", \"lines\", \"weight\"}}: {e}"),
            })?;
        if entries.is_empty() {
            return Err(MixError::Config {
                path: path.to_path_buf(),
                message: "no entries".into(),
            });
        }
        if let Some(e) = entries.iter().find(|e| e.weight == 0) {
            return Err(MixError::Config {
                path: path.to_path_buf(),
                message: format!("`{}` has weight 0: remove the entry instead", e.name),
            });
        }
        let config = MixConfig {
            path: path.to_path_buf(),
            entries,
        };
        check_total_weight(&config.path, config.wide_total_weight())?;
        Ok(config)
    }

    /// Σweight. [`MixConfig::read`] and [`MixConfig::from_slice`] refuse configs whose sum
    /// exceeds [`MAX_TOTAL_WEIGHT`], so this cannot overflow for them; a config built by hand
    /// saturates here and is refused by [`resolve`].
    pub fn total_weight(&self) -> u64 {
        u64::try_from(self.wide_total_weight()).unwrap_or(u64::MAX)
    }

    /// Σweight in a type no config can overflow (fewer than 2^64 entries of less than 2^64).
    pub fn wide_total_weight(&self) -> u128 {
        self.entries.iter().map(|e| e.weight as u128).sum()
    }
}

/// The largest Σweight a mix accepts: 2^63 − 1. The exact-mixing schedule compares
/// `weight × batches` products in i128, which this bound (with `--steps` below 2^62) keeps exact.
/// Only the ratios of the weights matter, so a bigger config can always be scaled down.
pub const MAX_TOTAL_WEIGHT: u64 = i64::MAX as u64;

/// Fails when `total` exceeds [`MAX_TOTAL_WEIGHT`], naming the sum and the limit.
pub fn check_total_weight(path: &Path, total: u128) -> Result<()> {
    if total > MAX_TOTAL_WEIGHT as u128 {
        return Err(MixError::Config {
            path: path.to_path_buf(),
            message: format!(
                "the weights sum to {total}, above the limit of {MAX_TOTAL_WEIGHT} (2^63 - 1): \
                 only their ratios matter, so divide them all by a common factor"
            ),
        });
    }
    Ok(())
}

/// Upstream's file name (without `.jsonl.gz`; for per-site files, the folder) to our dataset id.
const UPSTREAM_IDS: &[(&str, &str)] = &[
    ("WikiAnswers_pairs", "wikianswers"),
    ("PAQ_pairs", "paq"),
    ("stackexchange_title_body", "stackexchange_title_body"),
    ("stackexchange_Title_Answer", "stackexchange_title_answer"),
    ("msmarco-query_passage_negative_v2", "msmarco"),
    ("msmarco-query_passage_negative", "msmarco"),
    ("gooaq_pairs", "gooaq"),
    ("amazon-qa-train-pairs", "amazon_qa"),
    ("yahoo_answers_title_answer", "yahoo_title_answer"),
    ("yahoo_answers_question_answer", "yahoo_question_answer"),
    ("yahoo_answers_title_question", "yahoo_title_question"),
    ("searchQA_question_top5_snippets_merged", "searchqa"),
    ("eli5_question_answer", "eli5"),
    (
        "stackexchange_duplicate_questions_title_title",
        "stackexchange_duplicates",
    ),
    ("quora_duplicates_triplets", "quora"),
    ("NQ-train_pairs", "natural_questions"),
    ("squad_pairs", "squad"),
    ("TriviaQA_pairs", "triviaqa"),
];

fn strip_jsonl(name: &str) -> &str {
    name.strip_suffix(".jsonl.gz")
        .or_else(|| name.strip_suffix(".jsonl"))
        .unwrap_or(name)
}

/// Our dataset id for one of upstream's file names, when we ingest that data.
pub fn upstream_dataset_id(name: &str) -> Option<&'static str> {
    let stem = strip_jsonl(name);
    // Per-site files `<folder>/<site>.jsonl.gz` are one dataset per folder.
    let key = stem.split('/').next().unwrap_or(stem);
    UPSTREAM_IDS
        .iter()
        .find(|(up, _)| *up == key)
        .map(|(_, id)| *id)
}

/// Where a resolved source's rows live; index.json records it, so the type lives in `schemas`.
pub use schemas::SourceKind;

/// One source the mix draws from: the merge of every config entry that resolved to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedSource {
    /// Dataset id (for jsonl files, the config name without `.jsonl.gz`).
    pub id: String,
    #[serde(flatten)]
    pub kind: SourceKind,
    /// Sum of the weights of `names`.
    pub weight: u64,
    /// The config names merged into this source.
    pub names: Vec<String>,
}

fn is_dataset_dir(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

/// Resolves every entry of `config` against `pairs`, merging entries that land on the same
/// dataset. Sources come back sorted by id, so reordering the config does not change the mix.
pub fn resolve(config: &MixConfig, pairs: &Path) -> Result<Vec<ResolvedSource>> {
    let mut by_id: BTreeMap<String, ResolvedSource> = BTreeMap::new();
    let mut missing = Vec::new();
    for entry in &config.entries {
        let direct = pairs.join(&entry.name);
        let (id, kind) = if is_dataset_dir(&direct) {
            (entry.name.clone(), SourceKind::Dataset { dir: direct })
        } else if direct.is_file() {
            (
                strip_jsonl(&entry.name).to_owned(),
                SourceKind::Jsonl { file: direct },
            )
        } else if let Some(id) =
            upstream_dataset_id(&entry.name).filter(|id| is_dataset_dir(&pairs.join(id)))
        {
            (
                id.to_owned(),
                SourceKind::Dataset {
                    dir: pairs.join(id),
                },
            )
        } else {
            let hint = match upstream_dataset_id(&entry.name) {
                Some(id) => format!("neither {id}/ (ingested) nor the file {}", entry.name),
                None => format!("no dataset folder or file {}", entry.name),
            };
            missing.push(format!("{} (weight {}): {hint}", entry.name, entry.weight));
            continue;
        };
        let source = by_id.entry(id.clone()).or_insert_with(|| ResolvedSource {
            id: id.clone(),
            kind: kind.clone(),
            weight: 0,
            names: Vec::new(),
        });
        if source.kind != kind {
            return Err(MixError::Config {
                path: config.path.clone(),
                message: format!("`{id}` resolves both to {:?} and {:?}", source.kind, kind),
            });
        }
        // Checked: a hand-built config may not have been through `check_total_weight`.
        source.weight = source
            .weight
            .checked_add(entry.weight)
            .filter(|w| *w <= MAX_TOTAL_WEIGHT)
            .ok_or_else(|| MixError::Config {
                path: config.path.clone(),
                message: format!(
                    "the weights merged into `{id}` sum past the limit of {MAX_TOTAL_WEIGHT} \
                     (2^63 - 1): divide them all by a common factor"
                ),
            })?;
        source.names.push(entry.name.clone());
    }
    if !missing.is_empty() {
        return Err(MixError::Missing {
            config: config.path.clone(),
            pairs: pairs.to_path_buf(),
            missing,
        });
    }
    let total = by_id.values().map(|s| s.weight as u128).sum();
    check_total_weight(&config.path, total)?;
    Ok(by_id.into_values().collect())
}

/// The arity and row count recorded for a dataset folder.
pub fn dataset_shape(dir: &Path) -> Result<(Arity, u64, Manifest)> {
    let manifest = Manifest::read(dir)?;
    Ok((manifest.columns, manifest.rows, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_map_to_our_ids() {
        assert_eq!(upstream_dataset_id("PAQ_pairs.jsonl.gz"), Some("paq"));
        assert_eq!(
            upstream_dataset_id("stackexchange_Title_Answer/islam.stackexchange.com.jsonl.gz"),
            Some("stackexchange_title_answer")
        );
        assert_eq!(
            upstream_dataset_id("msmarco-query_passage_negative_v2.jsonl.gz"),
            Some("msmarco")
        );
        assert_eq!(upstream_dataset_id("S2ORC_title_abstract.jsonl.gz"), None);
    }

    #[test]
    fn weight_zero_and_garbage_are_errors() {
        let p = Path::new("c.json");
        assert!(MixConfig::from_slice(p, br#"[{"name":"a","weight":0}]"#).is_err());
        assert!(MixConfig::from_slice(p, br#"{"name":"a"}"#).is_err());
        assert!(MixConfig::from_slice(p, b"[]").is_err());
        let c = MixConfig::from_slice(p, br#"[{"name":"a","lines":3,"weight":2}]"#).unwrap();
        assert_eq!(c.total_weight(), 2);
    }
}
