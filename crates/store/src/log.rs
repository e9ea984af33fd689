//! The request log of text endpoints: inputs and outputs, kept for the
//! retention period, then purged.
use crate::{now, Store};
use anyhow::Result;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub api_key_id: Option<String>,
    pub endpoint: String,
    pub model: String,
    /// The request body as sent (JSON).
    pub request: String,
    /// The response as answered (JSON, or the stream's events).
    pub response: String,
    pub created_at: i64,
}

impl Store {
    pub async fn log_request(&self, r: &LoggedRequest) -> Result<()> {
        sqlx::query("INSERT INTO request_log (id, api_key_id, endpoint, model, request, response, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(&r.api_key_id)
            .bind(&r.endpoint)
            .bind(&r.model)
            .bind(&r.request)
            .bind(&r.response)
            .bind(r.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest `limit` log entries, newest first.
    pub async fn logged_requests(&self, limit: i64) -> Result<Vec<LoggedRequest>> {
        let rows = sqlx::query("SELECT api_key_id, endpoint, model, request, response, created_at FROM request_log ORDER BY created_at DESC, id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LoggedRequest {
                    api_key_id: r.try_get("api_key_id")?,
                    endpoint: r.try_get("endpoint")?,
                    model: r.try_get("model")?,
                    request: r.try_get("request")?,
                    response: r.try_get("response")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Deletes log entries older than `max_age_s`, and rate windows older than
    /// a few minutes (they only matter for the current minute); returns the
    /// log entries removed.
    pub async fn purge(&self, max_age_s: i64) -> Result<u64> {
        let now = now();
        let done = sqlx::query("DELETE FROM request_log WHERE created_at < $1").bind(now - max_age_s).execute(&self.pool).await?;
        sqlx::query("DELETE FROM rate_windows WHERE window_start < $1").bind(now - 600).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}
