//! `POST /v1/edits`: the 2023 edit models' contract answered by an instruct model.
//! The instruction and the input are rendered through the model's chat template
//! under a fixed system message, and the answer is the edited text.
use crate::error::{ApiError, INVALID_REQUEST};
use crate::generate::{self, now};
use crate::state::{AppState, TextTarget};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hearth_api::edits::{EditChoice, EditRequest, EditResponse};
use hearth_api::Usage;
use hearth_catalog::{Endpoint, ResolveError};
use hearth_engine::text::{Message, TextRequest};
use std::sync::Arc;

/// What the model is told it is doing; the edited text is its whole answer.
const SYSTEM: &str =
    "You are a text editor. Apply the instruction to the text and reply with the edited text only: no explanations, no quotes, no code fences.";

/// An edit is about as long as its input: the answer may take twice the prompt's
/// tokens (plus room for a short input to grow), never past the window.
fn answer_budget(window: usize, prompt: usize) -> Result<usize, ApiError> {
    if prompt >= window {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("This model's maximum context length is {window} tokens, however your instruction and input resulted in {prompt} tokens. Please reduce the input."),
            INVALID_REQUEST,
            Some("input"),
            Some("context_length_exceeded"),
        ));
    }
    Ok((window - prompt).min(2 * prompt + 64))
}

fn user_message(req: &EditRequest) -> String {
    format!("Instruction: {}\n\nText:\n{}", req.instruction, req.input)
}

/// The model for this request; a model that exists but cannot edit gets a message
/// naming this endpoint (the generic one speaks of chat and completions).
fn target(state: &AppState, model: &str) -> Result<TextTarget, ApiError> {
    if state.tuned_model(model).is_none() {
        if let Err(ResolveError::WrongEndpoint { model, serves }) = state.catalog.resolve(model, Some(Endpoint::Edits), &state.today()) {
            let paths: Vec<&str> = serves.iter().map(|e| crate::paths::endpoint_path(*e).trim_start_matches('/')).collect();
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` is not supported by the v1/edits endpoint. It serves: {}.", paths.join(", ")),
                INVALID_REQUEST,
                Some("model"),
                None,
            ));
        }
    }
    state.text_target(model, Endpoint::Edits)
}

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json<EditResponse>, ApiError> {
    let req = EditRequest::parse(&crate::body::json(&headers, body)?)?;
    let target = target(&state, &req.model)?;
    let messages = vec![Message::system(SYSTEM), Message::user(user_message(&req))];
    let prompt = generate::prepare(&target.engine, move |e| e.prepare_chat(&messages, &[])).await?;
    let prompt_tokens = prompt.ids.len();
    let max_tokens = answer_budget(target.context_window, prompt_tokens)?;
    let request = TextRequest {
        prompt,
        n: req.n,
        max_tokens,
        sampling: generate::sampling(&req.sampling),
        stop: vec![],
        logprobs: None,
        prompt_logprobs: false,
        constraint: None,
    };
    let results = generate::collect(generate::start(&target, &state.metrics, vec![request])?).await?;
    let generated = results.iter().map(|r| r.generated).sum();
    // The model's reply ends its turn; an edited text keeps the input's final newline.
    let newline = if req.input.ends_with('\n') { "\n" } else { "" };
    let choices = results.into_iter().enumerate().map(|(index, r)| EditChoice { text: format!("{}{newline}", r.text.trim()), index }).collect();
    Ok(Json(EditResponse { object: "edit".into(), created: now(), choices, usage: Usage::new(prompt_tokens, generated) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_the_prompt_and_the_window() {
        assert_eq!(answer_budget(4096, 100).unwrap(), 264);
        assert_eq!(answer_budget(300, 100).unwrap(), 200);
        let e = answer_budget(100, 100).unwrap_err();
        assert_eq!(e.body.error.param.as_deref(), Some("input"));
    }
}
