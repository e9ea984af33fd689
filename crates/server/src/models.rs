//! `GET /v1/models` and `GET /v1/models/{model}`.
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use hearth_api::models::{ListModelsResponse, Model};
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ListModelsResponse> {
    let today = state.today();
    let mut data: Vec<Model> =
        state.catalog.list_on(&today).into_iter().filter(|l| state.serves(&l.id)).map(|l| Model::new(l.id, l.created, l.owned_by)).collect();
    let mut tuned: Vec<Model> = state
        .tuned
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|t| Model::new(t.record.id.clone(), t.record.created_at, t.record.owned_by.clone()))
        .collect();
    tuned.sort_by(|a, b| a.id.cmp(&b.id));
    data.extend(tuned);
    Json(ListModelsResponse::new(data))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, uri: Uri, id: Result<Path<String>, PathRejection>) -> Result<Json<Model>, ApiError> {
    // An id that does not decode (e.g. `%FF`, not UTF-8) names no model.
    let Ok(Path(id)) = id else {
        let raw = uri.path().rsplit('/').next().unwrap_or_default();
        return Err(ApiError::model_not_found(raw));
    };
    if let Some(t) = state.tuned_model(&id) {
        return Ok(Json(Model::new(t.record.id, t.record.created_at, t.record.owned_by)));
    }
    let today = state.today();
    state.catalog.resolve(&id, None, &today)?;
    if !state.serves(&id) {
        return Err(ApiError::model_not_found(&id));
    }
    let listed = state.catalog.list().into_iter().find(|l| l.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(Model::new(listed.id, listed.created, listed.owned_by)))
}

/// `DELETE /v1/models/{model}`: a fine-tuned model goes from the catalog, the
/// store and the disk; the catalog's own models cannot be deleted.
pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let Some(tuned) = state.tuned_model(&id) else {
        if state.catalog.resolve(&id, None, &state.today()).is_ok() {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("You have insufficient permissions for this operation: the model `{id}` is a base model and cannot be deleted."),
                crate::error::INVALID_REQUEST,
                Some("model"),
                None,
            ));
        }
        return Err(ApiError::model_not_found(&id));
    };
    let platform = state.platform.as_ref().ok_or_else(|| ApiError::internal("this server was started without a store"))?;
    // The record goes first: a crash after it leaves an unused file, never a listed model without weights.
    platform.store.delete_fine_tuned_model(&id).await.map_err(ApiError::internal)?;
    state.tuned.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    let path = std::path::PathBuf::from(&tuned.record.path);
    drop(tuned);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::internal(format!("removing {}: {e}", path.display()))),
    }
    Ok(Json(json!({ "id": id, "object": "model", "deleted": true })))
}
