//! Shared by the training tests: the models under $HEARTH_TEST_MODELS and greedy
//! decoding with the serving engine's forward pass.
#![allow(dead_code)]
use candle_core::quantized::gguf_file::Content;
use hearth_engine::text::{load_model, Model};
use std::path::{Path, PathBuf};

pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";

/// The model's path under `$HEARTH_TEST_MODELS` (else `$HEARTH_HOME/models`). A missing
/// model fails the test: a test that passed without its model would prove nothing.
pub fn model(file: &str) -> PathBuf {
    let dir = std::env::var_os("HEARTH_TEST_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HEARTH_HOME").map(|home| PathBuf::from(home).join("models")))
        .expect("HEARTH_TEST_MODELS is not set: run `hearth pull` and point HEARTH_TEST_MODELS at its cache (scripts/test.sh does)");
    let path = dir.join(file);
    assert!(path.exists(), "test model missing: {}. Run `hearth pull` first (scripts/test.sh does)", path.display());
    path
}

/// The serving engine's model loaded from `path`.
pub fn engine(path: &Path) -> Box<dyn Model> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut file).unwrap();
    load_model(&content, &mut file).unwrap()
}

pub fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32
}

/// The engine's logits after the last of `tokens`.
pub fn engine_last_logits(model: &dyn Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len() + 1).unwrap();
    model.prefill(tokens, &mut cache, false).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Greedy decoding with the engine (KV cache, as serving runs it), stopping at `stop`.
pub fn engine_greedy(model: &dyn Model, prompt: &[u32], max_tokens: usize, stop: &[u32]) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + max_tokens + 1).unwrap();
    let mut logits: Vec<f32> = model.prefill(prompt, &mut cache, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut out = Vec::new();
    for _ in 0..max_tokens {
        let next = argmax(&logits);
        if stop.contains(&next) {
            break;
        }
        out.push(next);
        logits = model.decode(&[next], &mut [&mut cache]).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    }
    out
}
