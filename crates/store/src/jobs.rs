//! Background jobs (fine-tuning jobs, legacy fine-tunes, batches), their
//! events and checkpoints, and the models fine-tuning made. A job's OpenAI
//! object is stored whole as JSON text; the server owns its shape.
use crate::{now, random_hex, Store};
use anyhow::Result;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A job row: `body` is its OpenAI object as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// `fine_tuning`, `fine_tune` (legacy API) or `batch`.
    pub kind: String,
    pub status: String,
    pub body: String,
    pub created_at: i64,
    /// The API key id that created it; None on a server without keys.
    pub owner: Option<String>,
}

/// Which jobs a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobScope {
    /// Every job (admin keys).
    All,
    /// The jobs of one key (None: those made without a key).
    OwnedBy(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub id: String,
    pub job_id: String,
    pub level: String,
    pub message: String,
    /// JSON, when the event carries metrics.
    pub data: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: String,
    pub job_id: String,
    pub step: i64,
    pub body: String,
    pub created_at: i64,
}

/// A model a fine-tuning job wrote: served like its `base` (a catalog model id) from `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTunedModel {
    pub id: String,
    pub base: String,
    pub path: String,
    pub owned_by: String,
    pub job_id: String,
    pub created_at: i64,
}

/// `prefix` + creation time in microseconds (13 hex digits, so ids sort by
/// creation) + 12 random hex digits.
pub fn time_id(prefix: &str) -> String {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("{prefix}{micros:013x}{}", random_hex(6))
}

impl Job {
    pub fn new(id: String, kind: &str, status: &str, body: String) -> Self {
        Self { id, kind: kind.into(), status: status.into(), body, created_at: now(), owner: None }
    }

    pub fn owned_by(self, owner: Option<String>) -> Self {
        Self { owner, ..self }
    }

    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            status: row.try_get("status")?,
            body: row.try_get("body")?,
            created_at: row.try_get("created_at")?,
            owner: row.try_get("owner")?,
        })
    }
}

impl JobEvent {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            level: row.try_get("level")?,
            message: row.try_get("message")?,
            data: row.try_get("data")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Checkpoint {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            step: row.try_get("step")?,
            body: row.try_get("body")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl FineTunedModel {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            base: row.try_get("base")?,
            path: row.try_get("path")?,
            owned_by: row.try_get("owned_by")?,
            job_id: row.try_get("job_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Store {
    pub async fn insert_job(&self, job: &Job) -> Result<()> {
        sqlx::query("INSERT INTO jobs (id, kind, status, body, created_at, owner) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&job.id)
            .bind(&job.kind)
            .bind(&job.status)
            .bind(&job.body)
            .bind(job.created_at)
            .bind(&job.owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT id, kind, status, body, created_at, owner FROM jobs WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Replaces a job's status and object; false if there is no such job.
    pub async fn update_job(&self, id: &str, status: &str, body: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE jobs SET status = $1, body = $2 WHERE id = $3").bind(status).bind(body).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a job's status and object only while its status is still `expected`
    /// (a runner's write never undoes a cancel that came meanwhile); false otherwise.
    pub async fn update_job_if(&self, id: &str, expected: &str, status: &str, body: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE jobs SET status = $1, body = $2 WHERE id = $3 AND status = $4")
            .bind(status)
            .bind(body)
            .bind(id)
            .bind(expected)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` jobs of `kind` in `scope`, newest first, after the cursor `after` (a job id).
    pub async fn list_jobs(&self, kind: &str, scope: &JobScope, after: Option<&str>, limit: i64) -> Result<Vec<Job>> {
        // None: every owner. Key ids are never empty, so '' stands for "made without a key".
        let owner = match scope {
            JobScope::All => None,
            JobScope::OwnedBy(owner) => Some(owner.as_deref().unwrap_or("")),
        };
        let rows = sqlx::query(
            "SELECT id, kind, status, body, created_at, owner FROM jobs \
             WHERE kind = $1 AND ($2 IS NULL OR id < $2) AND ($4 IS NULL OR COALESCE(owner, '') = $4) ORDER BY id DESC LIMIT $3",
        )
        .bind(kind)
        .bind(after)
        .bind(limit)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Job::from_row).collect()
    }

    /// Every job of `kind` in one of `statuses`, oldest first (what a starting server resumes).
    pub async fn jobs_in(&self, kind: &str, statuses: &[&str]) -> Result<Vec<Job>> {
        let rows =
            sqlx::query("SELECT id, kind, status, body, created_at, owner FROM jobs WHERE kind = $1 ORDER BY id ASC").bind(kind).fetch_all(&self.pool).await?;
        let jobs = rows.iter().map(Job::from_row).collect::<Result<Vec<_>>>()?;
        Ok(jobs.into_iter().filter(|j| statuses.contains(&j.status.as_str())).collect())
    }

    pub async fn add_event(&self, job_id: &str, level: &str, message: &str, data: Option<&str>) -> Result<JobEvent> {
        let event = JobEvent {
            id: time_id("ftevent-"),
            job_id: job_id.into(),
            level: level.into(),
            message: message.into(),
            data: data.map(str::to_string),
            created_at: now(),
        };
        sqlx::query("INSERT INTO job_events (id, job_id, level, message, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&event.id)
            .bind(&event.job_id)
            .bind(&event.level)
            .bind(&event.message)
            .bind(&event.data)
            .bind(event.created_at)
            .execute(&self.pool)
            .await?;
        Ok(event)
    }

    /// A job's events, newest first, after the cursor `after` (an event id).
    pub async fn events(&self, job_id: &str, after: Option<&str>, limit: i64) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT id, job_id, level, message, data, created_at FROM job_events WHERE job_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobEvent::from_row).collect()
    }

    /// A job's events oldest first, those after `since` (an event id) only (for streaming).
    pub async fn events_since(&self, job_id: &str, since: Option<&str>) -> Result<Vec<JobEvent>> {
        let rows =
            sqlx::query("SELECT id, job_id, level, message, data, created_at FROM job_events WHERE job_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id ASC")
                .bind(job_id)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(JobEvent::from_row).collect()
    }

    pub async fn add_checkpoint(&self, job_id: &str, step: i64, body: &str) -> Result<Checkpoint> {
        let c = Checkpoint { id: time_id("ftckpt_"), job_id: job_id.into(), step, body: body.into(), created_at: now() };
        sqlx::query("INSERT INTO job_checkpoints (id, job_id, step, body, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&c.id)
            .bind(&c.job_id)
            .bind(c.step)
            .bind(&c.body)
            .bind(c.created_at)
            .execute(&self.pool)
            .await?;
        Ok(c)
    }

    /// A job's checkpoints, newest first, after the cursor `after`.
    pub async fn checkpoints(&self, job_id: &str, after: Option<&str>, limit: i64) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT id, job_id, step, body, created_at FROM job_checkpoints WHERE job_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Checkpoint::from_row).collect()
    }

    pub async fn insert_fine_tuned_model(&self, m: &FineTunedModel) -> Result<()> {
        sqlx::query("INSERT INTO fine_tuned_models (id, base, path, owned_by, job_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&m.id)
            .bind(&m.base)
            .bind(&m.path)
            .bind(&m.owned_by)
            .bind(&m.job_id)
            .bind(m.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn fine_tuned_models(&self) -> Result<Vec<FineTunedModel>> {
        let rows = sqlx::query("SELECT id, base, path, owned_by, job_id, created_at FROM fine_tuned_models ORDER BY created_at ASC, id ASC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(FineTunedModel::from_row).collect()
    }

    /// Deletes the record; false if there was none.
    pub async fn delete_fine_tuned_model(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM fine_tuned_models WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
