//! `Authorization: Bearer <key>`: static keys (flags, environment, file) and
//! keys of the store, looked up on every request so that a revoked key fails
//! at once on every replica. The request carries the resulting [`Caller`].
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_store::ApiKey;
use std::sync::Arc;

/// Who sent the request (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The key's id (`key_…` for stored keys, `static_…` for configured ones);
    /// None without auth.
    pub key_id: Option<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub zero_retention: bool,
    pub admin: bool,
}

impl Caller {
    fn stored(key: ApiKey) -> Self {
        Self { key_id: Some(key.id), rpm: key.rpm, tpm: key.tpm, zero_retention: key.zero_retention, admin: key.admin }
    }

    /// A configured key's id: a hash of it, so usage can name it without showing it.
    fn configured(key: &str) -> Self {
        let hash = hearth_store::secret_hash(key);
        Self { key_id: Some(format!("static_{}", &hash[..12])), ..Self::default() }
    }
}

pub async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let caller = match identify(&state, bearer(header)).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

async fn identify(state: &AppState, given: Option<&str>) -> Result<Caller, ApiError> {
    let store = state.platform.as_ref().map(|p| &p.store);
    // Without configured keys, requests need one only once the store holds one.
    if state.api_keys.is_empty() {
        let stored_keys = match store {
            Some(store) => store.has_active_keys().await.map_err(ApiError::internal)?,
            None => false,
        };
        if !stored_keys {
            return Ok(Caller::default());
        }
    }
    let Some(key) = given else { return Err(ApiError::missing_api_key()) };
    if let Some(k) = state.api_keys.iter().find(|k| same(k.as_bytes(), key.as_bytes())) {
        return Ok(Caller::configured(k));
    }
    if let Some(store) = store {
        if let Some(found) = store.key_by_secret(key).await.map_err(ApiError::internal)? {
            return Ok(Caller::stored(found));
        }
    }
    Err(ApiError::incorrect_api_key(key))
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
