//! `POST /v1/chat/completions`.
use crate::error::ApiError;
use crate::generate::{self, ChoiceResult, Header};
use crate::logprobs::chat_token;
use crate::sse::{self, Chunker};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::chat::*;
use hearth_api::sse::frame;
use hearth_api::Usage;
use hearth_catalog::Endpoint;
use hearth_engine::text::{self as engine, completion_budget, GeneratedToken, Message, PromptToken, Role, TextChunk, TextRequest, ToolSpec};
use std::sync::Arc;

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = crate::body::json(&headers, body)?;
    let req = ChatCompletionRequest::parse(&body)?;
    let structure = crate::structured::requested(&body, &req)?;
    let target = state.text_target(&req.model, Endpoint::ChatCompletions)?;
    let constraint = crate::structured::constraint(&target.engine, structure).await?;
    let (messages, tools) = (engine_messages(&req), engine_tools(&req));
    let prompt = generate::prepare(&target.engine, move |e| e.prepare_chat(&messages, &tools)).await?;
    let max_tokens =
        completion_budget(target.context_window, prompt.ids.len(), req.max_tokens).map_err(|e| ApiError::context_exceeded(Endpoint::ChatCompletions, e))?;
    let prompt_tokens = prompt.ids.len();
    let request = TextRequest {
        prompt,
        n: req.n,
        max_tokens,
        sampling: generate::sampling(&req.sampling),
        stop: req.stop.clone(),
        logprobs: req.logprobs.then(|| req.top_logprobs.unwrap_or(0)),
        prompt_logprobs: false,
        constraint,
    };
    let choices = generate::start(&target, &state.metrics, vec![request])?;
    let header = Header::new(&target, "chatcmpl-");
    if req.stream {
        let calls = crate::tool_calls::CallStream::for_request(&req);
        let call_finish = crate::tool_calls::finish_reason(&req);
        let chunker = ChatChunker { header, n: req.n, include_usage: req.include_usage(), logprobs: req.logprobs, prompt_tokens, calls, call_finish };
        return Ok(sse::response(chunker, choices));
    }
    let results = generate::collect(choices).await?;
    Ok(Json(respond(&req, header, prompt_tokens, results)).into_response())
}

/// The wire messages as the engine's.
fn engine_messages(req: &ChatCompletionRequest) -> Vec<Message> {
    req.chat_messages()
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "assistant" => Role::Assistant,
                // A legacy function result is a tool result: templates know only the latter.
                "tool" | "function" => Role::Tool,
                _ => Role::User,
            };
            let mut message = Message::new(role, m.content);
            message.name = m.name;
            message.tool_call_id = m.tool_call_id;
            message.tool_calls =
                m.tool_calls.into_iter().map(|c| engine::ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments }).collect();
            message
        })
        .collect()
}

fn engine_tools(req: &ChatCompletionRequest) -> Vec<ToolSpec> {
    req.functions().into_iter().map(|f| ToolSpec { name: f.name, description: f.description, parameters: f.parameters, strict: f.strict }).collect()
}

fn logprobs(tokens: &[GeneratedToken]) -> ChatLogprobs {
    ChatLogprobs { content: tokens.iter().filter_map(|t| t.logprob.as_ref().map(chat_token)).collect() }
}

fn respond(req: &ChatCompletionRequest, header: Header, prompt_tokens: usize, results: Vec<ChoiceResult>) -> ChatCompletionResponse {
    let generated = results.iter().map(|r| r.generated).sum();
    let choices = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let logprobs = req.logprobs.then(|| logprobs(&r.tokens));
            let calls = if crate::tool_calls::parsed(req) { crate::tool_calls::parse(req, &r.text) } else { None };
            let (message, finish_reason) = match calls {
                Some((content, tool_calls, function_call)) => (
                    ResponseMessage { role: "assistant".into(), content: (!content.is_empty()).then_some(content), tool_calls, function_call },
                    crate::tool_calls::finish_reason(req).to_string(),
                ),
                None => (ResponseMessage { role: "assistant".into(), content: Some(r.text), tool_calls: None, function_call: None }, r.reason.to_string()),
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
    header: Header,
    n: usize,
    include_usage: bool,
    logprobs: bool,
    prompt_tokens: usize,
    /// Per choice, when tool calls are parsed: text inside `<tool_call>` becomes call deltas.
    calls: Option<Vec<crate::tool_calls::CallStream>>,
    /// The finish reason of a choice that made calls.
    call_finish: &'static str,
}

impl ChatChunker {
    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> String {
        frame(&self.payload(choices, usage))
    }

    fn payload(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.header.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            system_fingerprint: Some(self.header.system_fingerprint.clone()),
            choices,
            usage: self.include_usage.then_some(usage),
        }
    }

    fn delta(&self, index: usize, delta: Delta, logprobs: Option<ChatLogprobs>) -> String {
        self.chunk(vec![ChunkChoice { index, delta, logprobs, finish_reason: None }], None)
    }

    fn finish(&self, index: usize, reason: String) -> String {
        self.chunk(vec![ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: Some(reason) }], None)
    }

    /// A choice whose tool calls are parsed: its text as content or `delta.tool_calls` frames.
    fn call_frames(&mut self, index: usize, chunk: TextChunk) -> Vec<String> {
        let call_finish = self.call_finish;
        let Some(stream) = self.calls.as_mut().map(|calls| &mut calls[index]) else { return vec![] };
        let mut pieces = stream.push(&chunk.text);
        let finished = chunk.finish.map(|reason| {
            pieces.extend(stream.finish());
            if stream.called() {
                call_finish.to_string()
            } else {
                generate::finish_reason(reason).to_string()
            }
        });
        let mut frames: Vec<String> = pieces
            .into_iter()
            .map(|piece| match piece {
                crate::tool_calls::Piece::Content(text) => self.delta(index, Delta { content: Some(text), ..Delta::default() }, None),
                crate::tool_calls::Piece::Delta(fields) => {
                    // The call delta is OpenAI's JSON shape already: set it into the chunk as is.
                    let choice = ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: None };
                    let mut value = serde_json::to_value(self.payload(vec![choice], None)).unwrap_or_default();
                    if let (Some(delta), serde_json::Value::Object(fields)) = (value["choices"][0]["delta"].as_object_mut(), fields) {
                        delta.extend(fields);
                    }
                    frame(&value)
                }
            })
            .collect();
        frames.extend(finished.map(|reason| self.finish(index, reason)));
        frames
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

    fn prompt(&mut self, _index: usize, _tokens: Vec<PromptToken>) -> Vec<String> {
        vec![]
    }

    fn text(&mut self, index: usize, chunk: TextChunk) -> Vec<String> {
        if self.calls.is_some() {
            return self.call_frames(index, chunk);
        }
        let mut frames = Vec::new();
        // Text held back for a possible stop string sends nothing, unless its token's logprob is asked.
        if !chunk.text.is_empty() || !chunk.tokens.is_empty() && self.logprobs {
            let logprobs = self.logprobs.then(|| logprobs(&chunk.tokens));
            frames.push(self.delta(index, Delta { content: Some(chunk.text), ..Delta::default() }, logprobs));
        }
        if let Some(reason) = chunk.finish {
            frames.push(self.finish(index, generate::finish_reason(reason).into()));
        }
        frames
    }

    fn end(&mut self, generated: usize) -> Vec<String> {
        if !self.include_usage {
            return vec![];
        }
        vec![self.chunk(vec![], Some(Usage::new(self.prompt_tokens, generated)))]
    }
}
