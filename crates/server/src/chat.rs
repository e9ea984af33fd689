//! `POST /v1/chat/completions`.
use crate::error::ApiError;
use crate::generate::{self, ChoiceResult, Step};
use crate::logprobs::chat_token;
use crate::sse::{self, Chunker};
use crate::state::{AppState, Target};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::chat::*;
use hearth_api::sse::frame;
use hearth_api::Usage;
use hearth_catalog::Endpoint;
use hearth_engine::text::{GenerateRequest, SamplingParams, TextEngine};
use serde_json::Value;
use std::sync::Arc;

pub async fn create(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = crate::body::json(body)?;
    let req = ChatCompletionRequest::parse(&body)?;
    let structure = crate::structured::requested(&body, &req)?;
    let target = state.target(&req.model, Endpoint::ChatCompletions)?;
    let constraint = crate::structured::constraint(&target.engine, structure).await?;
    let prompt = render_prompt(&target.engine, &req).await?;
    let max_tokens = completion_budget(target.context_window, prompt.len(), req.max_tokens)?;
    let requests = (0..req.n)
        .map(|i| GenerateRequest { constraint: constraint.clone(), ..generate_request(&req, &prompt, max_tokens, i) })
        .collect();
    let choices = generate::submit_all(&target.engine, requests, &req.stop)?;
    let header = ResponseHeader::new(&target);
    if req.stream {
        let chunker = ChatChunker {
            header,
            engine: target.engine.clone(),
            n: req.n,
            include_usage: req.include_usage(),
            logprobs: req.logprobs,
            prompt_tokens: prompt.len(),
            generated: 0,
            calls: crate::tool_stream::for_request(&req),
        };
        return Ok(sse::response(chunker, choices));
    }
    let results = generate::collect(choices).await.map_err(ApiError::internal)?;
    Ok(Json(respond(&req, &target.engine, header, prompt.len(), results)).into_response())
}

/// Template + tokenization (CPU work, off the async threads).
async fn render_prompt(engine: &TextEngine, req: &ChatCompletionRequest) -> Result<Vec<u32>, ApiError> {
    let engine = engine.clone();
    let messages = Value::Array(req.messages.clone());
    let tools = req.tools.clone();
    tokio::task::spawn_blocking(move || {
        let text = engine
            .render_chat(&messages, tools.as_ref())
            .map_err(|e| ApiError::invalid(format!("The messages could not be formatted for this model: {e}"), Some("messages")))?;
        let ids = engine.encode(&text, true).map_err(ApiError::internal)?;
        Ok(without_double_bos(ids, engine.info().bos))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Templates that write `{{ bos_token }}` plus a tokenizer that adds BOS would give two.
fn without_double_bos(mut ids: Vec<u32>, bos: Option<u32>) -> Vec<u32> {
    if let (Some(b), [first, second, ..]) = (bos, ids.as_slice()) {
        if *first == b && *second == b {
            ids.remove(0);
        }
    }
    ids
}

/// Tokens the completion may use: the asked maximum, or the rest of the window.
fn completion_budget(window: usize, prompt: usize, asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        Some(c) if prompt + c > window => Err(ApiError::context_exceeded_chat(window, prompt, Some(c))),
        Some(c) => Ok(c),
        None if prompt >= window => Err(ApiError::context_exceeded_chat(window, prompt, None)),
        None => Ok(window - prompt),
    }
}

fn generate_request(req: &ChatCompletionRequest, prompt: &[u32], max_tokens: usize, choice: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.to_vec(),
        max_tokens,
        sampling: sampling(&req.sampling, choice),
        stop_tokens: vec![],
        logprobs: req.logprobs.then(|| req.top_logprobs.unwrap_or(0)),
        prompt_logprobs: false,
        constraint: None,
    }
}

/// Engine sampling from the request; choice i of a seeded request uses seed + i
/// (reproducible, yet the n choices differ).
pub fn sampling(s: &hearth_api::common::Sampling, choice: usize) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature.unwrap_or(1.0),
        top_p: s.top_p.unwrap_or(1.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        logit_bias: s.logit_bias.clone(),
        seed: s.seed.map(|seed| (seed as u64).wrapping_add(choice as u64)),
    }
}

/// What every response and chunk repeats.
#[derive(Clone)]
pub struct ResponseHeader {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub system_fingerprint: String,
}

impl ResponseHeader {
    pub fn new(target: &Target) -> Self {
        Self {
            id: generate::random_id("chatcmpl-"),
            created: generate::now(),
            model: target.requested.clone(),
            system_fingerprint: target.system_fingerprint.clone(),
        }
    }
}

fn respond(req: &ChatCompletionRequest, engine: &TextEngine, header: ResponseHeader, prompt_tokens: usize, results: Vec<ChoiceResult>) -> ChatCompletionResponse {
    let generated = results.iter().map(|r| r.generated).sum();
    let choices = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let logprobs = req.logprobs.then(|| ChatLogprobs {
                content: r.tokens.iter().filter_map(|t| t.logprob.as_ref().map(|lp| chat_token(engine, t.id, lp))).collect(),
            });
            let calls = if req.tools.is_some() { crate::tools::parse(&r.text) } else { None };
            let (message, finish_reason) = match calls {
                Some((content, calls)) => (
                    ResponseMessage { role: "assistant".into(), content: (!content.is_empty()).then_some(content), tool_calls: Some(calls) },
                    "tool_calls".to_string(),
                ),
                None => (ResponseMessage { role: "assistant".into(), content: Some(r.text), tool_calls: None }, r.reason.to_string()),
            };
            ChatChoice { index, message, logprobs, finish_reason }
        })
        .collect();
    ChatCompletionResponse {
        id: header.id,
        object: "chat.completion".into(),
        created: header.created,
        model: header.model,
        system_fingerprint: Some(header.system_fingerprint),
        choices,
        usage: Usage::new(prompt_tokens, generated),
    }
}

struct ChatChunker {
    header: ResponseHeader,
    engine: TextEngine,
    n: usize,
    include_usage: bool,
    logprobs: bool,
    prompt_tokens: usize,
    generated: usize,
    /// Per choice, when tool calls are parsed: text inside `<tool_call>` becomes call deltas.
    calls: Option<Vec<crate::tool_stream::CallStream>>,
}

impl ChatChunker {
    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> String {
        frame(&ChatCompletionChunk {
            id: self.header.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            system_fingerprint: Some(self.header.system_fingerprint.clone()),
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }

    fn content(&self, index: usize, text: String, tokens: &[&crate::generate::GenToken]) -> String {
        let logprobs = self.logprobs.then(|| ChatLogprobs {
            content: tokens.iter().filter_map(|t| t.logprob.as_ref().map(|lp| chat_token(&self.engine, t.id, lp))).collect(),
        });
        let delta = Delta { content: Some(text), ..Delta::default() };
        self.chunk(vec![ChunkChoice { index, delta, logprobs, finish_reason: None }], None)
    }
}

impl ChatChunker {
    /// Frames of tool-call pieces (content, or `delta.tool_calls` entries).
    fn pieces(&self, index: usize, pieces: Vec<crate::tool_stream::Piece>) -> Vec<String> {
        pieces
            .into_iter()
            .map(|piece| match piece {
                crate::tool_stream::Piece::Content(text) => self.content(index, text, &[]),
                crate::tool_stream::Piece::Call(call) => {
                    let mut chunk = serde_json::to_value(ChatCompletionChunk {
                        id: self.header.id.clone(),
                        object: "chat.completion.chunk".into(),
                        created: self.header.created,
                        model: self.header.model.clone(),
                        system_fingerprint: Some(self.header.system_fingerprint.clone()),
                        choices: vec![ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: None }],
                        usage: self.include_usage.then_some(None),
                    })
                    .unwrap_or_default();
                    chunk["choices"][0]["delta"]["tool_calls"] = Value::Array(vec![call]);
                    frame(&chunk)
                }
            })
            .collect()
    }
}

impl Chunker for ChatChunker {
    fn start(&mut self) -> Vec<String> {
        (0..self.n)
            .map(|index| {
                let delta = Delta { role: Some("assistant".into()), content: Some(String::new()), tool_calls: None };
                self.chunk(vec![ChunkChoice { index, delta, logprobs: None, finish_reason: None }], None)
            })
            .collect()
    }

    fn step(&mut self, index: usize, step: Step) -> Vec<String> {
        match step {
            Step::Prompt(_) | Step::Failed(_) => vec![],
            Step::Text { text, token } => {
                self.generated += 1;
                if let Some(calls) = self.calls.as_mut() {
                    let pieces = calls[index].push(&text);
                    return self.pieces(index, pieces);
                }
                if text.is_empty() && !self.logprobs {
                    return vec![];
                }
                vec![self.content(index, text, &[&token])]
            }
            Step::Done { text, last, reason } => {
                let mut frames = Vec::new();
                if let Some(calls) = self.calls.as_mut() {
                    let mut pieces = calls[index].push(&text);
                    pieces.extend(calls[index].finish());
                    let called = calls[index].called();
                    frames = self.pieces(index, pieces);
                    self.generated += usize::from(last.is_some());
                    let reason = if called { "tool_calls".to_string() } else { reason.into() };
                    let finish = ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: Some(reason) };
                    frames.push(self.chunk(vec![finish], None));
                    return frames;
                }
                let shown: Vec<&crate::generate::GenToken> = last.iter().filter(|(_, shown)| *shown).map(|(t, _)| t).collect();
                if !text.is_empty() || !shown.is_empty() && self.logprobs {
                    frames.push(self.content(index, text, &shown));
                }
                if last.is_some() {
                    self.generated += 1;
                }
                let finish = ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: Some(reason.into()) };
                frames.push(self.chunk(vec![finish], None));
                frames
            }
        }
    }

    fn end(&mut self) -> Vec<String> {
        if !self.include_usage {
            return vec![];
        }
        vec![self.chunk(vec![], Some(Usage::new(self.prompt_tokens, self.generated)))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_context_errors() {
        assert_eq!(completion_budget(100, 10, None).unwrap(), 90);
        assert_eq!(completion_budget(100, 10, Some(90)).unwrap(), 90);
        let e = completion_budget(100, 10, Some(91)).unwrap_err();
        assert_eq!(e.body.error.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(
            e.body.error.message,
            "This model's maximum context length is 100 tokens. However, you requested 101 tokens (10 in the messages, 91 in the completion). Please reduce the length of the messages or completion."
        );
        assert_eq!(e.body.error.param.as_deref(), Some("messages"));
        assert!(completion_budget(100, 100, None).is_err());
    }

    #[test]
    fn double_bos_removed() {
        assert_eq!(without_double_bos(vec![2, 2, 5], Some(2)), vec![2, 5]);
        assert_eq!(without_double_bos(vec![2, 5], Some(2)), vec![2, 5]);
        assert_eq!(without_double_bos(vec![2, 2], None), vec![2, 2]);
    }
}
