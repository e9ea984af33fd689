//! `Authorization: Bearer <key>` when keys are configured.
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

tokio::task_local! {
    /// The prefix-cache scope of the request being handled: 1 + the index of
    /// its API key, 0 without keys. Set here, read where text requests are
    /// submitted, so one key's cached prompts never speed up another's.
    static CACHE_SCOPE: u64;
}

/// The current request's prefix-cache scope (0 outside a request).
pub fn cache_scope() -> u64 {
    CACHE_SCOPE.try_with(|s| *s).unwrap_or(0)
}

pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let given = bearer(header);
    match given {
        None => ApiError::missing_api_key().into_response(),
        // Every key is compared, so the time taken does not say which one matched.
        Some(key) => match state.api_keys.iter().enumerate().fold(None, |found, (i, k)| if same(k.as_bytes(), key.as_bytes()) { Some(i) } else { found }) {
            Some(i) => CACHE_SCOPE.scope(i as u64 + 1, next.run(request)).await,
            None => ApiError::incorrect_api_key(key).into_response(),
        },
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let key = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Comparison whose time does not depend on where the keys differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        assert_eq!(bearer("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer("bearer  sk-1 "), Some("sk-1"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(""), None);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
    }
}
