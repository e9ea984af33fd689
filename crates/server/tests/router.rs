//! The router driven in-process with `tower::ServiceExt::oneshot`: error shapes
//! without a model, then real generations with SmolLM2-135M-Instruct
//! (`$HEARTH_TEST_MODELS`, default /tmp/models; those tests fail, naming
//! `hearth pull`, when the file is missing).
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hearth_catalog::Catalog;
use hearth_engine::text::{TextEngine, TextEngineConfig};
use hearth_server::{router, AppState, LoadedModel};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

const SMOLLM2: &str = "smollm2-135m-instruct-q4_1";

fn app(engines: HashMap<String, TextEngine>, keys: &[&str]) -> Router {
    let runtimes = engines.into_iter().map(|(id, engine)| (id, LoadedModel::Text(engine))).collect();
    router(Arc::new(AppState::new(Catalog::builtin(), runtimes, keys.iter().map(|k| k.to_string()).collect())))
}

fn smollm2() -> TextEngine {
    static ENGINE: OnceLock<TextEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let dir = std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| "/tmp/models".into());
            let path = dir.join(format!("{SMOLLM2}.gguf"));
            // A test that passed without its model would prove nothing.
            assert!(path.is_file(), "{} is missing: run `hearth pull` first (scripts/test.sh does) and set HEARTH_TEST_MODELS to its cache", path.display());
            TextEngine::load(&path, TextEngineConfig::default()).expect("SmolLM2 loads")
        })
        .clone()
}

fn model_app() -> Router {
    app(HashMap::from([(SMOLLM2.to_string(), smollm2())]), &[])
}

async fn send(app: &Router, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> (StatusCode, String) {
    let mut builder = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let request = builder.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = send(app, "POST", path, Some(&body.to_string()), None).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Asserts OpenAI's error shape and returns the error object.
fn error_of(status: StatusCode, body: &Value, expected: StatusCode) -> Value {
    assert_eq!(status, expected, "{body}");
    let e = body["error"].clone();
    assert!(e["message"].is_string() && e["type"].is_string(), "{body}");
    assert!(e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"), "{body}");
    e
}

/// `data: ` payloads of an SSE body.
fn sse_events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n").filter(|f| !f.is_empty()).map(|f| f.strip_prefix("data: ").expect("data frame").to_string()).collect()
}

// ------------------------------------------------------------ without a model

#[tokio::test]
async fn unknown_route_and_method() {
    let app = app(HashMap::new(), &[]);
    let (status, text) = send(&app, "POST", "/v1/xyz", Some("{}"), None).await;
    let e = error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::NOT_FOUND);
    assert_eq!(e["message"], "Invalid URL (POST /v1/xyz)");
    let (status, text) = send(&app, "GET", "/v1/chat/completions", None, None).await;
    let e = error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["message"], "Invalid method for URL (GET /v1/chat/completions)");
}

#[tokio::test]
async fn malformed_and_invalid_bodies() {
    let app = app(HashMap::new(), &[]);
    let (status, text) = send(&app, "POST", "/v1/chat/completions", Some("{not json"), None).await;
    let e = error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().starts_with("We could not parse the JSON body of your request."));
    assert_eq!(e["type"], "invalid_request_error");

    let (status, body) =
        post(&app, "/v1/chat/completions", json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})).await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(e["message"], "'hot' is not of type 'number' - 'temperature'");
    assert_eq!(e["param"], "temperature");

    let (status, body) = post(&app, "/v1/completions", json!({"model": "davinci", "prompt": "x", "bogus": 1})).await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(e["message"], "Unrecognized request argument supplied: bogus");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = app(HashMap::new(), &[]);
    let big = format!("{{\"model\":\"x\",\"prompt\":\"{}\"}}", "a".repeat(hearth_server::BODY_LIMIT + 10));
    let (status, text) = send(&app, "POST", "/v1/completions", Some(&big), None).await;
    error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn model_errors() {
    let app = app(HashMap::new(), &[]);
    let (status, body) = post(&app, "/v1/chat/completions", json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})).await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(e["message"], "The model `nope` does not exist");
    assert_eq!(e["code"], "model_not_found");

    let (status, body) = post(&app, "/v1/completions", json!({"model": "gpt-3.5-turbo", "prompt": "x"})).await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(e["message"], "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use v1/chat/completions?");

    let (status, body) = post(&app, "/v1/chat/completions", json!({"model": "davinci", "messages": [{"role": "user", "content": "x"}]})).await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(e["message"], "This is not a chat model and thus not supported in the v1/chat/completions endpoint. Did you mean to use v1/completions?");

    let (status, text) = send(&app, "GET", "/v1/models/nope", None, None).await;
    error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn auth_when_keys_are_set() {
    let app = app(HashMap::new(), &["sk-test-123456"]);
    let (status, text) = send(&app, "GET", "/v1/models", None, None).await;
    let e = error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap().starts_with("You didn't provide an API key."));
    let (status, text) = send(&app, "GET", "/v1/models", None, Some("sk-wrong-999999")).await;
    let e = error_of(status, &serde_json::from_str(&text).unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "invalid_api_key");
    assert!(e["message"].as_str().unwrap().starts_with("Incorrect API key provided: sk-********9999."));
    let (status, _) = send(&app, "GET", "/v1/models", None, Some("sk-test-123456")).await;
    assert_eq!(status, StatusCode::OK);
}

// ------------------------------------------------------------ with SmolLM2

fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 12
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn models_list_shows_loaded_names() {
    let app = model_app();
    let (status, text) = send(&app, "GET", "/v1/models", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&SMOLLM2) && ids.contains(&"gpt-3.5-turbo"), "{ids:?}");
    assert!(!ids.contains(&"davinci"), "gemma is not loaded here: {ids:?}");
    let (status, text) = send(&app, "GET", "/v1/models/gpt-3.5-turbo", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((m["id"].as_str(), m["object"].as_str()), (Some("gpt-3.5-turbo"), Some("model")));
}

#[tokio::test]
async fn chat_greedy_is_deterministic_and_counted() {
    let app = model_app();
    let (status, a) = post(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "gpt-3.5-turbo");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &a["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    let u = &a["usage"];
    assert!(u["completion_tokens"].as_u64().unwrap() <= 12);
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));
    let (_, b) = post(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]);
}

#[tokio::test]
async fn chat_stream_matches_non_stream() {
    let app = model_app();
    let (_, whole) = post(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, text) = send(&app, "POST", "/v1/chat/completions", Some(&body.to_string()), None).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert!(chunks[0]["usage"].is_null());
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["delta"], json!({}));
    assert_eq!(finish["finish_reason"], whole["choices"][0]["finish_reason"]);
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, whole["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn chat_stop_string_cuts_text() {
    let app = model_app();
    let (_, whole) = post(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    let full = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let words: Vec<&str> = full.split(' ').collect();
    assert!(words.len() >= 3, "{full:?}");
    let stop = format!(" {}", words[2]);
    let cut = &full[..full.find(&stop).unwrap()];
    let (_, stopped) = post(&app, "/v1/chat/completions", chat_body(json!({"stop": [stop.clone(), "zzzz"]}))).await;
    assert_eq!(stopped["choices"][0]["message"]["content"], cut);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    // Streaming holds back and cuts the same way.
    let body = chat_body(json!({"stop": stop, "stream": true}));
    let (_, text) = send(&app, "POST", "/v1/chat/completions", Some(&body.to_string()), None).await;
    let events = sse_events(&text);
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, cut);
}

#[tokio::test]
async fn chat_logprobs_and_n() {
    let app = model_app();
    let (status, r) = post(&app, "/v1/chat/completions", chat_body(json!({"logprobs": true, "top_logprobs": 3, "n": 2, "max_tokens": 4}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["choices"].as_array().unwrap().len(), 2);
    assert_eq!(r["choices"][1]["index"], 1);
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty());
    let first = &content[0];
    assert!(first["token"].is_string() && first["logprob"].as_f64().unwrap() <= 0.0 && first["bytes"].is_array());
    assert_eq!(first["top_logprobs"].as_array().unwrap().len(), 3);
    // Greedy: both choices agree.
    assert_eq!(r["choices"][0]["message"]["content"], r["choices"][1]["message"]["content"]);
}

#[tokio::test]
async fn chat_context_length_exceeded() {
    let app = model_app();
    let (status, body) = post(&app, "/v1/chat/completions", chat_body(json!({"max_tokens": 5000}))).await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    let message = e["message"].as_str().unwrap();
    assert!(message.starts_with("This model's maximum context length is 4096 tokens. However, you requested "), "{message}");
}

#[tokio::test]
async fn completions_prompts_echo_and_logprobs() {
    let app = model_app();
    let body = json!({"model": SMOLLM2, "prompt": ["The sky is", "One, two,"], "n": 2, "max_tokens": 5, "temperature": 0});
    let (status, r) = post(&app, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["object"], "text_completion");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(r["usage"]["completion_tokens"].as_u64().unwrap(), 4 * 5);

    let body = json!({"model": SMOLLM2, "prompt": "The sky is", "max_tokens": 3, "temperature": 0, "echo": true, "logprobs": 2});
    let (status, r) = post(&app, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let c = &r["choices"][0];
    assert!(c["text"].as_str().unwrap().starts_with("The sky is"));
    let lp = &c["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert!(lp["token_logprobs"][0].is_null());
    assert_eq!(tokens.len(), lp["text_offset"].as_array().unwrap().len());
    assert_eq!(tokens.iter().map(|t| t.as_str().unwrap()).collect::<String>(), c["text"].as_str().unwrap());
    assert_eq!(lp["text_offset"][0], 0);
}

#[tokio::test]
async fn completions_token_prompt_stream_and_errors() {
    let app = model_app();
    let engine = smollm2();
    let ids = engine.encode("Hello, my name is", false).unwrap();
    let body = json!({"model": SMOLLM2, "prompt": ids, "max_tokens": 4, "temperature": 0, "stream": true});
    let (status, text) = send(&app, "POST", "/v1/completions", Some(&body.to_string()), None).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["object"], "text_completion");

    let vocab = engine.info().vocab_size;
    let (status, body) = post(&app, "/v1/completions", json!({"model": SMOLLM2, "prompt": [1, vocab]})).await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "prompt");

    let (status, body) = post(&app, "/v1/completions", json!({"model": SMOLLM2, "prompt": "hi", "max_tokens": 9000})).await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "prompt");

    if engine.info().fim.is_none() {
        let (status, body) = post(&app, "/v1/completions", json!({"model": SMOLLM2, "prompt": "a", "suffix": "b"})).await;
        let e = error_of(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(e["message"], "suffix is not supported for this model");
    }
}

/// Reads SSE frames until the `k`-th one (1-based); None if the stream ended first.
async fn nth_frame(body: &mut axum::body::BodyDataStream, k: usize) -> Option<String> {
    use futures::StreamExt;
    let mut buffer = String::new();
    loop {
        let frames: Vec<&str> = buffer.split("\n\n").collect();
        if frames.len() > k {
            return Some(frames[k - 1].to_string());
        }
        let bytes = body.next().await?.ok()?;
        buffer.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn overload_is_429_and_disconnect_frees_the_sequence() {
    let shared = smollm2();
    let dir = std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| "/tmp/models".into());
    let engine = TextEngine::load(&dir.join(format!("{SMOLLM2}.gguf")), TextEngineConfig { max_batch: 1, queue_capacity: 1 }).unwrap();
    let app = app(HashMap::from([(SMOLLM2.to_string(), engine.clone())]), &[]);
    // Never-ending generations: the stop tokens are banned.
    let bias: serde_json::Map<String, Value> = shared.info().stop_tokens.iter().map(|t| (t.to_string(), json!(-100))).collect();
    let long = json!({"model": SMOLLM2, "prompt": "Once upon a time", "max_tokens": 3000, "stream": true, "logit_bias": bias});
    let start = |app: Router| {
        let body = long.to_string();
        async move {
            let request = Request::builder().method("POST").uri("/v1/completions").body(Body::from(body)).unwrap();
            let response = app.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().into_data_stream()
        }
    };
    let mut a = start(app.clone()).await;
    assert!(nth_frame(&mut a, 1).await.is_some(), "A is running");
    let mut b = start(app.clone()).await; // waits in the queue (batch of 1)
    let (status, body) = post(&app, "/v1/completions", json!({"model": SMOLLM2, "prompt": "x", "max_tokens": 1})).await;
    let e = error_of(status, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e["code"], "rate_limit_exceeded");
    wait_for_stats(&engine, "A runs, B waits", |s| s.running == 1 && s.queued == 1 && s.kv_cache_bytes > 0).await;
    // The client of A goes away: its sequence is freed and B takes the slot.
    drop(a);
    wait_for_stats(&engine, "after A's client left", |s| s.running == 1 && s.queued == 0).await;
    assert!(nth_frame(&mut b, 1).await.is_some(), "B streams");
    // And B's client too: the engine holds nothing.
    drop(b);
    wait_for_stats(&engine, "after B's client left", |s| s.running == 0 && s.queued == 0 && s.kv_cache_bytes == 0).await;
}

/// Polls the engine's state until `done` holds (bounded: fails with the state last seen).
async fn wait_for_stats(engine: &TextEngine, what: &str, done: impl Fn(&hearth_engine::text::TextEngineStats) -> bool) {
    let mut seen = engine.stats();
    for _ in 0..600 {
        if done(&seen) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = engine.stats();
    }
    panic!("{what}: the engine's state is still {seen:?}");
}
