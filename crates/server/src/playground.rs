//! The playground at `/`: one page, its script and its style, compiled into the
//! binary (no CDN, no build step). It calls the public API with the key the user
//! types, which stays in the browser's localStorage.
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("../playground/index.html");
const SCRIPT: &str = include_str!("../playground/app.js");
const STYLE: &str = include_str!("../playground/style.css");

/// Only our own files may run or load: no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'";

pub fn routes() -> Router<Arc<crate::state::AppState>> {
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], INDEX).into_response() }))
        .route("/playground/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response() }))
        .route("/playground/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response() }))
}
