//! Rate-limit counters: requests and tokens per key in fixed one-minute
//! windows, counted by the database so that every replica sees one count.
use crate::Store;
use anyhow::Result;
use sqlx::Row;

/// A key's counts in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub requests: i64,
    pub tokens: i64,
}

impl Store {
    /// Adds to the window starting at `window_start` and returns its new counts
    /// (one atomic upsert, so concurrent replicas never lose a count).
    pub async fn add_to_window(&self, api_key_id: &str, window_start: i64, requests: i64, tokens: i64) -> Result<Window> {
        let row = sqlx::query(
            "INSERT INTO rate_windows (api_key_id, window_start, requests, tokens) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key_id, window_start) DO UPDATE SET \
             requests = rate_windows.requests + excluded.requests, tokens = rate_windows.tokens + excluded.tokens \
             RETURNING requests, tokens",
        )
        .bind(api_key_id)
        .bind(window_start)
        .bind(requests)
        .bind(tokens)
        .fetch_one(&self.pool)
        .await?;
        Ok(Window { requests: row.try_get("requests")?, tokens: row.try_get("tokens")? })
    }
}
