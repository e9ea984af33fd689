//! The text path of one request: `n` choices generated from one prepared prompt, each
//! turned from token ids into text (incremental detokenization, stop strings, finish
//! reasons) with its tokens' logprobs as text and bytes. The server only shapes these
//! events into its wire chunks.

use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::constraint::Constraint;
use super::prompt::PreparedPrompt;
use super::stop::StopMatcher;
use super::tokenizer::IncrementalDecoder;
use super::{EngineError, Event, FinishReason, GenerateRequest, SamplingParams, TextEngine};

/// What to generate from one prompt.
#[derive(Debug, Clone)]
pub struct TextRequest {
    pub prompt: PreparedPrompt,
    /// Choices generated from the prompt; choice i of a seeded request uses seed + i
    /// (reproducible, yet the choices differ).
    pub n: usize,
    /// Tokens each choice may generate (see `prompt::completion_budget`).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Strings that end a choice; the text stops right before them.
    pub stop: Vec<String>,
    /// Some(k): each token's logprob and the k most likely alternatives.
    pub logprobs: Option<usize>,
    /// Logprobs of the prompt's tokens too, sent first (completions `echo`).
    pub prompt_logprobs: bool,
    /// Some: every choice is held to this grammar (each gets its own copy) and
    /// ends when its output is complete.
    pub constraint: Option<Constraint>,
}

/// A token's text as OpenAI reports it (`bytes:\xe2\x80` for part of a character) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText {
    pub text: String,
    pub bytes: Vec<u8>,
}

impl TokenText {
    /// Bytes that are not text on their own (part of a multi-byte character).
    pub fn is_partial(&self) -> bool {
        std::str::from_utf8(&self.bytes).is_err()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Logprob {
    pub token: TokenText,
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first.
    pub top: Vec<(TokenText, f32)>,
}

/// A generated token and its logprob (when asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub id: u32,
    pub logprob: Option<Logprob>,
}

/// An echoed prompt token: its text, and its logprob (none for the first shown).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    pub token: TokenText,
    pub logprob: Option<Logprob>,
}

/// Text released by a choice.
#[derive(Debug, Clone, PartialEq)]
pub struct TextChunk {
    /// Possibly empty: text that could start a stop string is held back.
    pub text: String,
    /// The tokens whose logprobs go with `text`.
    pub tokens: Vec<GeneratedToken>,
    /// Tokens generated since the previous chunk (usage), shown or not.
    pub generated: usize,
    /// Set on the choice's last chunk.
    pub finish: Option<FinishReason>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// The prompt's tokens with their logprobs, first, when `prompt_logprobs` was asked.
    Prompt(Vec<PromptToken>),
    Text(TextChunk),
    /// The choice failed; no event follows.
    Failed(String),
}

/// One choice's events. Dropping it cancels the sequence in the scheduler.
pub struct TextStream {
    rx: Option<UnboundedReceiver<Event>>,
    /// Keeps the model loaded while the choice runs; gives token texts.
    engine: TextEngine,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// The prompt's ids, for the prompt logprobs event, and whether its first is a hidden BOS.
    prompt: Option<(Vec<u32>, bool)>,
    /// The prompt's logprobs are computed by the first choice only and shared:
    /// it sends them here, the other choices wait for them before anything else.
    shared_prompt: SharedPrompt,
}

/// Echoed prompt tokens, computed once for all of a prompt's choices.
type PromptShare = Option<Arc<Vec<PromptToken>>>;

enum SharedPrompt {
    None,
    Computes(watch::Sender<PromptShare>),
    Awaits(watch::Receiver<PromptShare>),
}

impl TextStream {
    /// The next event; None once the choice finished or failed.
    pub async fn next(&mut self) -> Option<TextEvent> {
        self.rx.as_ref()?;
        if let SharedPrompt::Awaits(shared) = &mut self.shared_prompt {
            let tokens = shared.wait_for(Option::is_some).await.ok().and_then(|t| t.clone());
            self.shared_prompt = SharedPrompt::None;
            return Some(match tokens {
                Some(tokens) => TextEvent::Prompt(tokens.as_ref().clone()),
                None => {
                    self.rx = None;
                    TextEvent::Failed("the choice scoring the prompt ended without its logprobs".into())
                }
            });
        }
        let rx = self.rx.as_mut()?;
        let (event, last) = match rx.recv().await {
            None => (TextEvent::Failed("the engine ended the sequence without finishing it".into()), true),
            Some(Event::PromptLogprobs(lps)) => {
                let tokens = self.prompt_tokens(&lps);
                if let SharedPrompt::Computes(share) = &self.shared_prompt {
                    share.send_replace(Some(Arc::new(tokens.clone())));
                }
                (TextEvent::Prompt(tokens), false)
            }
            Some(Event::Token { id, logprob }) => {
                let piece = self.decoder.push(id);
                let released = self.stops.push(&piece);
                let token = GeneratedToken { id, logprob: logprob.map(|lp| self.logprob(id, &lp)) };
                if released.stopped {
                    // The token that completed a stop string is counted; its logprob is
                    // shown only when it also released text.
                    let tokens = if released.text.is_empty() { vec![] } else { vec![token] };
                    let chunk = TextChunk { text: released.text, tokens, generated: 1, finish: Some(FinishReason::Stop) };
                    (TextEvent::Text(chunk), true)
                } else {
                    (TextEvent::Text(TextChunk { text: released.text, tokens: vec![token], generated: 1, finish: None }), false)
                }
            }
            Some(Event::Finished { reason }) => {
                let rest = self.decoder.finish();
                let released = self.stops.push(&rest);
                let mut text = released.text;
                let reason = if released.stopped {
                    FinishReason::Stop
                } else {
                    text.push_str(&self.stops.flush());
                    reason
                };
                (TextEvent::Text(TextChunk { text, tokens: vec![], generated: 0, finish: Some(reason) }), true)
            }
            Some(Event::Error(message)) => (TextEvent::Failed(message), true),
        };
        if last {
            // Drop the receiver now: the scheduler frees the sequence.
            self.rx = None;
        }
        Some(event)
    }

    fn token(&self, id: u32) -> TokenText {
        let tokenizer = self.engine.tokenizer();
        TokenText { text: tokenizer.token_text(id), bytes: tokenizer.token_bytes(id).unwrap_or_default().to_vec() }
    }

    fn logprob(&self, id: u32, lp: &super::TokenLogprob) -> Logprob {
        Logprob { token: self.token(id), logprob: lp.logprob, top: lp.top.iter().map(|&(tid, l)| (self.token(tid), l)).collect() }
    }

    /// Shown prompt tokens (a hidden BOS left out) with their logprobs; the first shown has none.
    fn prompt_tokens(&self, lps: &[Option<super::TokenLogprob>]) -> Vec<PromptToken> {
        let Some((ids, hidden_bos)) = &self.prompt else { return vec![] };
        let skip = usize::from(*hidden_bos);
        ids.iter()
            .enumerate()
            .skip(skip)
            .map(|(k, &id)| {
                let lp = if k == skip { None } else { lps.get(k).and_then(Option::as_ref) };
                PromptToken { token: self.token(id), logprob: lp.map(|lp| self.logprob(id, lp)) }
            })
            .collect()
    }
}

/// Submits the request's `n` choices; on any refusal the ones submitted so far are
/// dropped (cancelled).
/// With `prompt_logprobs`, only the first choice scores the prompt (a full
/// prefill that keeps every row's logits); the others share its result.
pub(crate) fn generate(engine: &TextEngine, req: TextRequest, scope: u64) -> Result<Vec<TextStream>, EngineError> {
    let mut streams = Vec::with_capacity(req.n);
    let share = req.prompt_logprobs.then(|| watch::channel(None).0);
    for choice in 0..req.n {
        let scores_prompt = req.prompt_logprobs && choice == 0;
        let mut sampling = req.sampling.clone();
        sampling.seed = sampling.seed.map(|seed| seed.wrapping_add(choice as u64));
        let rx = engine.submit_scoped(
            GenerateRequest {
                prompt: req.prompt.ids.clone(),
                max_tokens: req.max_tokens,
                sampling,
                stop_tokens: vec![],
                logprobs: req.logprobs,
                prompt_logprobs: scores_prompt,
                constraint: req.constraint.clone(),
            },
            scope,
        )?;
        streams.push(TextStream {
            rx: Some(rx),
            decoder: engine.tokenizer().incremental(),
            engine: engine.clone(),
            stops: StopMatcher::new(req.stop.clone()),
            prompt: scores_prompt.then(|| (req.prompt.ids.clone(), req.prompt.hidden_bos)),
            shared_prompt: match &share {
                None => SharedPrompt::None,
                Some(tx) if scores_prompt => SharedPrompt::Computes(tx.clone()),
                Some(tx) => SharedPrompt::Awaits(tx.subscribe()),
            },
        });
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tokens() {
        assert!(!TokenText { text: "hé".into(), bytes: "hé".as_bytes().to_vec() }.is_partial());
        assert!(TokenText { text: "bytes:\\xe2\\x80".into(), bytes: vec![0xe2, 0x80] }.is_partial());
    }
}
