//! `GET /v1/models` and `GET /v1/models/{model}`.
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use hearth_api::models::{ListModelsResponse, Model};
use std::sync::Arc;

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ListModelsResponse> {
    let today = state.today();
    let data = state.catalog.list_on(&today).into_iter().filter(|l| state.serves(&l.id)).map(|l| Model::new(l.id, l.created, l.owned_by)).collect();
    Json(ListModelsResponse::new(data))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, uri: Uri, id: Result<Path<String>, PathRejection>) -> Result<Json<Model>, ApiError> {
    // An id that does not decode (e.g. `%FF`, not UTF-8) names no model.
    let Ok(Path(id)) = id else {
        let raw = uri.path().rsplit('/').next().unwrap_or_default();
        return Err(ApiError::model_not_found(raw));
    };
    let today = state.today();
    state.catalog.resolve(&id, None, &today)?;
    if !state.serves(&id) {
        return Err(ApiError::model_not_found(&id));
    }
    let listed = state.catalog.list().into_iter().find(|l| l.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(Model::new(listed.id, listed.created, listed.owned_by)))
}
