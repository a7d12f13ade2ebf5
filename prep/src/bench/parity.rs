//! `prep bench parity`: this build, on this device and precision, against the PyTorch reference
//! (`shared/reference/minilm_parity.json`, the real all-MiniLM-L6-v2 weights):
//! 1. the reference sentences' embeddings: the smallest cosine to sentence-transformers';
//! 2. the parity test's 3 AdamW steps (symmetric MNRL on the 8-pair batch, dropout off, max
//!    length 128, lr 1e-4, clip 1.0): each step's loss and gradient norm against PyTorch's.
//!
//! The tests run these on the CPU; scripts/gpu-check.sh runs them on a GPU at each precision.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use encoder::candle_core::{Device, Tensor};
use encoder::tokenizers::{Tokenizer, TruncationParams};
use encoder::{Precision, SentenceEncoder};
use loader::Column;
use serde_json::{json, Value};
use train::{loss_and_grads, AdamW, AdamWConfig, Columns, LossConfig, Trainable};

use crate::compute::ComputeArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: the all-MiniLM-L6-v2 test model from scripts/fetch-test-model.sh).
    #[arg(long)]
    pub model: Option<String>,
    /// The reference (default: $PREP_SHARED/reference/minilm_parity.json, else
    /// ../shared/reference/minilm_parity.json).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// What each precision must meet: (min cosine of embeddings, the goal for the loss's
/// relative error, the bound the run fails beyond). After two steps at lr 1e-4 the 8-pair batch
/// is nearly solved (PyTorch's step-3 loss is 1.4e-4), so the third loss's relative error is
/// that of a tiny number: on the CPU at f32 it is 4.4e-4, 6e-8 absolute (the train parity test
/// bounds it at 1e-3). Above the 1e-4 goal but within the bound: reported, not failed.
fn tolerances(p: Precision) -> (f64, f64, f64) {
    match p {
        Precision::Bf16 => (0.999, 1e-2, 1e-2),
        // TF32 rounds products' inputs to 10 mantissa bits: between f32 and bf16.
        Precision::Tf32 => (0.9999, 1e-3, 5e-3),
        _ => (0.99999, 1e-4, 1e-3),
    }
}

pub fn run(args: Args) -> Result<()> {
    let device = args.compute.open()?;
    let model = match &args.model {
        Some(m) => crate::model::resolve(m)?,
        None => super::default_test_model(),
    };
    let path = args.reference.clone().unwrap_or_else(default_reference);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let reference: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let precision = args.compute.precision;
    let (cos_goal, loss_goal, loss_bound) = tolerances(precision);
    let on = format!("{} {precision}", args.compute.device);

    let cosine = embedding_parity(&reference, &model, &device, precision)?;
    println!(
        "parity {on}: embeddings min cosine {cosine:.7} (goal >= {cos_goal}) {}",
        verdict(cosine >= cos_goal)
    );
    let steps = adamw_parity(&reference, &model, &device, precision)?;
    let mut worst = 0f64;
    for s in &steps {
        worst = worst.max(s.loss_rel_error);
        println!(
            "parity {on}: AdamW step {}: loss {:.7} vs {:.7} (rel {:.1e}), grad norm {:.6} vs {:.6}",
            s.step, s.loss, s.reference_loss, s.loss_rel_error, s.grad_norm, s.reference_grad_norm
        );
    }
    let ok = cosine >= cos_goal && worst <= loss_bound;
    let loss_verdict = if worst <= loss_goal {
        "ok".to_owned()
    } else if worst <= loss_bound {
        format!("above the goal, within the parity test's bound {loss_bound:.0e}")
    } else {
        "FAIL".to_owned()
    };
    println!(
        "parity {on}: 3 AdamW steps, worst loss rel error {worst:.1e} (goal <= {loss_goal:.0e}) {loss_verdict}"
    );
    if let Some(out) = &args.json {
        let report = json!({
            "device": args.compute.device.to_string(),
            "precision": precision.to_string(),
            "embeddings_min_cosine": cosine,
            "adamw_steps": steps,
            "loss_goal": loss_goal,
            "loss_bound": loss_bound,
            "pass": ok,
        });
        schemas::AtomicFile::write_json(out, &report)?;
    }
    if !ok {
        bail!("parity {on}: outside the goals above");
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn default_reference() -> PathBuf {
    let shared = std::env::var_os("PREP_SHARED").unwrap_or_else(|| "../shared".into());
    PathBuf::from(shared).join("reference/minilm_parity.json")
}

/// The smallest cosine between our embeddings of the reference sentences and PyTorch's.
fn embedding_parity(
    reference: &Value,
    model: &Path,
    device: &Device,
    precision: Precision,
) -> Result<f64> {
    let mut enc = SentenceEncoder::load(model, device)
        .with_context(|| format!("loading {}", model.display()))?;
    enc.set_precision(precision)?;
    let sentences: Vec<&str> = strings(&reference["sentences"])?;
    let ours = enc.encode(&sentences, 32)?;
    let theirs = reference["embeddings"]
        .as_array()
        .context("reference: no `embeddings`")?;
    let mut min = 1f64;
    for (a, b) in ours.iter().zip(theirs) {
        let b: Vec<f64> = serde_json::from_value(b.clone())?;
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y).sum();
        let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        min = min.min(dot / (na * nb).max(1e-30));
    }
    Ok(min)
}

fn strings(v: &Value) -> Result<Vec<&str>> {
    v.as_array()
        .context("reference: expected an array of strings")?
        .iter()
        .map(|s| s.as_str().context("reference: expected a string"))
        .collect()
}

/// One AdamW step of the parity run against the reference's.
#[derive(serde::Serialize)]
struct StepParity {
    step: usize,
    loss: f64,
    reference_loss: f64,
    loss_rel_error: f64,
    grad_norm: f64,
    reference_grad_norm: f64,
}

/// Three AdamW steps on the reference's pair batch.
fn adamw_parity(
    reference: &Value,
    model_dir: &Path,
    device: &Device,
    precision: Precision,
) -> Result<Vec<StepParity>> {
    let (anchor, positive) = pair_columns(reference, model_dir, device)?;
    let mut model = Trainable::from_pretrained(model_dir, Some(0.0), device)?;
    model.set_precision(precision, None)?;
    let cols = Columns {
        anchor: &anchor,
        positive: &positive,
        negatives: Vec::new(),
    };
    let mut opt = AdamW::new(&model.vars, AdamWConfig::default())?;
    let want = reference["adamw_3_steps"]["steps"]
        .as_array()
        .context("reference: no `adamw_3_steps.steps`")?;
    let mut out = Vec::new();
    for (i, step) in want.iter().enumerate() {
        let mut g = loss_and_grads(&model, &cols, LossConfig::default(), None, None)?;
        let norm = train::optim::clip_grad_norm(&mut g.grads, 1.0)?;
        opt.step(&model.vars, &g.grads, 1e-4)?;
        let wl = step["loss"]
            .as_f64()
            .context("reference: step without `loss`")?;
        out.push(StepParity {
            step: i + 1,
            loss: g.loss,
            reference_loss: wl,
            loss_rel_error: (g.loss - wl).abs() / wl.abs().max(1e-12),
            grad_norm: norm,
            reference_grad_norm: step["grad_norm_before_clip"].as_f64().unwrap_or(f64::NAN),
        });
    }
    Ok(out)
}

/// The pair batch's anchors and positives, tokenized at max length 128 and padded to the
/// longest, on `device`.
fn pair_columns(reference: &Value, model_dir: &Path, device: &Device) -> Result<(Column, Column)> {
    let path = model_dir.join("tokenizer.json");
    let mut tok =
        Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tok.with_truncation(Some(TruncationParams {
        max_length: 128,
        ..Default::default()
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tok.with_padding(None);
    let rows = reference["pair_batch"]
        .as_array()
        .context("reference: no `pair_batch`")?;
    let column = |c: usize| -> Result<Column> {
        let ids: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let text = r[c].as_str().context("reference: pair text")?;
                let enc = tok.encode(text, true).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(enc.get_ids().to_vec())
            })
            .collect::<Result<_>>()?;
        let (flat, mask, t) = loader::pad(&ids, 0);
        Ok(Column {
            ids: Tensor::from_vec(flat, (ids.len(), t), device)?,
            mask: Tensor::from_vec(mask, (ids.len(), t), device)?,
        })
    };
    Ok((column(0)?, column(1)?))
}
