//! A table of bad requests with the exact OpenAI error each must get
//! (status, type, param, code), and the exact shape of every error body.
mod common;
use common::*;
use serde_json::{json, Value};

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const BAD: &str = "invalid_request_error";

struct Case {
    name: &'static str,
    path: &'static str,
    /// The raw request body.
    body: String,
    status: u16,
    param: Option<&'static str>,
    code: Option<&'static str>,
    /// A piece of OpenAI's message that must appear ("" = any message).
    says: &'static str,
}

fn chat_with(extra: Value) -> String {
    with(json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}), extra).to_string()
}

fn completion_with(extra: Value) -> String {
    with(json!({"model": SMOL, "prompt": "Hi", "max_tokens": 1}), extra).to_string()
}

fn without(body: Value, key: &str) -> String {
    let mut body = body;
    body.as_object_mut().map(|o| o.remove(key));
    body.to_string()
}

/// A 400 invalid_request_error about `param` (validation errors carry no code, as in 2023).
fn bad(name: &'static str, path: &'static str, body: String, param: Option<&'static str>, says: &'static str) -> Case {
    Case { name, path, body, status: 400, param, code: None, says }
}

fn cases() -> Vec<Case> {
    let chat_base = json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]});
    let completion_base = json!({"model": SMOL, "prompt": "Hi"});
    let five = json!({"stop": ["a", "b", "c", "d", "e"]});
    vec![
        bad("malformed json", CHAT, r#"{"model": "x", "messages": ["#.into(), None, "could not parse the JSON body"),
        bad("body not an object", CHAT, "[1, 2]".into(), None, "is not of type 'object'"),
        bad("empty body", COMPLETIONS, String::new(), None, ""),
        bad("temperature wrong type", CHAT, chat_with(json!({"temperature": "hot"})), Some("temperature"), "'hot' is not of type 'number' - 'temperature'"),
        bad("messages wrong type", CHAT, chat_with(json!({"messages": "Hi"})), Some("messages"), "'Hi' is not of type 'array' - 'messages'"),
        bad("stream wrong type", CHAT, chat_with(json!({"stream": "yes"})), Some("stream"), "is not of type 'boolean'"),
        bad(
            "max_tokens wrong type",
            COMPLETIONS,
            completion_with(json!({"max_tokens": "many"})),
            Some("max_tokens"),
            "'many' is not of type 'integer' - 'max_tokens'",
        ),
        bad("n fractional", CHAT, chat_with(json!({"n": 1.5})), Some("n"), "is not of type 'integer'"),
        bad("prompt wrong type", COMPLETIONS, completion_with(json!({"prompt": 42})), Some("prompt"), "is not valid under any of the given schemas - 'prompt'"),
        bad("prompt mixed list", COMPLETIONS, completion_with(json!({"prompt": [1, "a"]})), Some("prompt"), ""),
        bad("missing model (chat)", CHAT, without(chat_base.clone(), "model"), None, "you must provide a model parameter"),
        bad("missing model (completions)", COMPLETIONS, without(completion_base.clone(), "model"), None, "you must provide a model parameter"),
        bad("missing messages", CHAT, without(chat_base, "messages"), Some("messages"), "'messages' is a required property"),
        bad("missing prompt", COMPLETIONS, without(completion_base, "prompt"), Some("prompt"), "'prompt' is a required property"),
        bad("missing content", CHAT, chat_with(json!({"messages": [{"role": "user"}]})), Some("messages.0"), "'content' is a required property"),
        bad("missing role", CHAT, chat_with(json!({"messages": [{"content": "Hi"}]})), Some("messages.0"), "'role' is a required property"),
        bad("temperature too high", CHAT, chat_with(json!({"temperature": 2.5})), Some("temperature"), "2.5 is greater than the maximum of 2 - 'temperature'"),
        bad(
            "temperature negative",
            COMPLETIONS,
            completion_with(json!({"temperature": -0.5})),
            Some("temperature"),
            "-0.5 is less than the minimum of 0 - 'temperature'",
        ),
        bad("top_p too high", CHAT, chat_with(json!({"top_p": 1.5})), Some("top_p"), "greater than the maximum of 1"),
        bad("presence_penalty too high", CHAT, chat_with(json!({"presence_penalty": 3})), Some("presence_penalty"), "greater than the maximum of 2"),
        bad(
            "frequency_penalty too low",
            COMPLETIONS,
            completion_with(json!({"frequency_penalty": -3})),
            Some("frequency_penalty"),
            "less than the minimum of -2",
        ),
        bad("n zero", CHAT, chat_with(json!({"n": 0})), Some("n"), "0 is less than the minimum of 1 - 'n'"),
        bad("n too high", COMPLETIONS, completion_with(json!({"n": 129})), Some("n"), "greater than the maximum of 128"),
        bad("max_tokens negative", COMPLETIONS, completion_with(json!({"max_tokens": -1})), Some("max_tokens"), "less than the minimum of 0"),
        bad("logprobs too high", COMPLETIONS, completion_with(json!({"logprobs": 6})), Some("logprobs"), "6 is greater than the maximum of 5 - 'logprobs'"),
        bad("top_logprobs too high", CHAT, chat_with(json!({"logprobs": true, "top_logprobs": 21})), Some("top_logprobs"), "greater than the maximum of 20"),
        bad("top_logprobs without logprobs", CHAT, chat_with(json!({"top_logprobs": 2})), Some("top_logprobs"), "'logprobs' must be set to true"),
        bad("five stop strings", CHAT, chat_with(five.clone()), Some("stop"), "is too long - 'stop'"),
        bad("five stop strings (completions)", COMPLETIONS, completion_with(five), Some("stop"), "is too long - 'stop'"),
        bad("stop wrong type", CHAT, chat_with(json!({"stop": 5})), Some("stop"), ""),
        bad("logit_bias out of range", CHAT, chat_with(json!({"logit_bias": {"10": 101}})), Some("logit_bias"), ""),
        bad("logit_bias bad key", COMPLETIONS, completion_with(json!({"logit_bias": {"ten": 1}})), Some("logit_bias"), ""),
        bad("stream_options without stream", CHAT, chat_with(json!({"stream_options": {"include_usage": true}})), Some("stream_options"), ""),
        bad("best_of below n", COMPLETIONS, completion_with(json!({"n": 3, "best_of": 2})), Some("best_of"), ""),
        bad("empty messages", CHAT, chat_with(json!({"messages": []})), Some("messages"), "[] is too short - 'messages'"),
        bad("bad role", CHAT, chat_with(json!({"messages": [{"role": "robot", "content": "Hi"}]})), Some("messages.0.role"), "'robot' is not one of"),
        bad("unknown field", CHAT, chat_with(json!({"frobnicate": true})), None, "Unrecognized request argument supplied: frobnicate"),
        bad("unknown field (completions)", COMPLETIONS, completion_with(json!({"frobnicate": 1})), None, "Unrecognized request argument supplied: frobnicate"),
        Case {
            name: "unknown model (chat)",
            path: CHAT,
            body: chat_with(json!({"model": "no-such-model"})),
            status: 404,
            param: None,
            code: Some("model_not_found"),
            says: "The model `no-such-model` does not exist",
        },
        Case {
            name: "unknown model (completions)",
            path: COMPLETIONS,
            body: completion_with(json!({"model": "no-such-model"})),
            status: 404,
            param: None,
            code: Some("model_not_found"),
            says: "The model `no-such-model` does not exist",
        },
    ]
}

#[tokio::test]
async fn bad_inputs_table() {
    let server = shared();
    let http = client();
    let mut failures = Vec::new();
    for c in cases() {
        let resp = http.post(server.url(c.path)).header("content-type", "application/json").body(c.body.clone()).send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let outcome = std::panic::catch_unwind(|| {
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
            let message = assert_error(status, &body, c.status, BAD, c.param, c.code);
            assert!(message.contains(c.says), "message {message:?} should say {:?}", c.says);
        });
        if outcome.is_err() {
            failures.push(format!("{} ({}): got {status} {text}", c.name, c.path));
        }
    }
    assert!(failures.is_empty(), "{} of the bad inputs got the wrong error:\n{}", failures.len(), failures.join("\n"));
    // None of it hurt the server.
    ok(server, CHAT, &chat(SMOL, "Hi", 1)).await;
}

#[tokio::test]
async fn unknown_model_names_it() {
    let server = shared();
    let (status, body) = post(server, CHAT, &chat("no-such-model", "Hi", 1)).await;
    let msg = assert_error(status, &body, 404, BAD, None, Some("model_not_found"));
    assert!(msg.contains("no-such-model"), "{msg}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = shared();
    // One byte over the 4 MiB limit: the server reads the whole body before it
    // can tell, so the answer always arrives (a far larger upload may be cut
    // off by the server closing the connection while the client still sends).
    let head = json!({"model": SMOL, "max_tokens": 1, "prompt": ""}).to_string();
    let pad = hearth_server::BODY_LIMIT + 1 - head.len();
    let body = head.replacen(r#""prompt":"""#, &format!(r#""prompt":"{}""#, "a".repeat(pad)), 1);
    assert_eq!(body.len(), hearth_server::BODY_LIMIT + 1);
    let resp = client().post(server.url(COMPLETIONS)).header("content-type", "application/json").body(body).send().await.expect("send");
    let (status, body) = read_json(resp).await;
    assert_error(status, &body, 413, BAD, None, None);
    ok(server, COMPLETIONS, &completion(SMOL, json!("Hi"), 1)).await;
}

#[tokio::test]
async fn wrong_content_type_is_openai_error() {
    let server = shared();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = client().post(server.url(CHAT)).header("content-type", content_type).body(chat(SMOL, "Hi", 1).to_string()).send().await.expect("send");
        let (status, body) = read_json(resp).await;
        let msg = assert_error(status, &body, 400, BAD, None, Some("unsupported_content_type"));
        assert!(msg.contains(content_type), "the message names the type sent: {msg}");
    }
    // Parameters of application/json, such as a charset, are fine.
    let resp = client().post(server.url(CHAT)).header("content-type", "application/json; charset=utf-8").body(chat(SMOL, "Hi", 1).to_string()).send().await;
    assert_eq!(resp.expect("send").status(), 200);
}

#[tokio::test]
async fn wrong_method_is_openai_error() {
    let server = shared();
    let resp = client().get(server.url(CHAT)).send().await.expect("send");
    let (status, body) = read_json(resp).await;
    assert!(status == 405 || status == 404, "{status} {body}");
    assert_error_shape(&body);
}
