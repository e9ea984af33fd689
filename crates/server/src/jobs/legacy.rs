//! The 2023 API's `/v1/fine-tunes`: prompt/completion fine-tunes of the
//! davinci/curie/babbage/ada family, run by the same runner as current jobs.
use super::fine_tuning::{cancel_job, load, CreateRequest};
use super::spec::{self, FtJob, LEGACY};
use super::{caller, internal, platform, scope, CallerExt, ORG};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::sse::done_frame;
use hearth_store::JobEvent;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often a streamed events request looks for new events.
const STREAM_POLL: Duration = Duration::from_millis(250);

/// Legacy statuses: `pending` until training starts.
fn status(job: &FtJob) -> &str {
    match job.status.as_str() {
        "validating_files" | "queued" => "pending",
        other => other,
    }
}

fn event_object(e: &JobEvent) -> Value {
    json!({"object": "fine-tune-event", "created_at": e.created_at, "level": e.level, "message": e.message})
}

async fn files(state: &AppState, ids: &[String]) -> Result<Vec<Value>, ApiError> {
    let store = &platform(state)?.store;
    let mut out = Vec::new();
    for id in ids {
        if let Some(f) = store.file(id).await.map_err(internal)? {
            out.push(crate::files::object(&f));
        }
    }
    Ok(out)
}

async fn object(state: &AppState, job: &FtJob, with_events: bool) -> Result<Value, ApiError> {
    let mut value = json!({
        "id": job.id,
        "object": "fine-tune",
        "model": job.asked.model,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": ORG,
        "status": status(job),
        "hyperparams": {
            "n_epochs": job.asked.hyper.n_epochs.unwrap_or(4),
            "batch_size": job.asked.hyper.batch_size,
            "learning_rate_multiplier": job.asked.hyper.learning_rate_multiplier,
            "prompt_loss_weight": 0.01,
        },
        "training_files": files(state, std::slice::from_ref(&job.asked.training_file)).await?,
        "validation_files": files(state, job.asked.validation_file.as_slice()).await?,
        "result_files": files(state, &job.result_files).await?,
    });
    if with_events {
        let events = platform(state)?.store.events_since(&job.id, None).await.map_err(internal)?;
        value["events"] = json!(events.iter().map(event_object).collect::<Vec<_>>());
    }
    Ok(value)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = CreateRequest::read(&state, &headers, body, Some("curie"))?;
    let mut hyper = spec::hyper(&request.body, "")?;
    // The legacy API's default was 4 epochs, not "auto".
    hyper.n_epochs.get_or_insert(4);
    let suffix = spec::suffix(request.body.get("suffix"), 40)?;
    let job = request.submit(&state, who, true, hyper, suffix, rand::random::<u32>() as i64).await?;
    Ok(Json(object(&state, &job, true).await?))
}

pub async fn list(State(state): State<Arc<AppState>>, who: CallerExt) -> Result<Json<Value>, ApiError> {
    let jobs = platform(&state)?.store.list_jobs(LEGACY, &scope(&caller(who)), None, 10_000).await.map_err(internal)?;
    let mut data = Vec::new();
    // Oldest first, as the 2023 API listed them.
    for j in jobs.iter().rev() {
        let job: FtJob = serde_json::from_str(&j.body).map_err(internal)?;
        data.push(object(&state, &job, false).await?);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let job = load(&state, &caller(who), &id, LEGACY).await?;
    Ok(Json(object(&state, &job, true).await?))
}

pub async fn cancel(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let job = cancel_job(&state, &caller(who), &id, LEGACY).await?;
    Ok(Json(object(&state, &job, true).await?))
}

#[derive(Deserialize)]
pub struct EventParams {
    stream: Option<String>,
}

/// The job's events; with `stream=true`, as server-sent events that follow the
/// job until it finishes, then `[DONE]`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    Path(id): Path<String>,
    Query(params): Query<EventParams>,
) -> Result<Response, ApiError> {
    let caller = caller(who);
    load(&state, &caller, &id, LEGACY).await?;
    let store = platform(&state)?.store.clone();
    if params.stream.as_deref() != Some("true") {
        let events = store.events_since(&id, None).await.map_err(internal)?;
        return Ok(Json(json!({"object": "list", "data": events.iter().map(event_object).collect::<Vec<_>>()})).into_response());
    }
    struct Follow {
        state: Arc<AppState>,
        caller: crate::auth::Caller,
        id: String,
        last: Option<String>,
        done: bool,
    }
    let follow = Follow { state, caller, id, last: None, done: false };
    let frames = futures::stream::unfold(follow, move |mut f| {
        let store = store.clone();
        async move {
            if f.done {
                return None;
            }
            loop {
                // Finished is read before the events, so the events a job wrote before finishing are all sent.
                let finished = match load(&f.state, &f.caller, &f.id, LEGACY).await {
                    Ok(job) => spec::FINISHED.contains(&job.status.as_str()),
                    Err(_) => true,
                };
                let events = store.events_since(&f.id, f.last.as_deref()).await.unwrap_or_default();
                if let Some(last) = events.last() {
                    f.last = Some(last.id.clone());
                    let text: String = events.iter().map(|e| format!("data: {}\n\n", event_object(e))).collect();
                    return Some((Ok::<_, Infallible>(text), f));
                }
                if finished {
                    f.done = true;
                    return Some((Ok(done_frame()), f));
                }
                tokio::time::sleep(STREAM_POLL).await;
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(frames)).into_response())
}
