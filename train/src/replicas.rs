//! Keeping data-parallel replicas one model: at start every rank checks that it reads the same
//! shards, loaded the same weights and runs the same settings as rank 0 (a clear error naming
//! the mismatch otherwise), then takes rank 0's weights and optimizer moments bit for bit.

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::TrainerState;
use crate::collective::Collective;
use crate::error::{Ctx, Result, TrainError};
use crate::model::Trainable;
use crate::optim::AdamW;

/// What every rank must agree on before the first step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fingerprint {
    /// sha256 of the shard set's `index.json` (it lists every shard's sha256).
    shards: String,
    /// sha256 of the parameters as loaded (names, shapes, f32 bytes).
    weights: String,
    /// The settings (rank left out), the step and the loader's position.
    config: serde_json::Value,
}

/// The checks, in the order of the bits ranks exchange.
const ITEMS: [&str; 3] = [
    "the shards' fingerprint (sha256 of index.json)",
    "the model weights' sha256",
    "the training config and position",
];

/// sha256 of every parameter (names, shapes, f32 little-endian bytes), in name order.
pub fn weights_sha256(model: &Trainable) -> Result<String> {
    let mut h = Sha256::new();
    for (name, var) in model.names.iter().zip(&model.vars) {
        h.update(name.as_bytes());
        for d in var.dims() {
            h.update((*d as u64).to_le_bytes());
        }
        let values = var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .ctx(name)?;
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn fingerprint(shards: &Path, model: &Trainable, state: &TrainerState) -> Result<Fingerprint> {
    let index = shards.join(schemas::SHARD_INDEX_FILE);
    let bytes = std::fs::read(&index).map_err(|e| TrainError::io(&index, e))?;
    let mut config = state.config.clone();
    config.rank = 0;
    let config = serde_json::json!({
        "config": config,
        "step": state.step,
        "loader": state.loader,
        "dropout_rng": state.dropout_rng,
    });
    Ok(Fingerprint {
        shards: hex::encode(Sha256::digest(&bytes)),
        weights: weights_sha256(model)?,
        config,
    })
}

/// Rank 0's bytes on every rank (length first, then the bytes).
fn broadcast_bytes(coll: &dyn Collective, mine: Vec<u8>) -> Result<Vec<u8>> {
    let mut len = (mine.len() as u64).to_le_bytes();
    coll.broadcast(&mut len, 0)?;
    let mut buf = mine;
    buf.resize(u64::from_le_bytes(len) as usize, 0);
    coll.broadcast(&mut buf, 0)?;
    Ok(buf)
}

/// Fields of two JSON objects that differ, as `name (ours vs rank 0's)`.
fn differing_fields(ours: &serde_json::Value, root: &serde_json::Value, at: &str) -> Vec<String> {
    match (ours, root) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let null = serde_json::Value::Null;
                    let name = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    differing_fields(a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null), &name)
                })
                .collect()
        }
        _ if ours == root => Vec::new(),
        _ => vec![format!("{at} ({ours} here, {root} on rank 0)")],
    }
}

/// Every rank compares its fingerprint with rank 0's; any mismatch stops every rank with an
/// error naming the ranks and what they disagree on (and, on a disagreeing rank, the values).
pub fn agree_at_start(
    coll: &dyn Collective,
    shards: &Path,
    model: &Trainable,
    state: &TrainerState,
) -> Result<()> {
    let mine = fingerprint(shards, model, state)?;
    let bytes = serde_json::to_vec(&mine).expect("plain JSON");
    let root: Fingerprint =
        serde_json::from_slice(&broadcast_bytes(coll, bytes)?).map_err(|e| {
            TrainError::Config(format!("rank 0's fingerprint did not arrive whole: {e}"))
        })?;
    let mut details = Vec::new();
    let mut bits = 0u32;
    if mine.shards != root.shards {
        bits |= 1;
        details.push(format!(
            "shards: index.json sha256 {} here, {} on rank 0",
            mine.shards, root.shards
        ));
    }
    if mine.weights != root.weights {
        bits |= 2;
        details.push(format!(
            "weights sha256 {} here, {} on rank 0",
            mine.weights, root.weights
        ));
    }
    if mine.config != root.config {
        bits |= 4;
        let fields = differing_fields(&mine.config, &root.config, "");
        details.push(format!("settings differ: {}", fields.join(", ")));
    }
    // Every rank learns every rank's verdict, so all stop together and say why.
    let all = coll.all_gather(&[bits as f32])?;
    let mut disagreeing = Vec::new();
    for (r, b) in all.iter().enumerate() {
        let b = *b as u32;
        if b != 0 {
            let what: Vec<&str> = (0..ITEMS.len())
                .filter(|i| b & (1 << i) != 0)
                .map(|i| ITEMS[i])
                .collect();
            disagreeing.push(format!(
                "rank {r} disagrees with rank 0 on {}",
                what.join(" and ")
            ));
        }
    }
    if disagreeing.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "ranks of one training run must read the same shards, start from the same weights and \
         run the same settings: {}",
        disagreeing.join("; ")
    );
    if !details.is_empty() {
        msg.push_str(&format!(" (rank {}: {})", coll.rank(), details.join("; ")));
    }
    Err(TrainError::Config(msg))
}

/// Overwrites every rank's parameters and AdamW moments with rank 0's, bit for bit.
pub fn broadcast_state(coll: &dyn Collective, model: &Trainable, opt: &mut AdamW) -> Result<()> {
    if coll.world_size() == 1 {
        return Ok(());
    }
    let mut tensors: Vec<Tensor> = model.vars.iter().map(|v| v.as_tensor().clone()).collect();
    tensors.extend(opt.moments().iter().cloned());
    let mut bytes = Vec::new();
    for t in &tensors {
        for v in t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .ctx("weights")?
        {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    coll.broadcast(&mut bytes, 0)?;
    let mut values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut fresh = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let v: Vec<f32> = values.by_ref().take(t.elem_count()).collect();
        fresh.push(Tensor::from_vec(v, t.shape(), t.device()).ctx("rank 0's weights")?);
    }
    let moments = fresh.split_off(model.vars.len());
    for (var, t) in model.vars.iter().zip(&fresh) {
        var.set(t).ctx("rank 0's weights")?;
    }
    opt.set_moments(moments);
    Ok(())
}
