//! `/v1/fine_tuning/jobs` in OpenAI's current shapes, and what both
//! fine-tuning APIs share: creating, loading and cancelling a job.
use super::spec::{self, DataKind, FtJob, Hyper, Requested, CURRENT, FINISHED};
use super::{caller, input_file, internal, platform, read_file, scope, visible_job, CallerExt, PageParams, ORG};
use crate::auth::Caller;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hearth_store::{now, Job, JobEvent};
use serde_json::{json, Value};
use std::sync::Arc;

fn no_such_job(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Could not find fine-tune: {id}"), INVALID_REQUEST, Some("fine_tune_id"), Some("fine_tune_not_found"))
}

/// The job `id` of `kind`, when `caller` may see it.
pub async fn load(state: &AppState, caller: &Caller, id: &str, kind: &str) -> Result<FtJob, ApiError> {
    let job = visible_job(state, caller, id, kind).await?.ok_or_else(|| no_such_job(id))?;
    serde_json::from_str(&job.body).map_err(internal)
}

/// Checks the files against the base (a bad file is refused at once) and stores
/// the job, `validating_files`; a task (`runner::validate`) validates the files
/// again and queues it.
pub async fn submit(state: &Arc<AppState>, caller: &Caller, job: FtJob) -> Result<FtJob, ApiError> {
    let platform = platform(state)?.clone();
    input_file(&platform, caller, &job.asked.training_file, "fine-tune", "training_file").await?;
    let training = read_file(&platform, &job.asked.training_file).await.map_err(internal)?;
    spec::check_data(&training, job.asked.data, "training_file")?;
    if let Some(validation) = &job.asked.validation_file {
        input_file(&platform, caller, validation, "fine-tune", "validation_file").await?;
        let bytes = read_file(&platform, validation).await.map_err(internal)?;
        spec::check_data(&bytes, job.asked.data, "validation_file")?;
    }
    if state.training.is_none() {
        return Err(ApiError::internal("this server was started without a models directory for fine-tuning"));
    }
    let store = &platform.store;
    let row = Job::new(job.id.clone(), job.kind(), &job.status, serde_json::to_string(&job).map_err(internal)?).owned_by(caller.key_id.clone());
    store.insert_job(&row).await.map_err(internal)?;
    store.add_event(&job.id, "info", &format!("Created fine-tuning job: {}", job.id), None).await.map_err(internal)?;
    store.add_event(&job.id, "info", &format!("Validating training file: {}", job.asked.training_file), None).await.map_err(internal)?;
    if let Some(validation) = &job.asked.validation_file {
        store.add_event(&job.id, "info", &format!("Validating validation file: {validation}"), None).await.map_err(internal)?;
    }
    tokio::spawn(super::runner::validate(state.clone(), job.id.clone()));
    Ok(job)
}

/// Cancels a job that has not finished; the runner stops its training at the next step.
pub async fn cancel_job(state: &AppState, caller: &Caller, id: &str, kind: &str) -> Result<FtJob, ApiError> {
    let store = &platform(state)?.store;
    loop {
        let mut job = load(state, caller, id, kind).await?;
        if FINISHED.contains(&job.status.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Job has already completed: {id} (status {})", job.status),
                INVALID_REQUEST,
                None,
                None,
            ));
        }
        let previous = job.status.clone();
        job.status = "cancelled".into();
        job.updated_at = now();
        job.finished_at = Some(now());
        if store.update_job_if(id, &previous, &job.status, &serde_json::to_string(&job).map_err(internal)?).await.map_err(internal)? {
            store.add_event(id, "info", "Fine-tuning job cancelled", None).await.map_err(internal)?;
            state.jobs_wake.notify_one();
            return Ok(job);
        }
    }
}

/// The current API's job object.
pub fn object(job: &FtJob) -> Value {
    let hyper = json!({
        "n_epochs": job.asked.hyper.n_epochs.map_or(json!("auto"), |n| json!(n)),
        "batch_size": job.asked.hyper.batch_size.map_or(json!("auto"), |n| json!(n)),
        "learning_rate_multiplier": job.asked.hyper.learning_rate_multiplier.map_or(json!("auto"), |n| json!(n)),
    });
    json!({
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "model": job.asked.model,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": ORG,
        "status": job.status,
        "hyperparameters": hyper,
        "training_file": job.asked.training_file,
        "validation_file": job.asked.validation_file,
        "result_files": job.result_files,
        "trained_tokens": job.trained_tokens,
        "error": job.error.clone().unwrap_or_else(|| json!({})),
        "seed": job.asked.seed,
        "user_provided_suffix": job.asked.suffix,
        "estimated_finish": null,
        "integrations": [],
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    })
}

/// A create request of either API, read as far as both read it alike: its JSON
/// body, its `model` (required unless the API has a default), its required
/// `training_file`, and the base that model trains.
pub struct CreateRequest {
    pub body: Value,
    model: String,
    base: String,
    data: DataKind,
    training_file: String,
}

impl CreateRequest {
    pub fn read(state: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>, default_model: Option<&str>) -> Result<Self, ApiError> {
        let body = crate::body::json(headers, body)?;
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        let missing = |name: &str| ApiError::invalid(format!("Missing required parameter: '{name}'."), Some(name));
        let model = text("model").or_else(|| default_model.map(str::to_string)).ok_or_else(|| missing("model"))?;
        let training_file = text("training_file").ok_or_else(|| missing("training_file"))?;
        let (base, data) = spec::trainable_base(state, &model)?;
        Ok(Self { body, model, base, data, training_file })
    }

    /// Checks and stores the job (`legacy`: a `/v1/fine-tunes` one) with the settings its API read from the body.
    pub async fn submit(self, state: &Arc<AppState>, who: CallerExt, legacy: bool, hyper: Hyper, suffix: Option<String>, seed: i64) -> Result<FtJob, ApiError> {
        let validation_file = self.body.get("validation_file").and_then(Value::as_str).map(str::to_string);
        let requested =
            Requested { model: self.model, base: self.base, data: self.data, training_file: self.training_file, validation_file, hyper, suffix, seed };
        submit(state, &caller(who), FtJob::new(legacy, requested)).await
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = CreateRequest::read(&state, &headers, body, None)?;
    let body = &request.body;
    // `method.supervised.hyperparameters` is the newer place for the same settings.
    let hyper_value = body.get("hyperparameters").or_else(|| body.pointer("/method/supervised/hyperparameters")).cloned().unwrap_or(Value::Null);
    let hyper = spec::hyper(&hyper_value, "hyperparameters.")?;
    let suffix = spec::suffix(body.get("suffix"), 64)?;
    let seed = match body.get("seed") {
        None | Some(Value::Null) => rand::random::<u32>() as i64,
        Some(v) => v
            .as_i64()
            .filter(|s| (0..=2_147_483_647).contains(s))
            .ok_or_else(|| ApiError::invalid(format!("Invalid 'seed': expected an integer between 0 and 2147483647, but got {v} instead."), Some("seed")))?,
    };
    let job = request.submit(&state, who, false, hyper, suffix, seed).await?;
    Ok(Json(object(&job)))
}

pub async fn list(State(state): State<Arc<AppState>>, who: CallerExt, Query(params): Query<PageParams>) -> Result<Json<Value>, ApiError> {
    let (store, scope) = (&platform(&state)?.store, scope(&caller(who)));
    let (jobs, has_more) = params.fetch(20, 100, |after, n| store.list_jobs(CURRENT, &scope, after, n)).await?;
    let data = jobs.iter().map(|j| serde_json::from_str::<FtJob>(&j.body).map(|j| object(&j))).collect::<Result<Vec<_>, _>>().map_err(internal)?;
    Ok(Json(json!({"object": "list", "data": data, "has_more": has_more})))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(object(&load(&state, &caller(who), &id, CURRENT).await?)))
}

pub async fn cancel(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(object(&cancel_job(&state, &caller(who), &id, CURRENT).await?)))
}

pub fn event_object(e: &JobEvent) -> Value {
    let data = e.data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok());
    json!({
        "object": "fine_tuning.job.event",
        "id": e.id,
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "type": if data.is_some() { "metrics" } else { "message" },
        "data": data.unwrap_or_else(|| json!({})),
    })
}

pub async fn events(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<Value>, ApiError> {
    load(&state, &caller(who), &id, CURRENT).await?;
    let store = &platform(&state)?.store;
    let (events, has_more) = params.fetch(20, 1000, |after, n| store.events(&id, after, n)).await?;
    Ok(Json(json!({"object": "list", "data": events.iter().map(event_object).collect::<Vec<_>>(), "has_more": has_more})))
}

pub async fn checkpoints(
    State(state): State<Arc<AppState>>,
    who: CallerExt,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<Value>, ApiError> {
    load(&state, &caller(who), &id, CURRENT).await?;
    let store = &platform(&state)?.store;
    let (rows, has_more) = params.fetch(10, 100, |after, n| store.checkpoints(&id, after, n)).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|c| {
            let body: Value = serde_json::from_str(&c.body).unwrap_or_else(|_| json!({}));
            json!({
                "object": "fine_tuning.job.checkpoint",
                "id": c.id,
                "created_at": c.created_at,
                "fine_tuned_model_checkpoint": body["fine_tuned_model_checkpoint"],
                "step_number": c.step,
                "metrics": body["metrics"],
                "fine_tuning_job_id": c.job_id,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": rows.first().map(|c| c.id.clone()),
        "last_id": rows.last().map(|c| c.id.clone()),
        "has_more": has_more,
    })))
}
