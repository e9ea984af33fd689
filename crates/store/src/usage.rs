//! Usage per answered request: counts, never content.
use crate::{now, Store};
use anyhow::Result;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// None for requests without a key (a server with no keys).
    pub api_key_id: Option<String>,
    pub model: String,
    /// The request path, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub audio_seconds: f64,
    pub created_at: i64,
    /// A batch's request (not one sent directly).
    pub batch: bool,
}

impl UsageRecord {
    pub fn now(api_key_id: Option<String>, model: &str, endpoint: &str) -> Self {
        Self {
            api_key_id,
            model: model.to_string(),
            endpoint: endpoint.to_string(),
            prompt_tokens: 0,
            completion_tokens: 0,
            audio_seconds: 0.0,
            created_at: now(),
            batch: false,
        }
    }
}

/// Which usage to sum: `[start, end)` in buckets of `width` seconds.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub start: i64,
    pub end: i64,
    pub width: i64,
    /// Only these endpoints (request paths); empty = all.
    pub endpoints: Vec<String>,
}

/// Sums for one bucket, key, model, endpoint and batch flag.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageBucket {
    pub start: i64,
    pub api_key_id: Option<String>,
    pub model: String,
    pub endpoint: String,
    pub batch: bool,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub audio_seconds: f64,
}

impl Store {
    pub async fn record_usage(&self, u: &UsageRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO usage (id, api_key_id, model, endpoint, prompt_tokens, completion_tokens, audio_seconds, created_at, batch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(&u.api_key_id)
        .bind(&u.model)
        .bind(&u.endpoint)
        .bind(u.prompt_tokens)
        .bind(u.completion_tokens)
        .bind(u.audio_seconds)
        .bind(u.created_at)
        .bind(i64::from(u.batch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Usage summed per bucket, key, model, endpoint and batch flag, oldest bucket first.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageBucket>> {
        let width = q.width.max(1);
        let endpoints = if q.endpoints.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..q.endpoints.len()).map(|i| format!("${}", i + 4)).collect();
            format!(" AND endpoint IN ({})", marks.join(", "))
        };
        // The bucket is computed in SQL (integer division) so rows are summed
        // by the database, not fetched one by one.
        let sql = format!(
            "SELECT CAST($1 + ((created_at - $1) / $2) * $2 AS BIGINT) AS bucket, api_key_id, model, endpoint, batch, \
             CAST(COUNT(*) AS BIGINT) AS requests, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, CAST(SUM(audio_seconds) AS DOUBLE PRECISION) AS audio_seconds \
             FROM usage WHERE created_at >= $1 AND created_at < $3{endpoints} \
             GROUP BY bucket, api_key_id, model, endpoint, batch ORDER BY bucket, api_key_id, model, endpoint, batch"
        );
        let mut query = sqlx::query(&sql).bind(q.start).bind(width).bind(q.end);
        for e in &q.endpoints {
            query = query.bind(e);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageBucket {
                    start: r.try_get("bucket")?,
                    api_key_id: r.try_get("api_key_id")?,
                    model: r.try_get("model")?,
                    endpoint: r.try_get("endpoint")?,
                    batch: r.try_get::<i64, _>("batch")? != 0,
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    audio_seconds: r.try_get("audio_seconds")?,
                })
            })
            .collect()
    }
}
