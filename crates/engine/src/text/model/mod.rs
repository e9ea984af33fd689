//! GGUF transformer architectures (llama, qwen2,
//! gemma3) running over a per-sequence KV cache that is allocated once.
mod cache;
mod decoder;
mod head;
mod hparams;
mod ops;
mod quant;
mod threads;
mod weights;

use candle_core::{bail, Result, Tensor};

pub use cache::{Prefix, SeqCache};
pub use hparams::{Arch, Hparams, RopeStyle, SlidingWindow};

/// Most prompt tokens run through the model at once (bounds the attention scores' size;
/// the scheduler's `PREFILL_BUDGET` per iteration is smaller, for latency).
const MAX_PREFILL_ROWS: usize = 512;

pub trait Model: Send + Sync {
    /// A cache for up to `capacity` tokens.
    fn new_cache(&self, capacity: usize) -> Result<SeqCache>;
    /// Appends `tokens` at `cache.len()`. Returns f32 logits `[tokens.len(), vocab]` when
    /// `all_logits`, else `[1, vocab]` for the last token.
    fn prefill(&self, tokens: &[u32], cache: &mut SeqCache, all_logits: bool) -> Result<Tensor>;
    /// One decode step for several sequences at once (each at its own position);
    /// returns f32 logits `[tokens.len(), vocab]`.
    fn decode(&self, tokens: &[u32], caches: &mut [&mut SeqCache]) -> Result<Tensor>;
    /// One decode step like [`Model::decode`], answering for each sequence what `wants`
    /// asks of it: its logits, or only its greedy token (computing far fewer logits).
    fn decode_next(&self, tokens: &[u32], caches: &mut [&mut SeqCache], wants: &[Want]) -> Result<Vec<Next>>;
    /// The mean of the final-normed hidden states of `tokens` run as a fresh sequence (a text
    /// embedding for classifiers, e.g. moderation); its own cache, so generation is untouched.
    fn pooled_hidden(&self, tokens: &[u32]) -> Result<Vec<f32>>;
}

/// What a decode step must produce for one sequence.
pub enum Want<'a> {
    Logits,
    Greedy(Greedy<'a>),
}

/// The argmax of a row after adjustment: the id of its first largest value, where NaN
/// counts as -inf.
pub struct Greedy<'a> {
    /// Only ids below this are eligible (the tokenizer's vocabulary).
    pub limit: usize,
    /// The ids whose logit `adjust` changes (logit bias, penalties).
    pub adjusted: &'a [u32],
    /// `(id, logit)` → the adjusted logit, for the ids in `adjusted`.
    pub adjust: &'a (dyn Fn(u32, f32) -> f32 + Sync),
}

/// What a decode step produced for one sequence.
#[derive(Debug, PartialEq)]
pub enum Next {
    Logits(Vec<f32>),
    Token(u32),
}

/// Loads the weights of a GGUF file whose `general.architecture` is llama, qwen2 or gemma3.
pub fn load(content: &candle_core::quantized::gguf_file::Content, file: &mut std::fs::File) -> Result<Box<dyn Model>> {
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
            bail!("decode needs one token per sequence ({} tokens, {} caches)", tokens.len(), caches.len());
        }
        let counts = vec![1; tokens.len()];
        let rows: Vec<u32> = (0..tokens.len() as u32).collect();
        self.step_threads.run(tokens.len(), || self.forward(tokens, &counts, caches, Some(&rows)))
    }

    fn decode_next(&self, tokens: &[u32], caches: &mut [&mut SeqCache], wants: &[Want]) -> Result<Vec<Next>> {
        if tokens.is_empty() || tokens.len() != caches.len() || wants.len() != tokens.len() {
            bail!("decode needs one token and one want per sequence ({} tokens, {} caches, {} wants)", tokens.len(), caches.len(), wants.len());
        }
        let counts = vec![1; tokens.len()];
        let rows: Vec<u32> = (0..tokens.len() as u32).collect();
        self.step_threads.run(tokens.len(), || {
            let h = self.hidden(tokens, &counts, caches, &rows)?;
            self.head().next(&h, wants)
        })
    }

    fn pooled_hidden(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("pooling needs at least one token");
        }
        let mut cache = self.new_cache(tokens.len())?;
        self.step_threads.run_on_all(|| {
            let mut sum: Vec<f32> = Vec::new();
            for chunk in tokens.chunks(MAX_PREFILL_ROWS) {
                let rows: Vec<u32> = (0..chunk.len() as u32).collect();
                let h = self.hidden(chunk, &[chunk.len()], &mut [&mut cache], &rows)?;
                let width = h.len() / chunk.len();
                sum.resize(width, 0.0);
                for row in h.chunks_exact(width) {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
            }
            let n = tokens.len() as f32;
            Ok(sum.into_iter().map(|s| s / n).collect())
        })
    }
}

/// The prompt a chunk at a time, in chunks of equal size (519 tokens as 260 + 259, not
/// 512 + a slow 7). Only the rows returned go through the final norm and the lm_head.
fn prefill_chunks(model: &decoder::Decoder, tokens: &[u32], cache: &mut SeqCache, all_logits: bool) -> Result<Tensor> {
    let mut logits = Vec::new();
    let size = tokens.len().div_ceil(tokens.len().div_ceil(MAX_PREFILL_ROWS));
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
