//! Sentence embeddings: a BERT encoder (all-MiniLM-L6-v2; MPNet for all-mpnet-base-v2) read from safetensors,
//! mean pooling and L2 normalisation, behind a batching thread that packs the
//! inputs of concurrent requests into token-budget batches (as
//! text-embeddings-inference does). `EmbedEngine` is the only type callers need.
//!
//! A model directory holds `model.safetensors`, `tokenizer.json`, `config.json`
//! (the HF BERT or MPNet config) and optionally `sentence_bert_config.json`
//! (`max_seq_length`, the window the model was trained for).

mod batcher; // the queue, the batching thread, one-shot replies
mod bert; // weights and the forward pass over packed sequences
mod mpnet; // what MPNet does differently: tensor names, positions, relative position bias
mod ops; // row kernels: layer norm, GELU, attention, pooling

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// Most tokens (special tokens included) encoded in one forward pass.
    pub max_batch_tokens: usize,
    /// Most requests queued or running at once (the size of its `Admission`); over this,
    /// `embed` answers `Overloaded`. The server sets it from `--max-batch` + `--queue`.
    pub queue_capacity: usize,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self { max_batch_tokens: 8192, queue_capacity: 256 }
    }
}

impl From<crate::admission::Overloaded> for EmbedError {
    fn from(_: crate::admission::Overloaded) -> Self {
        Self::Overloaded
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding engine is at capacity; retry later")]
    Overloaded,
    #[error("{0}")]
    InvalidInput(String),
    #[error("embedding engine failure: {0}")]
    Internal(String),
}

/// A loaded embedding model plus its batching thread. Cheap to clone.
#[derive(Clone)]
pub struct EmbedEngine {
    inner: Arc<EmbedShared>,
}

struct EmbedShared {
    tokenizer: tokenizers::Tokenizer,
    /// `[CLS]` and `[SEP]` (MPNet: `<s>` and `</s>`), wrapped around every input.
    cls: u32,
    sep: u32,
    vocab_size: usize,
    /// The window, special tokens included.
    max_tokens: usize,
    dimensions: usize,
    queue: batcher::Handle,
}

impl EmbedEngine {
    /// Loads the model in `dir` and starts its batching thread.
    pub fn load(dir: &Path, config: EmbedConfig) -> anyhow::Result<Self> {
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.join("tokenizer.json").display()))?;
        // tokenizer.json ships truncation to 128 and fixed padding: we want the bare ids.
        tokenizer.with_truncation(None).map_err(|e| anyhow::anyhow!("disabling truncation: {e}"))?.with_padding(None);
        // The ids the tokenizer's post-processor frames a text with: [CLS] and [SEP] (BERT), <s> and </s> (MPNet).
        let frame = tokenizer.encode("", true).map_err(|e| anyhow::anyhow!("framing an empty text: {e}"))?;
        let &[cls, sep] = frame.get_ids() else { anyhow::bail!("the tokenizer frames a text with {:?}, not two special tokens", frame.get_ids()) };
        let model = bert::Bert::load(dir)?;
        let max_tokens = read_max_seq_length(dir)?.unwrap_or(model.max_positions()).min(model.max_positions());
        let (vocab_size, dimensions) = (model.vocab_size(), model.hidden_size());
        let queue = batcher::start(model, config)?;
        Ok(Self { inner: Arc::new(EmbedShared { tokenizer, cls, sep, vocab_size, max_tokens, dimensions, queue }) })
    }

    /// Token ids of `text`, without the special tokens the engine adds itself.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        match self.inner.tokenizer.encode(text, false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            Err(e) => {
                // WordPiece has an [UNK] for everything; this is not expected to happen.
                tracing::warn!("embedding tokenizer failed: {e}");
                Vec::new()
            }
        }
    }

    /// The model's window, the two special tokens included: an input may hold
    /// `max_tokens() - 2` ids.
    pub fn max_tokens(&self) -> usize {
        self.inner.max_tokens
    }

    /// Length of the vectors `embed` returns.
    pub fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    /// Embeds each input (token ids without special tokens, at most
    /// `max_tokens() - 2`); returns one L2-normalised vector per input, in order.
    pub async fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let limit = self.inner.max_tokens - 2;
        for (i, ids) in inputs.iter().enumerate() {
            if ids.len() > limit {
                return Err(EmbedError::InvalidInput(format!("input {i} has {} tokens; at most {limit} fit", ids.len())));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.inner.vocab_size) {
                return Err(EmbedError::InvalidInput(format!("input {i} holds token id {bad}, outside the vocabulary")));
            }
        }
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let framed = inputs
            .into_iter()
            .map(|ids| {
                let mut seq = Vec::with_capacity(ids.len() + 2);
                seq.push(self.inner.cls);
                seq.extend(ids);
                seq.push(self.inner.sep);
                seq
            })
            .collect();
        let reply = self.inner.queue.submit(framed)?;
        reply.await.map_err(|_| EmbedError::Internal("the batching thread stopped".into()))?
    }
}

/// `max_seq_length` from sentence-transformers' `sentence_bert_config.json`, if present.
fn read_max_seq_length(dir: &Path) -> anyhow::Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(value.get("max_seq_length").and_then(|v| v.as_u64()).map(|n| n as usize))
}
