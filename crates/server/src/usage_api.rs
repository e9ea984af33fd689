//! `GET /v1/organization/usage/{completions,embeddings,moderations,audio_transcriptions}`
//! in the shape of OpenAI's organization usage API: buckets of 1m, 1h or 1d,
//! optionally grouped by `api_key_id` and `model` (and, for completions,
//! `batch`: batches' requests apart from direct ones). Admin keys only.
use crate::auth::Caller;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use hearth_store::{UsageBucket, UsageQuery};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The usage kinds and the request paths each one sums.
fn endpoints(kind: &str) -> Option<Vec<String>> {
    let paths: &[&str] = match kind {
        "completions" => &["/v1/chat/completions", "/v1/completions", "/v1/edits"],
        "embeddings" => &["/v1/embeddings"],
        "moderations" => &["/v1/moderations"],
        "audio_transcriptions" => &["/v1/audio/transcriptions", "/v1/audio/translations"],
        _ => return None,
    };
    Some(paths.iter().map(|p| p.to_string()).collect())
}

pub async fn usage(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(kind): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if !caller.is_some_and(|Extension(c)| c.admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You have insufficient permissions for this operation. Reading usage needs an admin key (hearth keys create --admin).",
            INVALID_REQUEST,
            None,
            Some("insufficient_permissions"),
        ));
    }
    let platform = state.platform.as_ref().ok_or_else(|| ApiError::internal("this server was started without a store"))?;
    let Some(paths) = endpoints(&kind) else {
        return Err(ApiError::invalid_url("GET", &format!("/v1/organization/usage/{kind}")));
    };
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|e| ApiError::invalid(format!("Invalid query string: {e}"), None))?;
    let one = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        one(name).map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(format!("Invalid '{name}': expected an integer, got '{v}'."), Some(name)))).transpose()
    };
    let start = int("start_time")?.ok_or_else(|| ApiError::invalid("Missing required parameter: 'start_time'.", Some("start_time")))?;
    let (width, default_limit, max_limit) = match one("bucket_width").unwrap_or("1d") {
        "1m" => (60, 60, 1440),
        "1h" => (3600, 24, 168),
        "1d" => (86_400, 7, 31),
        other => return Err(ApiError::invalid(format!("Invalid 'bucket_width': expected one of '1m', '1h', '1d', got '{other}'."), Some("bucket_width"))),
    };
    let limit = int("limit")?.unwrap_or(default_limit);
    if !(1..=max_limit).contains(&limit) {
        return Err(ApiError::invalid(format!("Invalid 'limit': expected 1 to {max_limit}, got {limit}."), Some("limit")));
    }
    // `page` is the start of the next bucket, as our `next_page` gives it.
    let first = int("page")?.unwrap_or(start);
    let end = int("end_time")?.unwrap_or(i64::MAX / 2);
    let until = end.min(first + limit * width).min(hearth_store::now() + 1).max(first);
    // OpenAI groups (and filters) by `batch` on completions only.
    let completions = kind == "completions";
    let mut group = Vec::new();
    for (k, v) in &params {
        if k == "group_by" || k == "group_by[]" {
            for g in v.split(',') {
                if !(matches!(g, "api_key_id" | "model") || completions && g == "batch") {
                    let known = if completions { "'api_key_id', 'model' and 'batch'" } else { "'api_key_id' and 'model'" };
                    return Err(ApiError::invalid(format!("Invalid 'group_by': '{g}' (hearth groups {kind} usage by {known})."), Some("group_by")));
                }
                group.push(g.to_string());
            }
        }
    }
    let batch_only = match one("batch").filter(|_| completions) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(ApiError::invalid(format!("Invalid 'batch': expected a boolean, got '{other}'."), Some("batch"))),
    };
    let by = Grouping { key: group.iter().any(|g| g == "api_key_id"), model: group.iter().any(|g| g == "model"), batch: group.iter().any(|g| g == "batch") };
    let mut rows = platform.store.usage(&UsageQuery { start: first, end: until, width, endpoints: paths }).await.map_err(ApiError::internal)?;
    if let Some(batch) = batch_only {
        rows.retain(|r| r.batch == batch);
    }
    let data = buckets(&kind, first, until, width, &rows, by);
    // More pages while the limit, not the end or the present, cut the range.
    let cut = first + limit * width;
    let next = (until == cut && cut < end && cut <= hearth_store::now()).then_some(cut);
    Ok(Json(json!({ "object": "page", "data": data, "has_more": next.is_some(), "next_page": next.map(|n| n.to_string()) })))
}

/// What results are grouped by (`group_by`).
#[derive(Clone, Copy)]
struct Grouping {
    key: bool,
    model: bool,
    batch: bool,
}

/// A result's group: each part None unless grouped by it.
type Group = (Option<String>, Option<String>, Option<bool>);

/// One bucket per `width` from `first` to `until`, each with one result per group.
fn buckets(kind: &str, first: i64, until: i64, width: i64, rows: &[UsageBucket], by: Grouping) -> Vec<Value> {
    let mut out = Vec::new();
    let mut t = first;
    while t < until {
        let mut groups: BTreeMap<Group, Sums> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.start == t) {
            let key = (by.key.then(|| r.api_key_id.clone()).flatten(), by.model.then(|| r.model.clone()), by.batch.then_some(r.batch));
            let sums = groups.entry(key).or_default();
            sums.requests += r.requests;
            sums.input += r.prompt_tokens;
            sums.output += r.completion_tokens;
            sums.seconds += r.audio_seconds;
        }
        let results: Vec<Value> = groups.into_iter().map(|(group, s)| result(kind, group, &s)).collect();
        out.push(json!({ "object": "bucket", "start_time": t, "end_time": t + width, "results": results }));
        t += width;
    }
    out
}

#[derive(Default)]
struct Sums {
    requests: i64,
    input: i64,
    output: i64,
    seconds: f64,
}

fn result(kind: &str, (key, model, batch): Group, s: &Sums) -> Value {
    let mut m = Map::new();
    m.insert("object".into(), json!(format!("organization.usage.{kind}.result")));
    match kind {
        "completions" => {
            m.insert("input_tokens".into(), json!(s.input));
            m.insert("output_tokens".into(), json!(s.output));
            m.insert("input_cached_tokens".into(), json!(0));
            m.insert("input_audio_tokens".into(), json!(0));
            m.insert("output_audio_tokens".into(), json!(0));
            // null unless grouped by batch, as OpenAI answers.
            m.insert("batch".into(), json!(batch));
        }
        "embeddings" | "moderations" => {
            m.insert("input_tokens".into(), json!(s.input));
        }
        _ => {
            m.insert("seconds".into(), json!(s.seconds));
        }
    }
    m.insert("num_model_requests".into(), json!(s.requests));
    m.insert("project_id".into(), Value::Null);
    m.insert("user_id".into(), Value::Null);
    m.insert("api_key_id".into(), json!(key));
    m.insert("model".into(), json!(model));
    Value::Object(m)
}
