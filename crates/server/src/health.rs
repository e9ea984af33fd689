//! `GET /health` (the process answers) and `GET /ready` (models loaded, store
//! reachable): no key needed, no model work. While models load, the listener answers
//! these from `loading` instead (see `serve`).
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long the store may take to answer the readiness query.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn alive() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.engines.is_empty() {
        return unavailable("no model is loaded");
    }
    if let Some(platform) = &state.platform {
        match tokio::time::timeout(STORE_TIMEOUT, platform.store.has_active_keys()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return unavailable(&format!("the store is unreachable: {e:#}")),
            Err(_) => return unavailable(&format!("the store did not answer within {} s", STORE_TIMEOUT.as_secs())),
        }
    }
    let mut models: Vec<&str> = state.engines.keys().map(String::as_str).collect();
    models.sort();
    Json(json!({"status": "ready", "models": models})).into_response()
}

/// 503 with the reason, as `/ready` says it.
pub fn unavailable(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": reason}))).into_response()
}
