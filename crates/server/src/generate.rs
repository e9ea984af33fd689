//! What chat and completions share: the wire request's sampling as the engine's, the
//! engine's choice streams merged and indexed, a whole answer collected, the header
//! every response and chunk repeats. The engine does the text work (templates, stop
//! strings, detokenization); this module only moves its events to the endpoints.
use crate::error::ApiError;
use crate::metrics::{Metrics, TokenClock};
use crate::state::TextTarget;
use futures::stream::{self, BoxStream, StreamExt};
use hearth_engine::text::{
    FinishReason, GeneratedToken, PreparedPrompt, PromptError, PromptToken, SamplingParams, TextEngine, TextEvent, TextRequest, TextStream,
};
use std::sync::Arc;

/// One choice's events with its index in the response.
pub type ChoiceStream = BoxStream<'static, (usize, TextEvent)>;

/// Engine sampling from the request's fields; what the request leaves out keeps the engine's default.
pub fn sampling(s: &hearth_api::common::Sampling) -> SamplingParams {
    let d = SamplingParams::default();
    SamplingParams {
        temperature: s.temperature.unwrap_or(d.temperature),
        top_p: s.top_p.unwrap_or(d.top_p),
        presence_penalty: s.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: s.frequency_penalty.unwrap_or(d.frequency_penalty),
        logit_bias: s.logit_bias.clone(),
        seed: s.seed.map(|seed| seed as u64),
    }
}

/// The wire name of a finish reason.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Prompt preparation (template, tokens: CPU work) off the async threads.
pub async fn prepare<T: Send + 'static>(engine: &TextEngine, work: impl FnOnce(&TextEngine) -> Result<T, PromptError> + Send + 'static) -> Result<T, ApiError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || work(&engine)).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

/// Starts every request's choices, numbered in order; on any refusal the streams made
/// so far are dropped (cancelled).
pub fn start(target: &TextTarget, metrics: &Arc<Metrics>, requests: Vec<TextRequest>) -> Result<Vec<ChoiceStream>, ApiError> {
    let engine = &target.engine;
    let sequences: usize = requests.iter().map(|r| r.n).sum();
    if sequences > engine.capacity() {
        return Err(ApiError::beyond_capacity(sequences, engine.capacity()));
    }
    let mut streams = Vec::new();
    for request in requests {
        streams.extend(engine.generate_scoped(request, crate::auth::cache_scope())?);
    }
    Ok(streams.into_iter().enumerate().map(|(index, s)| indexed(index, s, TokenClock::new(metrics.clone(), &target.model_id))).collect())
}

/// One choice's events, numbered, its tokens timed as they come.
fn indexed(index: usize, stream: TextStream, clock: TokenClock) -> ChoiceStream {
    stream::unfold((stream, clock), move |(mut s, mut clock)| async move {
        let event = s.next().await?;
        if let TextEvent::Text(chunk) = &event {
            clock.tokens(chunk.generated);
        }
        Some(((index, event), (s, clock)))
    })
    .boxed()
}

/// Everything one choice produced, for non-streaming answers.
#[derive(Debug, Default)]
pub struct ChoiceResult {
    pub text: String,
    /// Tokens whose text is in `text` (for logprobs).
    pub tokens: Vec<GeneratedToken>,
    /// Every token generated (usage).
    pub generated: usize,
    pub reason: &'static str,
    pub prompt_tokens: Option<Vec<PromptToken>>,
}

/// Runs the choices to the end. A failure of any choice fails the whole request.
pub async fn collect(streams: Vec<ChoiceStream>) -> Result<Vec<ChoiceResult>, ApiError> {
    let mut results: Vec<ChoiceResult> = (0..streams.len()).map(|_| ChoiceResult::default()).collect();
    let mut merged = stream::select_all(streams);
    while let Some((index, event)) = merged.next().await {
        let Some(result) = results.get_mut(index) else { continue };
        match event {
            TextEvent::Prompt(tokens) => result.prompt_tokens = Some(tokens),
            TextEvent::Text(chunk) => {
                result.text.push_str(&chunk.text);
                result.tokens.extend(chunk.tokens);
                result.generated += chunk.generated;
                if let Some(reason) = chunk.finish {
                    result.reason = finish_reason(reason);
                }
            }
            TextEvent::Failed(message) => return Err(ApiError::internal(message)),
        }
    }
    Ok(results)
}

/// What every response and chunk of one request repeats.
#[derive(Clone)]
pub struct Header {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub system_fingerprint: String,
}

impl Header {
    /// `id_prefix`: `chatcmpl-` or `cmpl-`.
    pub fn new(target: &TextTarget, id_prefix: &str) -> Self {
        Self { id: random_id(id_prefix), created: now(), model: target.requested.clone(), system_fingerprint: target.system_fingerprint.clone() }
    }
}

/// The prompts' tokens, for usage.
pub fn prompt_tokens(prompts: &[PreparedPrompt]) -> usize {
    prompts.iter().map(|p| p.ids.len()).sum()
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `chatcmpl-…` / `cmpl-…` ids: a prefix and 29 random alphanumerics, as OpenAI's.
pub fn random_id(prefix: &str) -> String {
    use rand::Rng;
    let tail: String = rand::rng().sample_iter(&rand::distr::Alphanumeric).take(29).map(char::from).collect();
    format!("{prefix}{tail}")
}
