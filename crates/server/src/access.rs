//! The access layer, outermost around every route: gives each request its id
//! (`x-request-id`, the client's when it sent a usable one), and when the answer ends
//! (a stream's last byte, or the client hanging up) writes one access-log line and
//! records the request's metrics. The line holds who and what, never content: method,
//! path, status, model, key id and name, tokens, latency, request id.
use crate::auth::Caller;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What inner layers learn about a request (a request extension, filled by metering).
#[derive(Debug, Default)]
pub struct Facts {
    /// The model name the request asked for.
    pub model: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

pub type SharedFacts = Arc<Mutex<Facts>>;

/// Set on a response refused because an engine's queue was full (a 429 that is not a key's limit).
#[derive(Debug, Clone, Copy)]
pub struct EngineBusy;

pub async fn observe(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|id| usable_id(id)).map_or_else(new_id, str::to_string);
    let endpoint = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let facts = SharedFacts::default();
    request.extensions_mut().insert(facts.clone());
    let line = Line { method: request.method().to_string(), path: request.uri().path().to_string(), endpoint, request_id: request_id.clone() };
    let mut response = crate::metrics::arrived_at(arrived, next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let finish = Finish {
        state,
        line,
        facts,
        arrived,
        status: response.status().as_u16(),
        caller: response.extensions().get::<Caller>().cloned().unwrap_or_default(),
        busy: response.extensions().get::<EngineBusy>().is_some(),
    };
    let is_stream = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/event-stream"));
    if !is_stream {
        drop(finish);
        return response;
    }
    // A stream is done when its body is dropped: sent to the end, or its client gone.
    let (parts, body) = response.into_parts();
    let frames = body.into_data_stream().map(move |frame| {
        let _until_dropped = &finish;
        frame
    });
    Response::from_parts(parts, Body::from_stream(frames))
}

/// A client's id is kept if it is short printable ASCII (it is echoed and logged).
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `req_` and 32 hex digits, as OpenAI's ids look.
fn new_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

struct Line {
    method: String,
    path: String,
    /// The route's pattern (`/v1/files/{id}`), a bounded metric label.
    endpoint: String,
    request_id: String,
}

/// Logs and records a request when dropped.
struct Finish {
    state: Arc<AppState>,
    line: Line,
    facts: SharedFacts,
    arrived: Instant,
    status: u16,
    caller: Caller,
    busy: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.arrived.elapsed();
        let facts = std::mem::take(&mut *self.facts.lock().unwrap_or_else(|e| e.into_inner()));
        // Only names this server serves become labels (a client may send any string).
        let model = facts.model.filter(|m| self.state.serves(m)).unwrap_or_default();
        let metrics = &self.state.metrics;
        let status = self.status.to_string();
        metrics.requests.with_label_values(&[self.line.endpoint.as_str(), &model, &status]).inc();
        metrics.request_duration.with_label_values(&[self.line.endpoint.as_str(), &model]).observe(elapsed.as_secs_f64());
        if facts.prompt_tokens > 0 {
            metrics.prompt_tokens.with_label_values(&[self.line.endpoint.as_str(), &model]).inc_by(facts.prompt_tokens as u64);
        }
        if facts.completion_tokens > 0 {
            metrics.generation_tokens.with_label_values(&[self.line.endpoint.as_str(), &model]).inc_by(facts.completion_tokens as u64);
        }
        if self.busy {
            let runtime = self.state.catalog.resolve(&model, None, &self.state.today()).map(|r| r.entry.id.clone()).unwrap_or_default();
            metrics.queue_rejections.with_label_values(&[runtime.as_str()]).inc();
        }
        tracing::info!(
            target: "hearth::access",
            request_id = %self.line.request_id,
            method = %self.line.method,
            path = %self.line.path,
            status = self.status,
            model = %model,
            key_id = self.caller.key_id.as_deref().unwrap_or("-"),
            key_name = self.caller.key_name.as_deref().unwrap_or("-"),
            prompt_tokens = facts.prompt_tokens,
            completion_tokens = facts.completion_tokens,
            latency_ms = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(usable_id("abc-123_X"));
        assert!(!usable_id(""));
        assert!(!usable_id("has space"));
        assert!(!usable_id(&"x".repeat(129)));
        let id = new_id();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    }
}
