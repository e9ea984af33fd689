//! Shared by the engine's tests: finding the test models, loading them (as a bare model or a
//! `TextEngine`), running them greedily and collecting a sequence's events.
#![allow(dead_code)]
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use hearth_engine::text::{load_model, Event, FinishReason, Model, TextEngine, TextEngineConfig};
use std::path::PathBuf;
use tokio::sync::mpsc::UnboundedReceiver;

pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
pub const ALL: [&str; 3] = [SMOLLM2, QWEN2, GEMMA3];

/// Where `hearth pull` put the models: `$HEARTH_TEST_MODELS`, else `$HEARTH_HOME/models`,
/// else `~/.cache/hearth/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_TEST_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HEARTH_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let cache =
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("hearth")
    });
    home.join("models")
}

/// The path of a pulled model (a file, or a bundle's directory). A missing model fails
/// the test: a test that passed without its model would prove nothing.
pub fn model_path(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(
        path.exists(),
        "test model missing: {}. Run `hearth pull` first (scripts/test.sh does) and point HEARTH_TEST_MODELS (or HEARTH_HOME) at its cache",
        path.display()
    );
    path
}

/// Loads a test model (fails the test when it is not pulled).
pub fn load(file_name: &str) -> Box<dyn Model> {
    let mut file = std::fs::File::open(model_path(file_name)).expect("open model");
    let content = gguf_file::Content::read(&mut file).expect("read gguf header");
    load_model(&content, &mut file).expect("load model")
}

/// A `TextEngine` (scheduler thread included) over a test model.
pub fn text_engine(file_name: &str, config: TextEngineConfig) -> TextEngine {
    TextEngine::load(&model_path(file_name), config).unwrap_or_else(|e| panic!("loading {file_name}: {e:#}"))
}

/// Receives a sequence's events until the end; returns generated ids and why generation ended.
pub fn collect(mut rx: UnboundedReceiver<Event>) -> (Vec<u32>, FinishReason) {
    let mut ids = Vec::new();
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Token { id, .. } => ids.push(id),
            Event::Finished { reason } => return (ids, reason),
            Event::PromptLogprobs(_) => {}
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("stream ended without Finished after {} tokens", ids.len());
}

pub fn argmax_rows(logits: &Tensor) -> Vec<u32> {
    logits.argmax(1).expect("argmax").to_vec1::<u32>().expect("to_vec")
}

/// Greedy continuation of `prompt`: `n` tokens, one decode step each.
pub fn greedy(model: &dyn Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n).expect("cache");
    let logits = model.prefill(prompt, &mut cache, false).expect("prefill");
    let mut next = argmax_rows(&logits)[0];
    let mut out = vec![next];
    while out.len() < n {
        let logits = model.decode(&[next], &mut [&mut cache]).expect("decode");
        next = argmax_rows(&logits)[0];
        out.push(next);
    }
    out
}

/// Largest |a - b| relative to the largest |a|.
pub fn relative_max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "logit shapes differ");
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
