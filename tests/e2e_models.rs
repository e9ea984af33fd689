//! GET /v1/models, GET /v1/models/{id}, and which endpoint each model serves.
mod common;
use common::*;
use serde_json::json;

fn assert_model_object(m: &serde_json::Value) {
    let obj = m.as_object().unwrap_or_else(|| panic!("model is not an object: {m}"));
    assert_eq!(m["object"], "model", "{m}");
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    assert!(m["created"].is_i64(), "created must be an integer: {m}");
    assert!(m["owned_by"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    for key in ["id", "object", "created", "owned_by"] {
        assert!(obj.contains_key(key), "{key} missing: {m}");
    }
}

#[tokio::test]
async fn list_has_every_model_and_alias() {
    let server = shared();
    let (status, body) = get(server, "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data array");
    data.iter().for_each(assert_model_object);
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    for id in ALL_MODELS.iter().chain(aliases::TEXT_ALIASES.iter()) {
        assert!(ids.contains(id), "{id} missing from /v1/models: {ids:?}");
    }
}

#[tokio::test]
async fn retrieve_model_and_alias() {
    let server = shared();
    for id in [SMOL, "gpt-4", "davinci"] {
        let (status, body) = get(server, &format!("/v1/models/{id}")).await;
        assert_eq!(status, 200, "{body}");
        assert_model_object(&body);
        assert_eq!(body["id"], id);
    }
}

#[tokio::test]
async fn retrieve_unknown_model_is_404() {
    let server = shared();
    let (status, body) = get(server, "/v1/models/no-such-model").await;
    assert_error_shape(&body);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no-such-model"), "{msg}");
}

#[tokio::test]
async fn unknown_route_is_openai_404() {
    let server = shared();
    let (status, body) = get(server, "/v1/nothing-here").await;
    assert_eq!(status, 404, "{body}");
    assert_error_shape(&body);
}

#[tokio::test]
async fn chat_only_alias_on_completions_names_chat_endpoint() {
    let server = shared();
    let (status, body) = post(server, "/v1/completions", &completion("gpt-3.5-turbo", json!("Hi"), 2)).await;
    assert!(status == 404 || status == 400, "status {status}: {body}");
    assert_error_shape(&body);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("use v1/chat/completions"), "message must point to the chat endpoint: {msg}");
}

#[tokio::test]
async fn completions_only_model_on_chat_names_completions_endpoint() {
    let server = shared();
    for model in ["davinci", GEMMA, "text-davinci-003"] {
        let (status, body) = post(server, "/v1/chat/completions", &chat(model, "Hi", 2)).await;
        assert!(status == 404 || status == 400, "{model}: status {status}: {body}");
        assert_error_shape(&body);
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("v1/completions"), "{model}: message must name the completions endpoint: {msg}");
        assert!(msg.contains("use v1/completions"), "{model}: it points to v1/completions: {msg}");
    }
}

#[tokio::test]
async fn alias_answers_with_the_requested_name() {
    let server = shared();
    let body = ok(server, "/v1/chat/completions", &chat("gpt-3.5-turbo", "Hi", 2)).await;
    assert_envelope(&body, "chat.completion", "gpt-3.5-turbo");
    let body = ok(server, "/v1/completions", &completion("ada", json!("Once upon a"), 2)).await;
    assert_envelope(&body, "text_completion", "ada");
}
