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

tokio::task_local! {
    /// The prefix-cache scope of the request being handled: derived from its
    /// key's id, 0 without a key. Set here, read where text requests are
    /// submitted, so one key's cached prompts never speed up another's.
    static CACHE_SCOPE: u64;
}

/// The current request's prefix-cache scope (0 outside a request).
pub fn cache_scope() -> u64 {
    CACHE_SCOPE.try_with(|s| *s).unwrap_or(0)
}

/// Who sent the request (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The key's id (`key_…` for stored keys, `static_…` for configured ones);
    /// None without auth.
    pub key_id: Option<String>,
    /// A stored key's name (for the access log).
    pub key_name: Option<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub zero_retention: bool,
    pub admin: bool,
}

impl Caller {
    fn stored(key: ApiKey) -> Self {
        Self { key_id: Some(key.id), key_name: Some(key.name), rpm: key.rpm, tpm: key.tpm, zero_retention: key.zero_retention, admin: key.admin }
    }

    /// A configured key's id: a hash of it, so usage can name it without showing it.
    fn configured(key: &str) -> Self {
        let hash = hearth_store::secret_hash(key);
        Self { key_id: Some(format!("static_{}", &hash[..12])), ..Self::default() }
    }

    /// The prefix-cache scope of this caller's requests: 0 without a key,
    /// otherwise a hash of the key's id (never 0).
    fn cache_scope(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        self.key_id.as_ref().map_or(0, |id| {
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            h.finish().max(1)
        })
    }
}

pub async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let caller = match identify(&state, bearer(header)).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let scope = caller.cache_scope();
    request.extensions_mut().insert(caller.clone());
    let mut response = CACHE_SCOPE.scope(scope, next.run(request)).await;
    // For the access log, which runs outside this layer.
    response.extensions_mut().insert(caller);
    response
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
    // Every configured key is compared, so the time taken does not say which one matched.
    let configured = state.api_keys.iter().fold(None, |found, k| if same(k.as_bytes(), key.as_bytes()) { Some(k) } else { found });
    if let Some(k) = configured {
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
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
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
