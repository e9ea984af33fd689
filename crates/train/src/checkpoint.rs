//! Checkpoints: `<dir>/step-000012/` holding the adapters and AdamW's moments
//! (`adapter.safetensors`) and the run's position (`state.json`). Each is written under
//! a temporary name and renamed, so a crash never leaves a half-written latest one.
use crate::adamw::AdamW;
use crate::StepMetrics;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Optimizer steps done.
    pub step: usize,
    pub trained_tokens: u64,
    /// Identifies the run (base, data sizes, hyperparameters, seed, adapters): a
    /// checkpoint of another run is never resumed.
    pub fingerprint: String,
    pub metrics: Vec<StepMetrics>,
}

/// Writes a checkpoint of `opt`'s variables (named `names`) after `state.step` steps.
pub fn save(dir: &Path, names: &[String], opt: &AdamW, state: &State) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let final_dir = dir.join(format!("step-{:06}", state.step));
    let tmp = dir.join(format!(".step-{:06}.partial", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, (var, m, v)) in names.iter().zip(&opt.state) {
        tensors.insert(name.clone(), var.as_tensor().clone());
        tensors.insert(format!("{name}.adam_m"), m.clone());
        tensors.insert(format!("{name}.adam_v"), v.clone());
    }
    candle_core::safetensors::save(&tensors, tmp.join("adapter.safetensors"))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_vec(state)?)?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir)?;
    Ok(final_dir)
}

/// The latest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries {
        let path = entry?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("step-")).and_then(|s| s.parse::<usize>().ok());
        if let Some(step) = step {
            if path.join("state.json").is_file() && best.as_ref().is_none_or(|(s, _)| step > *s) {
                best = Some((step, path));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Restores the checkpoint at `path` into `opt` (whose variables are named `names`).
pub fn load(path: &Path, names: &[String], opt: &mut AdamW, fingerprint: &str) -> Result<State> {
    let state: State = serde_json::from_slice(&std::fs::read(path.join("state.json"))?).with_context(|| format!("reading {}", path.display()))?;
    if state.fingerprint != fingerprint {
        bail!("the checkpoint in {} belongs to another training run", path.display());
    }
    let tensors = candle_core::safetensors::load(path.join("adapter.safetensors"), &Device::Cpu)?;
    let get = |k: &str| tensors.get(k).cloned().with_context(|| format!("checkpoint {} lacks `{k}`", path.display()));
    for (name, (var, m, v)) in names.iter().zip(opt.state.iter_mut()) {
        var.set(&get(name)?)?;
        *m = get(&format!("{name}.adam_m"))?;
        *v = get(&format!("{name}.adam_v"))?;
    }
    opt.t = state.step;
    Ok(state)
}
