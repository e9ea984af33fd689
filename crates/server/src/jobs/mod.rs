//! Background jobs on files: fine-tuning (current and legacy API) and batches.
//! Jobs live in the store, so they outlive the process: at start the runner
//! takes up every job that was not finished (see `runner`).
pub mod batches;
pub mod fine_tuning;
pub mod legacy;
pub mod runner;
mod spec;
mod trainer;

use crate::auth::Caller;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::platform::Platform;
use crate::state::AppState;
use axum::http::StatusCode;
use hearth_store::blobs::BlobStore;
use hearth_store::{FileRecord, Job, JobScope};
use std::sync::Arc;

/// The organization fine-tuned models are owned by and named after.
pub const ORG: &str = "user-hearth";

/// Who calls (the extension `auth` sets; absent only on routes without it).
pub type CallerExt = Option<axum::Extension<Caller>>;

pub fn caller(ext: CallerExt) -> Caller {
    ext.map(|axum::Extension(c)| c).unwrap_or_default()
}

/// A job belongs to the API key that created it: other keys are answered as if
/// it did not exist (OpenAI's 404 for an unknown id), admin keys see every job.
/// On a server without keys every caller is the same caller (no owner).
pub fn scope(caller: &Caller) -> JobScope {
    if caller.admin {
        JobScope::All
    } else {
        JobScope::OwnedBy(caller.key_id.clone())
    }
}

/// The job `id` of `kind`, when `caller` may see it.
pub async fn visible_job(state: &AppState, caller: &Caller, id: &str, kind: &str) -> Result<Option<Job>, ApiError> {
    let job = platform(state)?.store.job(id).await.map_err(internal)?;
    Ok(job.filter(|j| j.kind == kind && (caller.admin || j.owner == caller.key_id)))
}

pub fn platform(state: &AppState) -> Result<&Arc<Platform>, ApiError> {
    state.platform.as_ref().ok_or_else(|| ApiError::internal("this server was started without a store"))
}

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

/// A page size: `limit` given as text (query strings), default `default`, within 1..=`max`.
pub fn page_limit(limit: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!("Invalid 'limit': expected an integer between 1 and {max}, but got {text} instead."), Some("limit"))),
        },
    }
}

/// A list route's `after` and `limit` query parameters.
#[derive(serde::Deserialize)]
pub struct PageParams {
    after: Option<String>,
    limit: Option<String>,
}

impl PageParams {
    /// One page (`limit`: default `default`, at most `max`) from `fetch(after, n)`,
    /// asked for one row more than the page holds, which tells whether more follow:
    /// the rows and `has_more`.
    pub async fn fetch<'a, T, Fut>(&'a self, default: i64, max: i64, fetch: impl FnOnce(Option<&'a str>, i64) -> Fut) -> Result<(Vec<T>, bool), ApiError>
    where
        Fut: std::future::Future<Output = anyhow::Result<Vec<T>>>,
    {
        let limit = page_limit(self.limit.as_deref(), default, max)?;
        let mut rows = fetch(self.after.as_deref(), limit + 1).await.map_err(internal)?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, has_more))
    }
}

/// The file `id` (of `purpose`), as a request's `param` names it. Another
/// key's file is answered as a missing one.
pub async fn input_file(platform: &Platform, caller: &Caller, id: &str, purpose: &str, param: &str) -> Result<FileRecord, ApiError> {
    let file = crate::files::visible_file(platform, caller, id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such File object: {id}"), INVALID_REQUEST, Some(param), Some("file_not_found")))?;
    if file.purpose != purpose {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("File {id} has purpose '{}'; this needs a file uploaded with purpose '{purpose}'.", file.purpose),
            INVALID_REQUEST,
            Some(param),
            Some("invalid_file_purpose"),
        ));
    }
    Ok(file)
}

/// A file's bytes, read off the async workers.
pub async fn read_file(platform: &Arc<Platform>, id: &str) -> anyhow::Result<Vec<u8>> {
    let (blobs, id) = (platform.blobs.clone(), id.to_string());
    Ok(tokio::task::spawn_blocking(move || blobs.read(&id)).await??)
}

/// Writes `bytes` as a new file of `purpose` (outputs of jobs), in the files
/// API, owned by `owner` (the job's key).
pub async fn write_file(platform: &Arc<Platform>, owner: Option<String>, purpose: &str, filename: &str, bytes: Vec<u8>) -> anyhow::Result<FileRecord> {
    let id = FileRecord::new_id();
    let blobs: Arc<dyn BlobStore> = platform.blobs.clone();
    let committed = tokio::task::spawn_blocking({
        let id = id.clone();
        move || -> std::io::Result<_> {
            let mut writer = blobs.create()?;
            writer.write(&bytes)?;
            writer.commit(&id)
        }
    })
    .await??;
    let record = FileRecord::new(id, purpose, filename, committed.bytes, committed.sha256).owned_by(owner);
    platform.store.insert_file(&record).await?;
    Ok(record)
}

/// An API error met by background work, as an error of that work.
pub fn to_anyhow(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.body.error.message)
}
