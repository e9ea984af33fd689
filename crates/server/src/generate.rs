//! From engine events to the text of a choice: incremental decoding, stop
//! strings, finish reasons. One stream per choice; ending (or dropping) the
//! stream drops the engine receiver, which cancels the sequence.
use crate::error::ApiError;
use futures::stream::{self, BoxStream, StreamExt};
use hearth_engine::text::{Event, FinishReason, GenerateRequest, IncrementalDecoder, TextEngine, TokenLogprob};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::stop::StopMatcher;

/// A generated token with its logprob (when asked for).
#[derive(Debug, Clone)]
pub struct GenToken {
    pub id: u32,
    pub logprob: Option<TokenLogprob>,
}

#[derive(Debug)]
pub enum Step {
    /// Logprobs of the prompt tokens (completions `echo` + `logprobs`).
    Prompt(Vec<Option<TokenLogprob>>),
    /// One token and the text it released (often the token's text; empty while held back).
    Text { text: String, token: GenToken },
    /// The end: the last text, and the token that hit a stop string (counted in usage;
    /// `bool`: whether it contributed text, so its logprob is shown).
    Done { text: String, last: Option<(GenToken, bool)>, reason: &'static str },
    Failed(String),
}

pub type ChoiceStream = BoxStream<'static, (usize, Step)>;

struct Running {
    rx: UnboundedReceiver<Event>,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
}

/// The steps of one choice; the stream ends after `Done` or `Failed`.
pub fn choice_stream(index: usize, rx: UnboundedReceiver<Event>, decoder: IncrementalDecoder, stops: Vec<String>) -> ChoiceStream {
    let running = Running { rx, decoder, stops: StopMatcher::new(stops) };
    stream::unfold(Some(running), move |state| async move {
        let mut run = state?;
        let (step, last) = match run.rx.recv().await {
            None => (Step::Failed("the engine ended the sequence without finishing it".into()), true),
            Some(Event::PromptLogprobs(lps)) => (Step::Prompt(lps), false),
            Some(Event::Token { id, logprob }) => {
                let piece = run.decoder.push(id);
                let released = run.stops.push(&piece);
                let token = GenToken { id, logprob };
                if released.stopped {
                    let shown = !released.text.is_empty();
                    (Step::Done { text: released.text, last: Some((token, shown)), reason: "stop" }, true)
                } else {
                    (Step::Text { text: released.text, token }, false)
                }
            }
            Some(Event::Finished { reason }) => {
                let rest = run.decoder.finish();
                let released = run.stops.push(&rest);
                let mut text = released.text;
                let reason = if released.stopped {
                    "stop"
                } else {
                    text.push_str(&run.stops.flush());
                    match reason {
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                    }
                };
                (Step::Done { text, last: None, reason }, true)
            }
            Some(Event::Error(message)) => (Step::Failed(message), true),
        };
        // Returning None as the next state drops the receiver now: the engine frees the sequence.
        Some(((index, step), if last { None } else { Some(run) }))
    })
    .boxed()
}

/// Submits every request; on any refusal the streams made so far are dropped (cancelled).
pub fn submit_all(engine: &TextEngine, requests: Vec<GenerateRequest>, stops: &[String]) -> Result<Vec<ChoiceStream>, ApiError> {
    if requests.len() > engine.capacity() {
        return Err(ApiError::beyond_capacity(requests.len(), engine.capacity()));
    }
    let mut streams = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let rx = engine.submit_scoped(request, crate::auth::cache_scope())?;
        streams.push(choice_stream(index, rx, engine.decoder(), stops.to_vec()));
    }
    Ok(streams)
}

/// Everything one choice produced, for non-streaming answers.
#[derive(Debug, Default)]
pub struct ChoiceResult {
    pub text: String,
    /// Tokens whose text is in `text` (for logprobs).
    pub tokens: Vec<GenToken>,
    /// Every token generated (usage).
    pub generated: usize,
    pub reason: &'static str,
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
}

/// Runs the choices to the end. A failure of any choice fails the whole request.
pub async fn collect(streams: Vec<ChoiceStream>) -> Result<Vec<ChoiceResult>, String> {
    let mut results: Vec<ChoiceResult> = (0..streams.len()).map(|_| ChoiceResult::default()).collect();
    let mut merged = stream::select_all(streams);
    while let Some((index, step)) = merged.next().await {
        let Some(result) = results.get_mut(index) else { continue };
        match step {
            Step::Prompt(lps) => result.prompt_logprobs = Some(lps),
            Step::Text { text, token } => {
                result.text.push_str(&text);
                result.tokens.push(token);
                result.generated += 1;
            }
            Step::Done { text, last, reason } => {
                result.text.push_str(&text);
                if let Some((token, shown)) = last {
                    result.generated += 1;
                    if shown {
                        result.tokens.push(token);
                    }
                }
                result.reason = reason;
            }
            Step::Failed(message) => return Err(message),
        }
    }
    Ok(results)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `chatcmpl-…` / `cmpl-…` ids: a prefix and 29 random alphanumerics, as OpenAI's.
pub fn random_id(prefix: &str) -> String {
    use rand::Rng;
    let tail: String = rand::rng().sample_iter(&rand::distr::Alphanumeric).take(29).map(char::from).collect();
    format!("{prefix}{tail}")
}
