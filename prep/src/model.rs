//! Model resolution shared by every command that takes `--model`: a local folder
//! (sentence-transformers or plain HF layout) as it is, or a Hugging Face Hub id
//! (`org/name[@revision]`) fetched into the standard HF cache. Honours HF_HOME, HF_HUB_CACHE,
//! HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN; with a warm cache no network is needed.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Turns a `--model` argument into a local folder holding the model files.
#[allow(dead_code)]
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let cfg = fetch::HubConfig::from_env();
    fetch::hub::resolve_model_with(spec, &cfg, &crate::cmd::download::MultiBar::new())
        .with_context(|| format!("resolving model `{spec}`"))
}
