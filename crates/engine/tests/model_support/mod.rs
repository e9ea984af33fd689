//! Shared by the model_* tests: finding the GGUF test models and running them greedily.
#![allow(dead_code)]
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use hearth_engine::text::{load_model, Model};
use std::path::PathBuf;

pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
pub const ALL: [&str; 3] = [SMOLLM2, QWEN2, GEMMA3];

/// `$HEARTH_TEST_MODELS` (default /tmp/models).
pub fn models_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/models"))
}

/// Loads a test model, or None (with a note) when its file is absent.
pub fn load(file_name: &str) -> Option<Box<dyn Model>> {
    let path = models_dir().join(file_name);
    if !path.exists() {
        eprintln!("skipping {file_name}: {} not found (set HEARTH_TEST_MODELS)", path.display());
        return None;
    }
    let mut file = std::fs::File::open(&path).expect("open model");
    let content = gguf_file::Content::read(&mut file).expect("read gguf header");
    Some(load_model(&content, &mut file).expect("load model"))
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
