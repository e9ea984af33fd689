//! The routes table and the layers around it (auth, rate limits, usage and
//! request log, body limit, panics, tracing, the access log), and the open routes
//! (health, metrics, the playground).
use crate::error::{ApiError, INVALID_REQUEST, SERVER_ERROR};
use crate::jobs::{batches, fine_tuning, legacy};
use crate::limits::{AUDIO_BODY_LIMIT, BODY_LIMIT, IMAGE_BODY_LIMIT};
use crate::state::AppState;
use crate::{
    access, audio, auth, chat, completions, edits, embeddings, files, health, images, metering, metrics, models, moderations, playground, priority, ratelimit,
    usage_api,
};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// The whole HTTP API as a router, for `serve` or for embedding/tests.
pub fn router(state: Arc<AppState>) -> Router {
    let file_limit = state.platform.as_ref().map_or(0, |p| p.config.max_file_bytes);
    // Probes, metrics and the playground's assets need no API key and are not metered.
    let open = Router::new()
        .route("/health", get(health::alive))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        // `url` image results: the unguessable id is the key (images.rs).
        .route("/v1/images/files/{name}", get(images::file))
        .merge(playground::routes());
    // Requests on these routes are interactive: background work waits for them (priority.rs).
    let interactive = Router::new()
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/edits", post(edits::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/moderations", post(moderations::create))
        .route("/v1/audio/transcriptions", post(audio::transcriptions).layer(DefaultBodyLimit::max(AUDIO_BODY_LIMIT)))
        .route("/v1/audio/translations", post(audio::translations).layer(DefaultBodyLimit::max(AUDIO_BODY_LIMIT)))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/images/edits", post(images::edits).layer(DefaultBodyLimit::max(IMAGE_BODY_LIMIT)))
        .route("/v1/images/variations", post(images::variations).layer(DefaultBodyLimit::max(IMAGE_BODY_LIMIT)))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), priority::track));
    Router::new()
        .merge(interactive)
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::retrieve).delete(models::delete))
        .route("/v1/fine_tuning/jobs", post(fine_tuning::create).get(fine_tuning::list))
        .route("/v1/fine_tuning/jobs/{id}", get(fine_tuning::retrieve))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(fine_tuning::cancel))
        .route("/v1/fine_tuning/jobs/{id}/events", get(fine_tuning::events))
        .route("/v1/fine_tuning/jobs/{id}/checkpoints", get(fine_tuning::checkpoints))
        .route("/v1/fine-tunes", post(legacy::create).get(legacy::list))
        .route("/v1/fine-tunes/{id}", get(legacy::retrieve))
        .route("/v1/fine-tunes/{id}/cancel", post(legacy::cancel))
        .route("/v1/fine-tunes/{id}/events", get(legacy::events))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/files", post(files::upload).get(files::list).layer(DefaultBodyLimit::max(file_limit + 1024 * 1024)))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/organization/usage/{kind}", get(usage_api::usage))
        .fallback(invalid_url)
        .method_not_allowed_fallback(invalid_method)
        // Outermost first: who is calling, then their rate limit, then metering.
        .layer(axum::middleware::from_fn_with_state(state.clone(), metering::meter))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::enforce))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key))
        .merge(open)
        .layer(axum::middleware::map_response(openai_error_body))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| ApiError::internal("a handler panicked").into_response()))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::observe))
        .with_state(state)
}

/// Any error answered in plain text (a rejection from an extractor or layer
/// that no handler mapped) is given OpenAI's error body, its text as the message.
async fn openai_error_body(response: Response) -> Response {
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_string() } else { text };
    let kind = if status.is_server_error() { SERVER_ERROR } else { INVALID_REQUEST };
    let mut shaped = ApiError::new(status, message, kind, None, None).into_response();
    // Keep what the original said besides its body (allow, retry-after, ...).
    for (name, value) in parts.headers.iter().filter(|(n, _)| *n != header::CONTENT_TYPE && *n != header::CONTENT_LENGTH) {
        shaped.headers_mut().insert(name.clone(), value.clone());
    }
    shaped
}

async fn invalid_url(request: Request) -> Response {
    ApiError::invalid_url(request.method().as_str(), request.uri().path()).into_response()
}

async fn invalid_method(request: Request) -> Response {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path()).into_response()
}
