//! What the listener serves while the models load: `/health` answers, `/ready` and
//! everything else are 503 until the API's router is set, then every request goes to it.
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

pub fn gate(app: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let app = app.clone();
        async move {
            let Some(router) = app.get() else { return Ok::<Response, Infallible>(loading(&request)) };
            router.clone().oneshot(request).await
        }
    }))
}

fn loading(request: &Request) -> Response {
    match request.uri().path() {
        "/health" => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        "/ready" => crate::health::unavailable("loading models"),
        _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "hearth is loading its models; retry shortly.", crate::error::SERVER_ERROR, None, None)
            .into_response(),
    }
}
