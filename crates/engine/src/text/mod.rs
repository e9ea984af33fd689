//! Text generation: GGUF models (llama, qwen2, gemma3) with a continuous-batching
//! scheduler. `TextEngine` is the only type the server needs.
//!
//! One request's path: `Message`s (or completion prompts) -> `TextEngine::prepare_*`
//! (template, encode, BOS, FIM: a `PreparedPrompt`) -> `completion_budget` against the
//! context window -> `TextEngine::generate` (a `TextRequest` with `n` choices) -> one
//! `TextStream` per choice, whose `TextEvent`s carry released text (stop strings and
//! incremental detokenization applied), token logprobs as text + bytes and the
//! `FinishReason`. Below that, `submit` takes one sequence's `GenerateRequest` to the
//! scheduler, which samples and sends token ids.
//!
//! The public items below are what the server uses;
//! the modules fill in their bodies.

pub mod constraint; // JSON Schema / tool-call grammars -> per-step token masks
mod generation; // TextRequest -> n TextStreams: ids to text, stop strings, logprobs as text
mod gguf; // opening GGUF files: header -> tokenizer + ModelInfo, then weights
mod message; // typed chat messages and tools, what templates render
mod model; // architectures: forward pass over a preallocated KV cache
mod prefix; // KV caches of recent prompts, reused by requests sharing their prefix
mod prompt; // messages / completion prompts -> token ids; context budget
mod sampling; // temperature/top_p/penalties/logit_bias/seeded RNG, logprobs
mod scheduler; // continuous batching loop on its own thread
mod stop; // stop strings found across token boundaries
mod template; // chat template rendering with minijinja
mod tokenizer; // GGUF metadata -> tokenizers::Tokenizer, incremental decoding

pub use generation::{GeneratedToken, Logprob, PromptToken, TextChunk, TextEvent, TextRequest, TextStream, TokenText};
pub use message::{ContentPart, Message, Role, ToolCall, ToolSpec};
pub use prompt::{completion_budget, CompletionPrompt, ContextExceeded, PreparedPrompt, PromptError};

/// Loads a model's weights from an opened GGUF (used by `TextEngine::load` and the model tests).
pub use model::load as load_model;
/// A GGUF's hyperparameters as the engine reads them (the training graph is built from them too).
pub use model::{Arch, Hparams, RopeStyle, SlidingWindow};
pub use model::{Greedy, Model, Next, SeqCache, Want};
pub use tokenizer::{IncrementalDecoder, Tokenizer};

/// The tokenizer and facts of a GGUF model, read without loading its weights.
pub fn load_vocab(path: &Path) -> anyhow::Result<(ModelInfo, Tokenizer)> {
    gguf::read_vocab(path)
}

/// Renders chat `messages` (and `tools`) with the template in `info` (see `TextEngine::render_chat`).
pub fn render_chat(info: &ModelInfo, tokenizer: &Tokenizer, messages: &[Message], tools: &[ToolSpec]) -> anyhow::Result<String> {
    template::render(info, tokenizer, messages, tools)
}

use std::path::Path;

#[derive(Debug, Clone)]
pub struct TextEngineConfig {
    /// Most sequences decoded together in one step.
    pub max_batch: usize,
    /// Requests waiting beyond the running batch; over this, `submit` answers `Overloaded`.
    pub queue_capacity: usize,
}

impl Default for TextEngineConfig {
    fn default() -> Self {
        Self { max_batch: 8, queue_capacity: 64 }
    }
}

/// A snapshot of a text engine's work (`TextEngine::stats`), for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextEngineStats {
    /// Sequences in the running batch (as of the scheduler's last step).
    pub running: usize,
    /// Requests waiting to join the batch.
    pub queued: usize,
    /// Bytes of KV cache held by the running sequences (positions × layers × keys and values, f16);
    /// prefix-cache entries kept for later requests are not counted.
    pub kv_cache_bytes: usize,
    /// Sequences that started from a cached prompt prefix, since load.
    pub prefix_hits: u64,
    /// Prompt tokens taken from the prefix cache instead of prefilled, since load.
    pub reused_prompt_tokens: u64,
    /// Prompts whose tokens' logprobs were computed (echo with logprobs), since
    /// load: once per prompt, however many choices or best_of candidates share it.
    pub prompt_logprob_passes: u64,
}

/// Facts about a loaded model, read from its GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub arch: String,
    pub name: String,
    /// Training context length from the GGUF.
    pub context_length: usize,
    pub vocab_size: usize,
    pub bos: Option<u32>,
    /// Every token that ends generation (eos, eot, <|im_end|>, <end_of_turn>...).
    pub stop_tokens: Vec<u32>,
    /// Fill-in-the-middle tokens, when the vocabulary has them.
    pub fim: Option<FimTokens>,
    /// The chat template from `tokenizer.chat_template`, if any.
    pub chat_template: Option<String>,
    /// Whether the tokenizer adds BOS when encoding a prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FimTokens {
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
}

/// The defaults are OpenAI's; the server fills only what a request sets.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy (argmax), deterministic.
    pub temperature: f32,
    pub top_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Added to the logit of each token id before sampling (OpenAI: -100..100).
    pub logit_bias: Vec<(u32, f32)>,
    /// Same seed + same request => same output. None => random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, presence_penalty: 0.0, frequency_penalty: 0.0, logit_bias: vec![], seed: None }
    }
}

/// One sequence for the scheduler: prompt ids in, token ids out. A `constraint`
/// masks the logits right before sampling (a constrained row always takes the full
/// logits, never the greedy shortcut) and ends the sequence once its output is complete.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Extra token ids that end generation, besides `ModelInfo::stop_tokens`.
    pub stop_tokens: Vec<u32>,
    /// Some(k): report the chosen token's logprob and the k most likely alternatives.
    pub logprobs: Option<usize>,
    /// Report logprobs of the prompt tokens too (completions `echo` + `logprobs`).
    pub prompt_logprobs: bool,
    /// Some: the output is held to this grammar and ends when it is complete.
    pub constraint: Option<constraint::Constraint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// The k most likely tokens at this position, most likely first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (the stop token itself is not emitted as a Token event).
    Stop,
    /// `max_tokens` reached.
    Length,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Sent first, only when `prompt_logprobs`: one entry per prompt token (None for the first).
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    Token {
        id: u32,
        logprob: Option<TokenLogprob>,
    },
    Finished {
        reason: FinishReason,
    },
    Error(String),
}

/// Why [`TextEngine::constraint`] gave no constraint.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintFailure {
    /// The request's schema or tools: the client's to fix.
    #[error("{0}")]
    Spec(constraint::ConstraintError),
    /// This model's vocabulary could not be compiled.
    #[error("constrained decoding is unavailable for this model: {0}")]
    Vocabulary(String),
}

impl From<crate::admission::Overloaded> for EngineError {
    fn from(_: crate::admission::Overloaded) -> Self {
        Self::Overloaded
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the engine is at capacity; retry later")]
    Overloaded,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("engine failure: {0}")]
    Internal(String),
}

/// A loaded text model plus its scheduler thread. Cheap to clone.
#[derive(Clone)]
pub struct TextEngine {
    inner: std::sync::Arc<scheduler::EngineShared>,
    /// The vocabulary compiled for constrained decoding, on first use.
    grammars: std::sync::Arc<std::sync::OnceLock<Result<constraint::Grammars, String>>>,
}

impl TextEngine {
    /// Loads the GGUF at `path` and starts the scheduler thread.
    pub fn load(path: &Path, config: TextEngineConfig) -> anyhow::Result<Self> {
        let (info, tokenizer, model) = gguf::load(path)?;
        scheduler::start(info, tokenizer, model, config).map(|inner| Self { inner, grammars: Default::default() })
    }
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }
    /// Tokenizes text; special tokens written in the text (e.g. "<|im_start|>") map to their ids.
    /// `add_bos` adds BOS when the model wants it (`ModelInfo::add_bos`).
    pub fn encode(&self, text: &str, add_bos: bool) -> anyhow::Result<Vec<u32>> {
        self.inner.tokenizer.encode(text, add_bos)
    }
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner.tokenizer.decode(ids)
    }
    /// The text of one token as OpenAI reports it in logprobs.
    pub fn token_text(&self, id: u32) -> String {
        self.inner.tokenizer.token_text(id)
    }
    pub(crate) fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }
    /// Renders chat `messages` (and `tools`) with the model's template.
    pub fn render_chat(&self, messages: &[Message], tools: &[ToolSpec]) -> anyhow::Result<String> {
        template::render(&self.inner.info, &self.inner.tokenizer, messages, tools)
    }
    /// A chat's prompt: template, then tokens (CPU work: call it off async threads).
    pub fn prepare_chat(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<PreparedPrompt, PromptError> {
        prompt::chat(&self.inner.info, &self.inner.tokenizer, messages, tools)
    }
    /// Completion prompts (text or token ids), wrapped for fill-in-the-middle when a
    /// `suffix` is given; BOS added as the model wants it.
    pub fn prepare_completions(&self, prompts: Vec<CompletionPrompt>, suffix: Option<&str>) -> Result<Vec<PreparedPrompt>, PromptError> {
        prompt::completions(&self.inner.info, &self.inner.tokenizer, prompts, suffix)
    }
    /// Starts the request's choices; each stream's events are that choice's text.
    pub fn generate(&self, req: TextRequest) -> Result<Vec<TextStream>, EngineError> {
        generation::generate(self, req, 0)
    }
    /// As `generate`, reusing cached prompt prefixes only of requests of the same
    /// `scope` (the server's per-API-key scope).
    pub fn generate_scoped(&self, req: TextRequest, scope: u64) -> Result<Vec<TextStream>, EngineError> {
        generation::generate(self, req, scope)
    }
    /// Prompt tokens served from the prefix cache (not prefilled again) since load.
    pub fn reused_prompt_tokens(&self) -> u64 {
        scheduler::reused_prompt_tokens(&self.inner)
    }
    /// What the engine is doing now: running and queued sequences, KV memory, prefix-cache hits.
    pub fn stats(&self) -> TextEngineStats {
        scheduler::stats(&self.inner)
    }
    /// Most sequences running and waiting at once (`max_batch` + `queue_capacity`).
    pub fn capacity(&self) -> usize {
        scheduler::capacity(&self.inner)
    }
    /// Compiles `spec` over this model's vocabulary for one sequence (CPU work: the first
    /// call builds the vocabulary's tables).
    pub fn constraint(&self, spec: &constraint::ConstraintSpec) -> Result<constraint::Constraint, ConstraintFailure> {
        let grammars = self.grammars.get_or_init(|| constraint::Grammars::new(&self.inner.tokenizer).map_err(|e| format!("{e:#}")));
        match grammars {
            Ok(g) => g.compile(spec).map_err(ConstraintFailure::Spec),
            Err(e) => Err(ConstraintFailure::Vocabulary(e.clone())),
        }
    }
    /// Queues a request. Events arrive on the receiver; dropping it cancels the sequence.
    pub fn submit(&self, req: GenerateRequest) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>, EngineError> {
        scheduler::submit(&self.inner, req, 0)
    }
    /// As `submit`, reusing cached prompt prefixes only of requests of the same
    /// `scope` (the server's per-API-key scope).
    pub fn submit_scoped(&self, req: GenerateRequest, scope: u64) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>, EngineError> {
        scheduler::submit(&self.inner, req, scope)
    }
}
