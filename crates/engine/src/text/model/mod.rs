//! GGUF transformer architectures (llama, qwen2,
//! gemma3) running over a per-sequence KV cache that is allocated once.
mod cache;
mod decoder;
mod hparams;
mod ops;
mod quant;
mod threads;
mod weights;

use candle_core::{bail, Result, Tensor};

pub use cache::{Prefix, SeqCache};

/// Most prompt tokens run through the model at once (bounds the attention scores' size).
const PREFILL_CHUNK: usize = 512;

pub trait Model: Send + Sync {
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
pub fn load(
    content: &candle_core::quantized::gguf_file::Content,
    file: &mut std::fs::File,
) -> Result<Box<dyn Model>> {
    let hp = hparams::Hparams::from_gguf(content)?;
    let decoder = decoder::Decoder::load(hp, weights::GgufReader { content, file })?;
    Ok(Box::new(decoder))
}

impl Model for decoder::Decoder {
    fn new_cache(&self, capacity: usize) -> Result<SeqCache> {
        decoder::Decoder::new_cache(self, capacity)
    }

    fn prefill(&self, tokens: &[u32], cache: &mut SeqCache, all_logits: bool) -> Result<Tensor> {
        if tokens.is_empty() {
            bail!("prefill needs at least one token");
        }
        self.step_threads.run_on_all(|| prefill_chunks(self, tokens, cache, all_logits))
    }

    fn decode(&self, tokens: &[u32], caches: &mut [&mut SeqCache]) -> Result<Tensor> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            bail!(
                "decode needs one token per sequence ({} tokens, {} caches)",
                tokens.len(),
                caches.len()
            );
        }
        let counts = vec![1; tokens.len()];
        let rows: Vec<u32> = (0..tokens.len() as u32).collect();
        self.step_threads.run(tokens.len(), || self.forward(tokens, &counts, caches, Some(&rows)))
    }
}

/// The prompt a chunk at a time, in chunks of equal size (519 tokens as 260 + 259, not
/// 512 + a slow 7). Only the rows returned go through the final norm and the lm_head.
fn prefill_chunks(model: &decoder::Decoder, tokens: &[u32], cache: &mut SeqCache, all_logits: bool) -> Result<Tensor> {
    let mut logits = Vec::new();
    let size = tokens.len().div_ceil(tokens.len().div_ceil(PREFILL_CHUNK));
    let chunks = tokens.len().div_ceil(size);
    for (i, chunk) in tokens.chunks(size).enumerate() {
        let n = chunk.len() as u32;
        let rows: Option<Vec<u32>> = if all_logits {
            Some((0..n).collect())
        } else if i + 1 == chunks {
            Some(vec![n - 1])
        } else {
            None
        };
        let out = model.forward(chunk, &[chunk.len()], &mut [&mut *cache], rows.as_deref())?;
        if rows.is_some() {
            logits.push(out);
        }
    }
    Tensor::cat(&logits, 0)
}
