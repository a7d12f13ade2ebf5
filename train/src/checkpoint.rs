//! Checkpoint folders: a sentence-transformers model folder (loadable as is) plus the trainer's
//! state (`trainer_state.json`, `optimizer.safetensors`). Built under a temporary name and renamed,
//! so a crash during a save leaves the previous checkpoint whole.

use std::path::{Path, PathBuf};

use encoder::DropoutRngState;
use loader::LoaderState;
use schemas::{AtomicDir, AtomicFile};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Ctx, Result, TrainError};
use crate::model::Trainable;
use crate::optim::AdamW;
use crate::TrainConfig;

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Tokenizer files copied from the source model when present.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Where the loader continues.
    pub loader: LoaderState,
    /// The dropout RNG after the last completed step (`None` with dropout off).
    pub dropout_rng: Option<DropoutRngState>,
    /// The shard folder trained on (for remote shards: the local mirror folder, see `shards_url`).
    pub shards: PathBuf,
    /// The object-store location of the shards when they are remote: a resume reopens it (through
    /// a mirror under the resuming process's cache), so a run moves between machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_url: Option<String>,
    /// The mix's fingerprint from `index.json` (its inputs and options): a resume refuses a shard
    /// folder or store location that now holds another mix.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub shards_fingerprint: serde_json::Value,
    /// The run's settings; a resume continues with exactly these.
    pub config: TrainConfig,
    pub prep_version: String,
}

/// The folder name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

/// Writes the sentence-transformers files of `model` into `dir` (which exists).
pub fn write_model_files(dir: &Path, model: &Trainable, max_seq_length: usize) -> Result<()> {
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&model.tensors(), &weights)
        .ctx(&format!("writing {}", weights.display()))?;
    // Writing into the source folder itself (a fresh model's folder getting its first weights):
    // its tokenizer files are already there, and copying a file onto itself empties it.
    let same = |a: &Path| match (a.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let source = model.source.as_deref().filter(|s| !same(s));
    // config.json: the source's verbatim when fine-tuning (keeps fields we do not model),
    // else the model's own.
    let config = dir.join("config.json");
    match source
        .map(|s| s.join("config.json"))
        .filter(|p| p.is_file())
    {
        Some(src) => copy(&src, &config)?,
        None => write_json(&config, &model.config)?,
    }
    if let Some(src) = source {
        for f in TOKENIZER_FILES {
            if src.join(f).is_file() {
                copy(&src.join(f), &dir.join(f))?;
            }
        }
    }
    let hidden = model.config.hidden_size;
    write_json(
        &dir.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    std::fs::create_dir_all(dir.join("1_Pooling"))
        .map_err(|e| TrainError::io(dir.join("1_Pooling"), e))?;
    std::fs::create_dir_all(dir.join("2_Normalize"))
        .map_err(|e| TrainError::io(dir.join("2_Normalize"), e))?;
    write_json(
        &dir.join("1_Pooling").join("config.json"),
        &json!({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    )?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": max_seq_length, "do_lower_case": false}),
    )?;
    write_json(
        &dir.join("config_sentence_transformers.json"),
        &json!({
            "__version__": {"sentence_transformers": "2.2.2", "prep": schemas::PREP_VERSION},
            "prompts": {},
            "default_prompt_name": null,
            "similarity_fn_name": "cosine"
        }),
    )?;
    Ok(())
}

/// Saves a full checkpoint to `target` atomically. `fail_after_model` makes the save fail midway
/// (tests use it to show a crash never damages the previous checkpoint).
pub fn save(
    target: &Path,
    model: &Trainable,
    opt: &AdamW,
    state: &TrainerState,
    fail_after_model: bool,
) -> Result<()> {
    let dir = AtomicDir::create(target)?;
    write_model_files(dir.path(), model, state.config.max_seq_length)?;
    if fail_after_model {
        return Err(TrainError::invalid(target, "save interrupted (test hook)"));
    }
    let opt_path = dir.path().join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&opt.state_tensors(&model.names), &opt_path)
        .ctx(&format!("writing {}", opt_path.display()))?;
    write_json(&dir.path().join(TRAINER_STATE_FILE), state)?;
    dir.commit()?;
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(TRAINER_STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Json { path, source: e })
}

/// `dir` itself when it is a checkpoint, else its newest complete `checkpoint-N` (hidden
/// half-written folders are never considered).
pub fn find_latest(dir: &Path) -> Result<PathBuf> {
    if dir.join(TRAINER_STATE_FILE).is_file() {
        return Ok(dir.to_owned());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries {
        let e = e.map_err(|e| TrainError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if e.path().join(TRAINER_STATE_FILE).is_file() && best.as_ref().is_none_or(|(b, _)| n > *b)
        {
            best = Some((n, e.path()));
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| TrainError::invalid(dir, "no complete checkpoint-N folder to resume from"))
}

/// Restores optimizer moments saved next to `state`.
pub fn load_optimizer(dir: &Path, model: &Trainable, opt: &mut AdamW, steps: u64) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    let tensors = candle_core::safetensors::load(&path, model.device())
        .ctx(&format!("reading {}", path.display()))?;
    opt.load_state(&model.names, steps, tensors)
        .map_err(|msg| TrainError::invalid(&path, msg))
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| TrainError::Json {
        path: path.to_owned(),
        source: e,
    })?;
    bytes.push(b'\n');
    AtomicFile::write_all(path, &bytes)?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map_err(|e| TrainError::io(from, e))?;
    Ok(())
}
