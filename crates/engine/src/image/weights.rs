//! Finds a component's safetensors in a diffusers folder and maps them for candle.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// The component's weight files: full-precision ones first choice, else a variant
/// (`*.fp16.safetensors`); shards of one model all together.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    all.sort();
    let is_variant = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.split('.').count() > 2 && !n.contains("-of-"));
    let plain: Vec<PathBuf> = all.iter().filter(|p| !is_variant(p)).cloned().collect();
    let chosen = if plain.is_empty() { all } else { plain };
    if chosen.is_empty() {
        bail!("no .safetensors weights in {}", dir.display());
    }
    Ok(chosen)
}

/// Maps the weights of `dir` as f32 (half-precision files are widened on load).
pub fn var_builder(dir: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let files = files(dir)?;
    // SAFETY: the files are mapped read-only and not modified while the engine lives.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
    Ok(vb)
}

/// The weights of `dir` as named f32 tensors.
pub fn tensors(dir: &Path, device: &Device) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let mut all = std::collections::HashMap::new();
    for file in files(dir)? {
        for (name, t) in candle_core::safetensors::load(&file, device)? {
            all.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(all)
}
