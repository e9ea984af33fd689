//! `POST /v1/moderations`. Zero retention: the inputs are scored in memory and
//! dropped; nothing here logs or stores them (only their count is traced).
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hearth_api::moderations::{ModerationRequest, ModerationResponse, ModerationResult};
use hearth_catalog::Endpoint;
use hearth_engine::moderate::{ModerationEngine, CATEGORIES};
use std::sync::Arc;

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json<ModerationResponse>, ApiError> {
    let req = ModerationRequest::parse(&crate::body::json(&headers, body)?)?;
    let (resolved, engine) = state.runtime::<ModerationEngine>(&req.model, Endpoint::Moderations)?;
    tracing::debug!(inputs = req.inputs.len(), "moderation request");
    let verdicts = engine.moderate(&req.inputs).await?;
    let results = verdicts
        .iter()
        .map(|v| {
            let scored: Vec<(&str, f32, bool)> = CATEGORIES.iter().enumerate().map(|(k, &c)| (c, v.scores[k], v.flags[k])).collect();
            ModerationResult::new(&scored)
        })
        .collect();
    Ok(Json(ModerationResponse { id: format!("modr-{}", uuid::Uuid::new_v4().simple()), model: resolved.entry.id.clone(), results }))
}
