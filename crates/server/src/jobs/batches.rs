//! `/v1/batches`: a `batch`-purpose JSONL of requests, run in-process through
//! the same handlers (and engines) as live requests, at low priority: each
//! request waits while interactive requests are in flight, and up to
//! `CONCURRENCY` run at once so that the engines batch them. Output and error
//! files are in OpenAI's line format, in the input's order.
use super::{caller, input_file, internal, platform, read_file, scope, visible_job, write_file, CallerExt, PageParams};
use crate::error::{ApiError, INVALID_REQUEST};
use crate::state::AppState;
use crate::{chat, completions, embeddings, moderations};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hearth_store::{now, time_id, Job};
use serde_json::{json, Value};
use std::sync::Arc;

pub const KIND: &str = "batch";
const ENDPOINTS: [&str; 4] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations"];
/// Requests of one batch in flight at once: enough for the text engine to batch them.
const CONCURRENCY: usize = 16;
/// A batch expires this long after creation (`completion_window` 24h).
const WINDOW_SECONDS: i64 = 24 * 3600;
/// Statuses after which nothing changes.
const DONE: [&str; 4] = ["completed", "failed", "cancelled", "expired"];

fn no_such_batch(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No batch found with id '{id}'."), INVALID_REQUEST, Some("batch_id"), None)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = crate::body::json(&headers, body)?;
    let platform = platform(&state)?.clone();
    let field = |name: &str| body.get(name).and_then(Value::as_str);
    let Some(file_id) = field("input_file_id") else { return Err(ApiError::invalid("Missing required parameter: 'input_file_id'.", Some("input_file_id"))) };
    let Some(endpoint) = field("endpoint") else { return Err(ApiError::invalid("Missing required parameter: 'endpoint'.", Some("endpoint"))) };
    if !ENDPOINTS.contains(&endpoint) {
        return Err(ApiError::invalid(
            format!("Invalid value: '{endpoint}'. Supported values are: '/v1/chat/completions', '/v1/completions', '/v1/embeddings' and '/v1/moderations'."),
            Some("endpoint"),
        ));
    }
    match field("completion_window") {
        Some("24h") => {}
        Some(other) => return Err(ApiError::invalid(format!("Invalid value: '{other}'. Supported values are: '24h'."), Some("completion_window"))),
        None => return Err(ApiError::invalid("Missing required parameter: 'completion_window'.", Some("completion_window"))),
    }
    let metadata = body.get("metadata").cloned().unwrap_or(Value::Null);
    if !(metadata.is_null() || metadata.is_object()) {
        return Err(ApiError::invalid("Invalid type for 'metadata': expected an object.", Some("metadata")));
    }
    let caller = caller(who);
    input_file(&platform, &caller, file_id, "batch", "input_file_id").await?;
    let created = now();
    let id = time_id("batch_");
    let batch = json!({
        "id": id, "object": "batch", "endpoint": endpoint, "errors": null, "input_file_id": file_id,
        "completion_window": "24h", "status": "validating", "output_file_id": null, "error_file_id": null,
        "created_at": created, "in_progress_at": null, "expires_at": created + WINDOW_SECONDS, "finalizing_at": null,
        "completed_at": null, "failed_at": null, "expired_at": null, "cancelling_at": null, "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata,
    });
    let row = Job::new(id.clone(), KIND, "validating", batch.to_string()).owned_by(caller.key_id);
    platform.store.insert_job(&row).await.map_err(internal)?;
    tokio::spawn(run(state.clone(), id));
    Ok(Json(batch))
}

async fn load(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let job = platform(state)?.store.job(id).await.map_err(internal)?.filter(|j| j.kind == KIND).ok_or_else(|| no_such_batch(id))?;
    serde_json::from_str(&job.body).map_err(internal)
}

/// The batch `id` when the caller may see it.
async fn load_for(state: &AppState, who: CallerExt, id: &str) -> Result<Value, ApiError> {
    let job = visible_job(state, &caller(who), id, KIND).await?.ok_or_else(|| no_such_batch(id))?;
    serde_json::from_str(&job.body).map_err(internal)
}

pub async fn retrieve(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(load_for(&state, who, &id).await?))
}

pub async fn list(State(state): State<Arc<AppState>>, who: CallerExt, Query(params): Query<PageParams>) -> Result<Json<Value>, ApiError> {
    let (store, scope) = (&platform(&state)?.store, scope(&caller(who)));
    let (jobs, has_more) = params.fetch(20, 100, |after, n| store.list_jobs(KIND, &scope, after, n)).await?;
    let data: Vec<Value> = jobs.iter().map(|j| serde_json::from_str(&j.body)).collect::<Result<_, _>>().map_err(internal)?;
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": jobs.first().map(|j| j.id.clone()),
        "last_id": jobs.last().map(|j| j.id.clone()),
        "has_more": has_more,
    })))
}

pub async fn cancel(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let store = &platform(&state)?.store;
    // Checked once: the owner of a job does not change.
    load_for(&state, who, &id).await?;
    loop {
        let mut batch = load(&state, &id).await?;
        let status = batch["status"].as_str().unwrap_or_default().to_string();
        if DONE.contains(&status.as_str()) || status == "cancelling" {
            return Err(ApiError::new(StatusCode::CONFLICT, format!("Cannot cancel a batch with status '{status}'."), INVALID_REQUEST, None, None));
        }
        batch["status"] = json!("cancelling");
        batch["cancelling_at"] = json!(now());
        // Conditional: the runner may have moved the batch on meanwhile; then look again.
        if store.update_job_if(&id, &status, "cancelling", &batch.to_string()).await.map_err(internal)? {
            return Ok(Json(batch));
        }
    }
}

/// Takes up every batch a previous process left unfinished: those running are
/// run again from their first request (their outputs had not been written),
/// those being cancelled are cancelled.
pub async fn resume(state: Arc<AppState>) -> anyhow::Result<()> {
    let Some(platform) = state.platform.clone() else { return Ok(()) };
    for job in platform.store.jobs_in(KIND, &["validating", "in_progress", "finalizing", "cancelling"]).await? {
        tracing::info!("batch {} was {} when the server stopped: taking it up again", job.id, job.status);
        if job.status == "cancelling" {
            let mut batch: Value = serde_json::from_str(&job.body)?;
            finish_cancelled(&mut batch);
            platform.store.update_job(&job.id, "cancelled", &batch.to_string()).await?;
        } else {
            tokio::spawn(run(state.clone(), job.id));
        }
    }
    Ok(())
}

fn finish_cancelled(batch: &mut Value) {
    batch["status"] = json!("cancelled");
    batch["cancelled_at"] = json!(now());
}

/// One request line, validated.
struct Line {
    custom_id: String,
    body: Value,
}

/// The batch's requests, or the errors that fail it (OpenAI's `errors.data`, naming lines).
fn parse_input(bytes: &[u8], endpoint: &str) -> Result<Vec<Line>, Vec<Value>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut error = |code: &str, message: String, param: Option<&str>, line: usize| {
        errors.push(json!({"code": code, "message": message, "param": param, "line": line}));
    };
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(raw) else {
            error("invalid_json_line", "This line is not parseable as valid JSON.".into(), None, n);
            continue;
        };
        let custom_id = value.get("custom_id").and_then(Value::as_str);
        let Some(custom_id) = custom_id else {
            error("missing_required_parameter", "Missing required parameter: 'custom_id'.".into(), Some("custom_id"), n);
            continue;
        };
        if value.get("method").and_then(Value::as_str) != Some("POST") {
            error("invalid_method", "The method must be 'POST'.".into(), Some("method"), n);
            continue;
        }
        let url = value.get("url").and_then(Value::as_str).unwrap_or_default();
        if url != endpoint {
            error("mismatched_endpoint", format!("The URL provided for this request does not match the batch endpoint '{endpoint}'."), Some("url"), n);
            continue;
        }
        let Some(body) = value.get("body").filter(|b| b.is_object()) else {
            error("missing_required_parameter", "Missing required parameter: 'body' (an object).".into(), Some("body"), n);
            continue;
        };
        if !seen.insert(custom_id.to_string()) {
            error("duplicate_custom_id", format!("The custom_id '{custom_id}' is used by more than one request."), Some("custom_id"), n);
            continue;
        }
        lines.push(Line { custom_id: custom_id.to_string(), body: body.clone() });
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(json!({"code": "empty_file", "message": "The input file has no requests.", "param": null, "line": null}));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// Runs a request through the handler that serves `endpoint`, in this process.
pub async fn dispatch(state: &Arc<AppState>, endpoint: &str, mut body: Value) -> (u16, Value) {
    // A batch answer is one JSON body: streaming is turned off.
    if let Some(obj) = body.as_object_mut() {
        obj.remove("stream");
        obj.remove("stream_options");
    }
    let bytes = Ok(Bytes::from(body.to_string()));
    let st = State(state.clone());
    let headers = axum::http::HeaderMap::new();
    let response: Response = match endpoint {
        "/v1/chat/completions" => chat::create(st, headers, bytes).await.into_response(),
        "/v1/completions" => completions::create(st, headers, bytes).await.into_response(),
        "/v1/embeddings" => embeddings::create(st, headers, bytes).await.into_response(),
        "/v1/moderations" => moderations::create(st, headers, bytes).await.into_response(),
        other => ApiError::invalid_url("POST", other).into_response(),
    };
    let status = response.status().as_u16();
    match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(b) => (status, serde_json::from_slice(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b)))),
        Err(e) => (500, json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": null}})),
    }
}

/// Saves the runner's view unless the batch was cancelled meanwhile; then
/// adopts the cancel and returns false.
async fn save(state: &AppState, batch: &mut Value, expected: &str) -> anyhow::Result<bool> {
    let store = &platform(state).map_err(super::to_anyhow)?.store;
    let id = batch["id"].as_str().unwrap_or_default().to_string();
    let status = batch["status"].as_str().unwrap_or_default().to_string();
    if store.update_job_if(&id, expected, &status, &batch.to_string()).await? {
        return Ok(true);
    }
    if let Some(current) = store.job(&id).await? {
        let stored: Value = serde_json::from_str(&current.body)?;
        batch["status"] = stored["status"].clone();
        batch["cancelling_at"] = stored["cancelling_at"].clone();
    }
    Ok(false)
}

async fn is_cancelling(state: &AppState, id: &str) -> bool {
    match state.platform.as_ref() {
        Some(p) => matches!(p.store.job(id).await, Ok(Some(j)) if j.status == "cancelling"),
        None => false,
    }
}

async fn run(state: Arc<AppState>, id: String) {
    if let Err(e) = run_inner(&state, &id).await {
        tracing::error!("batch {id}: {e:#}");
        if let Ok(mut batch) = load(&state, &id).await {
            let status = batch["status"].as_str().unwrap_or_default().to_string();
            batch["status"] = json!("failed");
            batch["failed_at"] = json!(now());
            batch["errors"] = json!({"object": "list", "data": [{"code": "server_error", "message": format!("{e:#}"), "param": null, "line": null}]});
            let _ = save(&state, &mut batch, &status).await;
        }
    }
}

async fn run_inner(state: &Arc<AppState>, id: &str) -> anyhow::Result<()> {
    let platform = platform(state).map_err(super::to_anyhow)?.clone();
    let mut batch = load(state, id).await.map_err(super::to_anyhow)?;
    let endpoint = batch["endpoint"].as_str().unwrap_or_default().to_string();
    let status = batch["status"].as_str().unwrap_or_default().to_string();
    // Usage is the batch owner's, as if its requests had been sent directly.
    let owner = platform.store.job(id).await?.and_then(|j| j.owner);
    let input = read_file(&platform, batch["input_file_id"].as_str().unwrap_or_default()).await?;
    let lines = match parse_input(&input, &endpoint) {
        Ok(lines) => lines,
        Err(errors) => {
            batch["status"] = json!("failed");
            batch["failed_at"] = json!(now());
            batch["errors"] = json!({"object": "list", "data": errors});
            save(state, &mut batch, &status).await?;
            return Ok(());
        }
    };
    batch["status"] = json!("in_progress");
    batch["in_progress_at"] = json!(now());
    batch["request_counts"] = json!({"total": lines.len(), "completed": 0, "failed": 0});
    if !save(state, &mut batch, &status).await? {
        finish_cancelled(&mut batch);
        save(state, &mut batch, "cancelling").await?;
        return Ok(());
    }
    // In the input's order; a request stops being started once the batch is being cancelled.
    let results: Vec<Option<(String, u16, Value)>> = futures::stream::iter(lines)
        .map(|line| {
            let state = state.clone();
            let endpoint = endpoint.clone();
            let id = id.to_string();
            let owner = owner.clone();
            let platform = platform.clone();
            async move {
                state.interactive.wait_idle().await;
                if is_cancelling(&state, &id).await {
                    return None;
                }
                let (status, body) = dispatch(&state, &endpoint, line.body.clone()).await;
                if (200..300).contains(&status) {
                    let record = crate::metering::batch_usage_of(owner, &endpoint, &line.body, &body);
                    if let Err(e) = platform.store.record_usage(&record).await {
                        tracing::error!("batch {id}: recording usage: {e:#}");
                    }
                }
                Some((line.custom_id, status, body))
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    for (custom_id, status, body) in results.into_iter().flatten() {
        let line = json!({
            "id": time_id("batch_req_"),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": time_id("req_"), "body": body},
            "error": null,
        });
        let mut text = line.to_string();
        text.push('\n');
        if (200..300).contains(&status) {
            output.push(text);
        } else {
            errors.push(text);
        }
    }
    let cancelled = is_cancelling(state, id).await;
    if !cancelled {
        batch["status"] = json!("finalizing");
        batch["finalizing_at"] = json!(now());
        if !save(state, &mut batch, "in_progress").await? {
            return finish_cancel_with_files(state, &mut batch, output, errors).await;
        }
    } else {
        return finish_cancel_with_files(state, &mut batch, output, errors).await;
    }
    write_outputs(&platform, &mut batch, output, errors).await?;
    batch["status"] = json!("completed");
    batch["completed_at"] = json!(now());
    if !save(state, &mut batch, "finalizing").await? {
        finish_cancelled(&mut batch);
        save(state, &mut batch, "cancelling").await?;
    }
    Ok(())
}

/// A cancelled batch keeps what it answered before the cancel, in its files.
async fn finish_cancel_with_files(state: &Arc<AppState>, batch: &mut Value, output: Vec<String>, errors: Vec<String>) -> anyhow::Result<()> {
    let platform = platform(state).map_err(super::to_anyhow)?.clone();
    if let Some(job) = platform.store.job(batch["id"].as_str().unwrap_or_default()).await? {
        let stored: Value = serde_json::from_str(&job.body)?;
        batch["cancelling_at"] = stored["cancelling_at"].clone();
    }
    write_outputs(&platform, batch, output, errors).await?;
    finish_cancelled(batch);
    let id = batch["id"].as_str().unwrap_or_default().to_string();
    platform.store.update_job(&id, "cancelled", &batch.to_string()).await?;
    Ok(())
}

/// Writes the output and error files, owned by the batch's key.
async fn write_outputs(platform: &Arc<crate::platform::Platform>, batch: &mut Value, output: Vec<String>, errors: Vec<String>) -> anyhow::Result<()> {
    let id = batch["id"].as_str().unwrap_or_default().to_string();
    let owner = platform.store.job(&id).await?.and_then(|j| j.owner);
    let total = batch["request_counts"]["total"].as_u64().unwrap_or(0);
    batch["request_counts"] = json!({"total": total, "completed": output.len(), "failed": errors.len()});
    if !output.is_empty() {
        let file = write_file(platform, owner.clone(), "batch_output", &format!("{id}_output.jsonl"), output.concat().into_bytes()).await?;
        batch["output_file_id"] = json!(file.id);
    }
    if !errors.is_empty() {
        let file = write_file(platform, owner, "batch_output", &format!("{id}_error.jsonl"), errors.concat().into_bytes()).await?;
        batch["error_file_id"] = json!(file.id);
    }
    Ok(())
}
