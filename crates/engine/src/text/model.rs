//! CONTRACT for the model helper: GGUF transformer architectures (llama, qwen2,
//! gemma3) running over a per-sequence KV cache that is allocated once.
use candle_core::{Result, Tensor};

/// Per-sequence KV cache: allocated once with a fixed capacity, written in place.
pub struct SeqCache {
    // filled in by the model module
}

impl SeqCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize { todo!() }
    pub fn capacity(&self) -> usize { todo!() }
}

pub trait Model: Send {
    /// A cache for up to `capacity` tokens.
    fn new_cache(&self, capacity: usize) -> Result<SeqCache>;
    /// Appends `tokens` at `cache.len()`. Returns f32 logits `[tokens.len(), vocab]` when
    /// `all_logits`, else `[1, vocab]` for the last token.
    fn prefill(&self, tokens: &[u32], cache: &mut SeqCache, all_logits: bool) -> Result<Tensor>;
    /// One decode step for several sequences at once (each at its own position);
    /// returns f32 logits `[tokens.len(), vocab]`.
    fn decode(&self, tokens: &[u32], caches: &mut [&mut SeqCache]) -> Result<Tensor>;
}

/// Loads the weights of a GGUF file whose `general.architecture` is llama, qwen2 or gemma3.
pub fn load(content: &candle_core::quantized::gguf_file::Content, file: &mut std::fs::File) -> Result<Box<dyn Model>> {
    let _ = (content, file);
    todo!()
}
