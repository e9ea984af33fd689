//! Usage of every answered request (key, model, endpoint, tokens, audio
//! seconds), and the request log of text endpoints (inputs and outputs, kept
//! for the retention period). Handlers are not changed for this: token counts
//! are read from the `usage` their JSON or stream carries, audio seconds from
//! a response extension. Both are written before the answer is complete (the
//! JSON body, or the stream's `[DONE]`), so an answered request is recorded.
//! Audio and moderation inputs are never written: only their counts.
use crate::access::SharedFacts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::platform::Platform;
use crate::ratelimit::{self, ANONYMOUS};
use crate::state::AppState;
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hearth_store::{LoggedRequest, UsageRecord};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// Set by the audio handlers: what usage their JSON does not show.
#[derive(Debug, Clone)]
pub struct AudioUsage {
    pub model: String,
    pub seconds: f64,
}

/// Endpoints whose inputs and outputs the request log keeps.
const LOGGED: [&str; 4] = ["/v1/chat/completions", "/v1/completions", "/v1/edits", "/v1/embeddings"];
const METERED_JSON: [&str; 1] = ["/v1/moderations"];
const AUDIO: [&str; 2] = ["/v1/audio/transcriptions", "/v1/audio/translations"];
/// Image inputs and outputs are never written here: only that a request was answered.
const IMAGES: [&str; 3] = ["/v1/images/generations", "/v1/images/edits", "/v1/images/variations"];

pub async fn meter(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or_default();
    let facts = request.extensions().get::<SharedFacts>().cloned().unwrap_or_default();
    let meter = Meter { platform: state.platform.clone(), caller, endpoint: path.clone(), facts };
    if LOGGED.contains(&path.as_str()) {
        meter.text(request, next).await
    } else if METERED_JSON.contains(&path.as_str()) {
        let response = next.run(request).await;
        meter.json_response(response, None, None).await
    } else if AUDIO.contains(&path.as_str()) {
        let response = next.run(request).await;
        if let Some(audio) = response.extensions().get::<AudioUsage>().cloned() {
            meter.note(&audio.model, (0, 0));
            let usage = UsageRecord { audio_seconds: audio.seconds, ..meter.record(&audio.model, 0, 0) };
            if let Some(platform) = &meter.platform {
                if let Err(e) = platform.store.record_usage(&usage).await {
                    return ApiError::internal(format!("recording usage: {e:#}")).into_response();
                }
            }
        }
        response
    } else if IMAGES.contains(&path.as_str()) {
        let response = next.run(request).await;
        if let Some(images) = response.extensions().get::<crate::images::ImageUsage>().cloned() {
            meter.note(&images.model, (0, 0));
            if let Some(platform) = &meter.platform {
                if let Err(e) = platform.store.record_usage(&meter.record(&images.model, 0, 0)).await {
                    return ApiError::internal(format!("recording usage: {e:#}")).into_response();
                }
            }
        }
        response
    } else {
        next.run(request).await
    }
}

struct Meter {
    /// None: a stateless server, nothing is stored (the access log's facts are still noted).
    platform: Option<Arc<Platform>>,
    caller: Caller,
    endpoint: String,
    facts: SharedFacts,
}

impl Meter {
    fn record(&self, model: &str, prompt: i64, completion: i64) -> UsageRecord {
        UsageRecord { prompt_tokens: prompt, completion_tokens: completion, ..UsageRecord::now(self.caller.key_id.clone(), model, &self.endpoint) }
    }

    /// Keeps content only when neither the key nor the server is zero-retention.
    fn keeps_content(&self, platform: &Platform) -> bool {
        !self.caller.zero_retention && !platform.config.zero_retention
    }

    /// What the access log and metrics say of this request: its model and tokens.
    fn note(&self, model: &str, usage: (i64, i64)) {
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts.model = Some(model.to_string()).filter(|m| !m.is_empty());
        (facts.prompt_tokens, facts.completion_tokens) = usage;
    }

    /// Usage (and, for text endpoints, the log entry), then the tokens counted
    /// against the key's minute.
    async fn save(&self, model: &str, usage: (i64, i64), logged: Option<(&str, &str)>) -> anyhow::Result<()> {
        self.note(model, usage);
        let Some(platform) = &self.platform else { return Ok(()) };
        let store = &platform.store;
        store.record_usage(&self.record(model, usage.0, usage.1)).await?;
        if let Some((request, response)) = logged.filter(|_| self.keeps_content(platform)) {
            store
                .log_request(&LoggedRequest {
                    api_key_id: self.caller.key_id.clone(),
                    endpoint: self.endpoint.clone(),
                    model: model.to_string(),
                    request: request.to_string(),
                    response: response.to_string(),
                    created_at: hearth_store::now(),
                })
                .await?;
        }
        let key = self.caller.key_id.as_deref().unwrap_or(ANONYMOUS);
        store.add_to_window(key, ratelimit::window().0, 0, usage.0 + usage.1).await?;
        Ok(())
    }

    /// Chat, completions, embeddings: the request body is kept for the log;
    /// streams are asked for their usage chunk (which is removed again when
    /// the client did not ask for it).
    async fn text(self, request: Request, next: Next) -> Response {
        let (parts, body) = request.into_parts();
        let original = match to_bytes(body, crate::limits::BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => return ApiError::body_too_large(crate::limits::BODY_LIMIT).into_response(),
        };
        let parsed: Option<Value> = serde_json::from_slice(&original).ok();
        let model = parsed.as_ref().and_then(|v| v.get("model")).and_then(Value::as_str).unwrap_or("").to_string();
        // Failed requests keep their model in the access log too.
        self.note(&model, (0, 0));
        let mut forced = false;
        let mut forwarded = original.clone();
        // Edits have no stream: a `stream` field there is refused by the handler as sent.
        let streams = self.endpoint != "/v1/edits";
        if let Some(mut v) = parsed.filter(|v| streams && v.get("stream") == Some(&Value::Bool(true))) {
            let asked = v.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            if !asked {
                if let Some(obj) = v.as_object_mut() {
                    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
                    if let Some(options) = options.as_object_mut() {
                        options.insert("include_usage".into(), Value::Bool(true));
                        forced = true;
                        forwarded = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                    }
                }
            }
        }
        let response = next.run(Request::from_parts(parts, Body::from(forwarded))).await;
        let request_text = String::from_utf8_lossy(&original).into_owned();
        let is_stream = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/event-stream"));
        if is_stream && response.status().is_success() {
            self.stream(response, model, request_text, forced)
        } else {
            self.json_response(response, Some(model), Some(request_text)).await
        }
    }

    /// A JSON answer: its `usage` is recorded before it is sent.
    async fn json_response(self, response: Response, model: Option<String>, request_text: Option<String>) -> Response {
        if !response.status().is_success() {
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes = match to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => return ApiError::internal(format!("reading the response: {e}")).into_response(),
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let model = model.filter(|m| !m.is_empty()).or_else(|| value.get("model").and_then(Value::as_str).map(str::to_string));
        let usage = tokens(&value);
        let response_text = String::from_utf8_lossy(&bytes);
        let logged = request_text.as_deref().map(|r| (r, response_text.as_ref()));
        if let Err(e) = self.save(model.as_deref().unwrap_or(""), usage, logged).await {
            return ApiError::internal(format!("recording usage: {e:#}")).into_response();
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    /// A stream: frames pass through as they come; the usage chunk is read
    /// (and dropped if only we asked for it); usage and log are written
    /// before `[DONE]` is let through.
    fn stream(self, response: Response, model: String, request_text: String, forced: bool) -> Response {
        let (parts, body) = response.into_parts();
        let state = StreamMeter {
            meter: self,
            inner: body.into_data_stream(),
            model,
            request_text,
            forced,
            pending: Vec::new(),
            sent: String::new(),
            usage: (0, 0),
            out: VecDeque::new(),
            done: false,
        };
        let frames = futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(bytes) = s.out.pop_front() {
                    return Some((Ok::<Bytes, axum::Error>(bytes), s));
                }
                if s.done {
                    return None;
                }
                match s.inner.next().await {
                    Some(Ok(bytes)) => s.take(&bytes).await,
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    None => {
                        let rest = std::mem::take(&mut s.pending);
                        if !rest.is_empty() {
                            s.out.push_back(Bytes::from(rest));
                        }
                        s.done = true;
                    }
                }
            }
        });
        Response::from_parts(parts, Body::from_stream(frames))
    }
}

/// The usage of a request answered outside the HTTP layers (a batch's line), as
/// `meter` records the same request sent directly: the model the request named
/// (else the response's), the tokens of the response's `usage`; marked a batch's.
pub(crate) fn batch_usage_of(key_id: Option<String>, endpoint: &str, request: &Value, response: &Value) -> UsageRecord {
    let named = |v: &Value| v.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).map(str::to_string);
    let model = named(request).or_else(|| named(response)).unwrap_or_default();
    let (prompt_tokens, completion_tokens) = tokens(response);
    UsageRecord { prompt_tokens, completion_tokens, batch: true, ..UsageRecord::now(key_id, &model, endpoint) }
}

/// `(prompt, completion)` tokens from a response's `usage` (embeddings have no completion).
fn tokens(value: &Value) -> (i64, i64) {
    let usage = value.get("usage");
    let field = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_i64).unwrap_or(0);
    (field("prompt_tokens"), field("completion_tokens"))
}

struct StreamMeter {
    meter: Meter,
    inner: axum::body::BodyDataStream,
    model: String,
    request_text: String,
    /// We asked for the usage chunk; the client did not.
    forced: bool,
    /// Bytes of an event not yet complete.
    pending: Vec<u8>,
    /// What the client was sent (for the log).
    sent: String,
    usage: (i64, i64),
    out: VecDeque<Bytes>,
    done: bool,
}

impl StreamMeter {
    async fn take(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event).into_owned();
            if let Some(out) = self.event(text).await {
                self.sent.push_str(&out);
                self.out.push_back(Bytes::from(out));
            }
        }
    }

    /// The event to send in place of `text` (None: nothing).
    async fn event(&mut self, text: String) -> Option<String> {
        let Some(data) = text.strip_prefix("data: ").map(str::trim_end) else { return Some(text) };
        if data == "[DONE]" {
            let logged = Some((self.request_text.as_str(), self.sent.as_str()));
            if let Err(e) = self.meter.save(&self.model, self.usage, logged).await {
                // Without its record the answer is not complete: no [DONE].
                tracing::error!("recording usage of a stream: {e:#}");
                return None;
            }
            return Some(text);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data) else { return Some(text) };
        if value.get("usage").is_some_and(|u| !u.is_null()) {
            self.usage = tokens(&value);
            if self.forced && value.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                return None;
            }
        }
        if self.forced {
            if let Some(obj) = value.as_object_mut() {
                if obj.remove("usage").is_some() {
                    return Some(format!("data: {value}\n\n"));
                }
            }
        }
        Some(text)
    }
}
