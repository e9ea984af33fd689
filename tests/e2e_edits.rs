//! POST /v1/edits on the real server: the response shape, `n`, usage, a real
//! edit decoded greedily, OpenAI's errors, and the deprecated edit model names
//! (refused from OpenAI's shutdown date on, served again when a user catalog
//! redefines them).
mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// A user catalog that brings `text-davinci-edit-001` back without its date;
/// `code-davinci-edit-001` keeps the built-in entry (deprecated).
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let toml = format!("[[aliases]]\nid = \"text-davinci-edit-001\"\ntarget = \"{QWEN}\"\nendpoints = [\"edits\"]\ncreated = 1649809179\n");
        let path = std::env::temp_dir().join(format!("hearth-e2e-edits-{}.toml", std::process::id()));
        std::fs::write(&path, toml).expect("write the user catalog");
        let models = format!("{SMOL},{QWEN},{GEMMA}");
        Server::start(&["--catalog", path.to_str().unwrap(), "--models", &models], None)
    })
}

fn edit(model: &str, input: &str, instruction: &str) -> Value {
    json!({"model": model, "input": input, "instruction": instruction, "temperature": 0})
}

fn texts(body: &Value) -> Vec<String> {
    body["choices"].as_array().unwrap_or_else(|| panic!("choices: {body}")).iter().map(|c| c["text"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn fixes_the_spelling_with_openai_shape() {
    let body = ok(server(), "/v1/edits", &edit(QWEN, "What day of the wek is it?", "Fix the spelling mistakes.")).await;
    let obj = body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["choices", "created", "object", "usage"], "{body}");
    assert_eq!(body["object"], "edit");
    assert!(body["created"].as_i64().is_some_and(|c| c > 1_600_000_000), "{body}");
    let choice = body["choices"][0].as_object().unwrap();
    assert_eq!(choice.len(), 2, "a choice is {{text, index}}: {body}");
    assert_eq!(body["choices"][0]["index"], 0);
    let text = &texts(&body)[0];
    assert!(text.contains("week"), "the misspelled word is fixed: {text:?}");
    assert!(!text.contains("wek "), "the misspelling is gone: {text:?}");
    let (p, c, _) = usage(&body);
    assert!(p > 10, "the prompt holds the instruction, the input and the template: {body}");
    assert!(c >= 1, "{body}");
}

#[tokio::test]
async fn n_choices_and_their_usage() {
    let req = json!({"model": QWEN, "input": "The cat sat on the mat.", "instruction": "Make it plural.", "n": 3, "temperature": 1.0, "top_p": 0.9});
    let body = ok(server(), "/v1/edits", &req).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{body}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{body}");
    }
    let (p3, c3, _) = usage(&body);
    assert!(c3 >= 3, "every choice's tokens are counted: {body}");
    // The prompt is counted once, whatever n.
    let one = ok(server(), "/v1/edits", &with(req.clone(), json!({"n": 1}))).await;
    assert_eq!(usage(&one).0, p3, "{one}");
    // Greedy decoding: every choice is the same edit.
    let greedy = ok(server(), "/v1/edits", &with(req, json!({"n": 2, "temperature": 0}))).await;
    let t = texts(&greedy);
    assert_eq!(t[0], t[1], "{greedy}");
}

#[tokio::test]
async fn input_defaults_to_empty() {
    let body = ok(server(), "/v1/edits", &json!({"model": SMOL, "instruction": "Write the word hello.", "temperature": 0})).await;
    assert_eq!(body["object"], "edit");
    assert_eq!(texts(&body).len(), 1);
}

#[tokio::test]
async fn a_user_catalog_serves_the_edit_model_name_again() {
    let body = ok(server(), "/v1/edits", &edit("text-davinci-edit-001", "What day of the wek is it?", "Fix the spelling mistakes.")).await;
    let direct = ok(server(), "/v1/edits", &edit(QWEN, "What day of the wek is it?", "Fix the spelling mistakes.")).await;
    assert_eq!(texts(&body), texts(&direct), "the name is the Qwen coder");
}

#[tokio::test]
async fn errors_in_openai_shapes() {
    let s = server();
    let (status, body) = post(s, "/v1/edits", &json!({"model": QWEN, "input": "x"})).await;
    let msg = assert_error(status, &body, 400, "invalid_request_error", Some("instruction"), None);
    assert_eq!(msg, "'instruction' is a required property");
    let (status, body) = post(s, "/v1/edits", &json!({"model": QWEN, "instruction": "x", "n": 21})).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("n"), None);
    let (status, body) = post(s, "/v1/edits", &json!({"model": QWEN, "instruction": "x", "input": 3})).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("input"), None);
    let (status, body) = post(s, "/v1/edits", &json!({"model": "no-such-model", "instruction": "x"})).await;
    assert_error(status, &body, 404, "invalid_request_error", None, Some("model_not_found"));
    // A model that cannot edit: the base model, a chat-only name.
    for model in [GEMMA, "gpt-3.5-turbo"] {
        let (status, body) = post(s, "/v1/edits", &json!({"model": model, "instruction": "x"})).await;
        let msg = assert_error(status, &body, 404, "invalid_request_error", Some("model"), None);
        assert!(msg.contains("v1/edits"), "{msg}");
    }
    // The built-in edit model name is past OpenAI's shutdown: refused, naming the replacement.
    let (status, body) = post(s, "/v1/edits", &json!({"model": "code-davinci-edit-001", "instruction": "x"})).await;
    let msg = assert_error(status, &body, 404, "invalid_request_error", None, Some("model_not_found"));
    assert_eq!(msg, "The model `code-davinci-edit-001` has been deprecated since 2024-01-04. Use `gpt-3.5-turbo` instead.");
    // Edits are not a completions model.
    let (status, body) = post(s, "/v1/completions", &json!({"model": "text-davinci-edit-001", "prompt": "x"})).await;
    assert_eq!(status, 404, "{body}");
    assert_error_shape(&body);
}
