//! Requests and tokens per minute, per key, counted in the store (so every
//! replica sharing a PostgreSQL database enforces one limit). Every response
//! carries OpenAI's `x-ratelimit-*` headers; over a limit, 429.
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_store::Window;
use std::sync::Arc;

/// The key requests without auth are counted under.
pub const ANONYMOUS: &str = "anonymous";

/// The current one-minute window: its start, and seconds until it resets.
pub fn window() -> (i64, i64) {
    let now = hearth_store::now();
    let start = now - now.rem_euclid(60);
    (start, start + 60 - now)
}

pub async fn enforce(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(platform) = state.platform.clone() else { return next.run(request).await };
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or_default();
    let key = caller.key_id.clone().unwrap_or_else(|| ANONYMOUS.to_string());
    let rpm = caller.rpm.unwrap_or(platform.config.default_rpm);
    let tpm = caller.tpm.unwrap_or(platform.config.default_tpm);
    let (start, reset) = window();
    let counted = match platform.store.add_to_window(&key, start, 1, 0).await {
        Ok(w) => w,
        Err(e) => return ApiError::internal(format!("rate limit window: {e:#}")).into_response(),
    };
    let refusal = if counted.requests > rpm {
        Some(exceeded(&key, "requests per min (RPM)", "requests", rpm, counted.requests - 1, reset))
    } else if counted.tokens >= tpm {
        Some(exceeded(&key, "tokens per min (TPM)", "tokens", tpm, counted.tokens, reset))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        // A refused request is not counted against the minute.
        let shown = platform.store.add_to_window(&key, start, -1, 0).await.unwrap_or(counted);
        let mut response = refusal.into_response();
        set_headers(&mut response, rpm, tpm, shown, reset);
        return response;
    }
    let mut response = next.run(request).await;
    set_headers(&mut response, rpm, tpm, counted, reset);
    response
}

/// OpenAI's 429 wording, naming the key instead of an organization.
fn exceeded(key: &str, what: &str, kind: &str, limit: i64, used: i64, reset: i64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Rate limit reached for API key {key} on {what}: Limit {limit}, Used {used}, Requested 1. Please try again in {reset}s."),
        kind,
        None,
        Some("rate_limit_exceeded"),
    )
}

fn set_headers(response: &mut Response, rpm: i64, tpm: i64, w: Window, reset: i64) {
    let headers = response.headers_mut();
    let reset = format!("{reset}s");
    for (name, value) in [
        ("x-ratelimit-limit-requests", rpm.to_string()),
        ("x-ratelimit-remaining-requests", (rpm - w.requests).max(0).to_string()),
        ("x-ratelimit-reset-requests", reset.clone()),
        ("x-ratelimit-limit-tokens", tpm.to_string()),
        ("x-ratelimit-remaining-tokens", (tpm - w.tokens).max(0).to_string()),
        ("x-ratelimit-reset-tokens", reset),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}
