//! POST /v1/chat/completions: responses, streaming framing, sampling fields,
//! logprobs, usage and the context window.
mod common;
use common::*;
use serde_json::{json, Value};

fn content(body: &Value, i: usize) -> String {
    body["choices"][i]["message"]["content"].as_str().unwrap_or_else(|| panic!("choice {i} has no content: {body}")).to_string()
}

#[tokio::test]
async fn non_stream_response_shape() {
    let server = shared();
    let body = ok(server, "/v1/chat/completions", &chat(SMOL, "What is 2+2?", 8)).await;
    assert_envelope(&body, "chat.completion", SMOL);
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert!(!content(&body, 0).is_empty());
    let reason = choices[0]["finish_reason"].as_str().unwrap_or_default();
    assert!(reason == "stop" || reason == "length", "{body}");
    let (p, c, _) = usage(&body);
    assert!(p > 5, "the prompt holds the chat template and the message: {body}");
    assert!((1..=8).contains(&c), "{body}");
}

#[tokio::test]
async fn max_tokens_gives_length_with_exact_count() {
    let server = shared();
    let req = chat(SMOL, "Write a long story about a dragon.", 5);
    let body = ok(server, "/v1/chat/completions", &req).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(usage(&body).1, 5, "{body}");
    // `max_completion_tokens` is the newer name for the same limit.
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                     "max_completion_tokens": 3, "temperature": 0});
    let body = ok(server, "/v1/chat/completions", &req).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(usage(&body).1, 3, "{body}");
}

#[tokio::test]
async fn temperature_zero_is_deterministic_and_stream_matches() {
    let server = shared();
    let req = chat(SMOL, "Name three colors.", 8);
    let a = ok(server, "/v1/chat/completions", &req).await;
    let b = ok(server, "/v1/chat/completions", &req).await;
    assert_eq!(content(&a, 0), content(&b, 0));
    let events = stream(server, "/v1/chat/completions", &with(req, json!({"stream": true}))).await;
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, content(&a, 0), "streamed text must equal the non-stream text");
}

#[tokio::test]
async fn same_seed_same_output() {
    let server = shared();
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Tell me a word."}],
                     "max_tokens": 12, "temperature": 1.0, "seed": 1234});
    let a = ok(server, "/v1/chat/completions", &req).await;
    let b = ok(server, "/v1/chat/completions", &req).await;
    assert_eq!(content(&a, 0), content(&b, 0));
}

/// Checks OpenAI's chat SSE framing and returns (text, finish_reason, usage chunk).
fn check_chat_stream(events: &[Value], model: &str, include_usage: bool) -> (String, String, Option<Value>) {
    assert!(events.len() >= 2, "at least a role chunk and a finish chunk: {events:?}");
    let id = events[0]["id"].as_str().expect("id").to_string();
    let created = events[0]["created"].clone();
    for e in events {
        assert_eq!(e["object"], "chat.completion.chunk", "{e}");
        assert_eq!(e["id"], id.as_str(), "one id per stream: {e}");
        assert_eq!(e["created"], created, "{e}");
        assert_eq!(e["model"], model, "{e}");
    }
    let (choice_events, usage_event) = if include_usage {
        let (last, rest) = events.split_last().unwrap();
        assert_eq!(last["choices"], json!([]), "the usage chunk has no choices: {last}");
        assert!(last["usage"].is_object(), "{last}");
        for e in rest {
            assert!(e["usage"].is_null(), "usage is null before the last chunk: {e}");
            assert!(e.as_object().unwrap().contains_key("usage"), "usage: null is present with include_usage: {e}");
        }
        (rest, Some(last.clone()))
    } else {
        for e in events {
            assert!(e["usage"].is_null(), "no usage without include_usage: {e}");
        }
        (events, None)
    };
    let first = &choice_events[0]["choices"][0];
    assert_eq!(first["delta"]["role"], "assistant", "the first chunk carries the role: {first}");
    assert!(first["delta"]["content"].as_str().unwrap_or("").is_empty(), "{first}");
    let mut text = String::new();
    let (last, middle) = choice_events.split_last().unwrap();
    for (i, e) in middle.iter().enumerate() {
        let choice = &e["choices"][0];
        assert_eq!(e["choices"].as_array().map(Vec::len), Some(1), "{e}");
        assert_eq!(choice["index"], 0);
        assert!(choice["finish_reason"].is_null(), "finish_reason only on the last chunk: {e}");
        if i > 0 {
            assert!(choice["delta"].get("role").is_none(), "role only in the first chunk: {e}");
            text.push_str(choice["delta"]["content"].as_str().unwrap_or_else(|| panic!("delta content: {e}")));
        }
    }
    let fin = &last["choices"][0];
    let reason = fin["finish_reason"].as_str().unwrap_or_else(|| panic!("last chunk needs finish_reason: {last}"));
    text.push_str(fin["delta"]["content"].as_str().unwrap_or(""));
    (text, reason.to_string(), usage_event)
}

#[tokio::test]
async fn stream_framing() {
    let server = shared();
    let req = with(chat(SMOL, "Say hello.", 6), json!({"stream": true}));
    let events = stream(server, "/v1/chat/completions", &req).await;
    let (text, reason, usage_chunk) = check_chat_stream(&events, SMOL, false);
    assert!(usage_chunk.is_none());
    assert!(reason == "stop" || reason == "length");
    assert!(!text.is_empty());
}

#[tokio::test]
async fn stream_include_usage() {
    let server = shared();
    let req = with(chat(SMOL, "Say hello.", 4), json!({"stream": true, "stream_options": {"include_usage": true}}));
    let events = stream(server, "/v1/chat/completions", &req).await;
    let (_, reason, usage_chunk) = check_chat_stream(&events, SMOL, true);
    let usage_chunk = usage_chunk.unwrap();
    let (p, c, _) = usage(&usage_chunk);
    let plain = ok(server, "/v1/chat/completions", &chat(SMOL, "Say hello.", 4)).await;
    assert_eq!(usage(&plain), (p, c, p + c), "stream usage equals non-stream usage");
    if reason == "length" {
        assert_eq!(c, 4);
    }
}

#[tokio::test]
async fn n_gives_n_choices() {
    let server = shared();
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Pick a number."}],
                     "max_tokens": 4, "n": 3, "temperature": 1.0, "seed": 7});
    let body = ok(server, "/v1/chat/completions", &req).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{body}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{body}");
        assert_eq!(c["message"]["role"], "assistant");
    }
    let (p, c, _) = usage(&body);
    assert!(p > 0 && (3..=12).contains(&c), "completion tokens count every choice: {body}");
}

#[tokio::test]
async fn n_stream_has_every_index() {
    let server = shared();
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Pick a number."}],
                     "max_tokens": 3, "n": 2, "temperature": 1.0, "stream": true});
    let events = stream(server, "/v1/chat/completions", &req).await;
    for index in 0..2 {
        let mine: Vec<&Value> = events.iter().filter(|e| e["choices"][0]["index"] == index).collect();
        assert!(mine.len() >= 2, "index {index}: {events:?}");
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(mine.last().unwrap()["choices"][0]["finish_reason"].is_string());
    }
}

#[tokio::test]
async fn stop_string_cuts_output() {
    let server = shared();
    let base = chat(SMOL, "Count from 1 to 20, separated by commas.", 12);
    let full = content(&ok(server, "/v1/chat/completions", &base).await, 0);
    let stop = pick_stop(&full);
    let cut = ok(server, "/v1/chat/completions", &with(base.clone(), json!({"stop": stop}))).await;
    let text = content(&cut, 0);
    assert!(!text.contains(&stop), "output contains the stop string {stop:?}: {text:?}");
    assert_eq!(text, full[..full.find(&stop).unwrap()], "output is the text before the stop string");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    // A list works too, and streaming never leaks the stop string either.
    let req = with(base, json!({"stop": ["@@never@@", stop.clone()], "stream": true}));
    let events = stream(server, "/v1/chat/completions", &req).await;
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
}

/// A stop string that occurs in the middle of `full` (a few characters after its start).
pub fn pick_stop(full: &str) -> String {
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "need some output to cut: {full:?}");
    let start = chars.len() / 2;
    chars[start..(start + 2).min(chars.len())].iter().collect()
}

#[tokio::test]
async fn logit_bias_forces_a_token() {
    let server = shared();
    // Token 1000 of SmolLM2's vocabulary is an ordinary word piece.
    let req = with(chat(SMOL, "Hello", 4), json!({"logit_bias": {"1000": 100}, "logprobs": true}));
    let body = ok(server, "/v1/chat/completions", &req).await;
    let tokens: Vec<&str> = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.content: {body}"))
        .iter()
        .map(|t| t["token"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(tokens.len(), 4, "{body}");
    assert!(tokens.iter().all(|t| *t == tokens[0]), "every token is the biased one: {tokens:?}");
    assert_eq!(content(&body, 0), tokens.concat());
}

/// Generated tokens that repeat an earlier generated token.
fn repeated_tokens(body: &Value) -> usize {
    let tokens: Vec<&str> = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.content: {body}"))
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    tokens.iter().enumerate().filter(|(i, t)| tokens[..*i].contains(t)).count()
}

#[tokio::test]
async fn penalties_make_greedy_output_repeat_less() {
    let server = shared();
    let req = with(chat(SMOL, "Write a short poem about the sea.", 24), json!({"logprobs": true}));
    let plain = repeated_tokens(&ok(server, "/v1/chat/completions", &req).await);
    for penalty in [json!({"presence_penalty": 2}), json!({"frequency_penalty": 2})] {
        let body = ok(server, "/v1/chat/completions", &with(req.clone(), penalty.clone())).await;
        assert!(repeated_tokens(&body) < plain, "{penalty}: {} repeated tokens, {plain} without: {body}", repeated_tokens(&body));
    }
    let req =
        with(chat(SMOL, "Repeat: a a a a a", 8), json!({"presence_penalty": -2, "frequency_penalty": -2, "top_p": 0.5, "temperature": 0.7, "user": "u-1"}));
    ok(server, "/v1/chat/completions", &req).await;
}

const WEATHER_TOOL: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

/// OpenAI's tool call: `id` "call_…", `type` "function", `function.name`, and
/// `function.arguments` a string holding JSON. Returns the parsed arguments.
fn assert_tool_call(call: &Value, name: &str) -> Value {
    let id = call["id"].as_str().unwrap_or_else(|| panic!("id: {call}"));
    assert!(id.strip_prefix("call_").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())), "id {id:?}");
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(call["function"]["name"], name, "{call}");
    let arguments = call["function"]["arguments"].as_str().unwrap_or_else(|| panic!("arguments must be a string: {call}"));
    serde_json::from_str(arguments).unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {arguments:?}"))
}

#[tokio::test]
async fn tool_calls_have_openais_shape() {
    let server = shared();
    let tools: Value = serde_json::from_str(WEATHER_TOOL).unwrap();
    let req = with(
        chat("gpt-4", "What is the weather in Paris?", 40),
        json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    let body = ok(server, "/v1/chat/completions", &req).await;
    // The 2023 contract predates `tool_calls` (its finish reasons end at
    // `function_call`): the call is checked against OpenAI's current shape.
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert!(message.as_object().unwrap().contains_key("content") && message["content"].is_null(), "content is null beside tool calls: {body}");
    let calls = message["tool_calls"].as_array().unwrap_or_else(|| panic!("tool_calls: {body}"));
    assert_eq!(calls.len(), 1, "{body}");
    let arguments = assert_tool_call(&calls[0], "get_weather");
    assert!(arguments["city"].is_string(), "{arguments}");

    // Streamed: the call's first delta carries index, id, type and name; the
    // arguments arrive as string fragments that join to the same JSON.
    let events = stream(server, "/v1/chat/completions", &with(req, json!({"stream": true}))).await;
    let deltas: Vec<&Value> = events.iter().filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    let first = deltas.first().unwrap_or_else(|| panic!("no tool-call deltas: {events:?}"));
    assert_eq!(first["index"], 0, "{first}");
    let joined: String = deltas.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
    let streamed = json!({"id": first["id"], "type": first["type"], "function": {"name": first["function"]["name"], "arguments": joined}});
    assert_eq!(assert_tool_call(&streamed, "get_weather"), arguments, "streamed and whole calls agree");
    assert!(deltas[1..].iter().all(|d| d.get("id").is_none() && d["index"] == 0), "later deltas only extend call 0: {deltas:?}");
    let last = events.iter().rev().find(|e| e["choices"][0]["finish_reason"].is_string()).expect("a finish_reason");
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn logprobs_and_top_logprobs() {
    let server = shared();
    let req = with(chat(SMOL, "Hi there", 5), json!({"logprobs": true, "top_logprobs": 3}));
    let body = ok(server, "/v1/chat/completions", &req).await;
    let entries = body["choices"][0]["logprobs"]["content"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(entries.len() as u64, usage(&body).1, "one entry per completion token");
    let mut joined = String::new();
    for e in entries {
        let token = e["token"].as_str().expect("token");
        joined.push_str(token);
        let lp = e["logprob"].as_f64().expect("logprob");
        assert!(lp <= 0.0, "{e}");
        assert!(e["bytes"].is_array(), "bytes: {e}");
        let top = e["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 3, "{e}");
        let best = top[0]["logprob"].as_f64().unwrap();
        // Greedy: the chosen token is the most likely one.
        assert!((best - lp).abs() < 1e-3, "greedy picks the top token: {e}");
        for w in top.windows(2) {
            assert!(w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64(), "most likely first: {e}");
        }
    }
    assert_eq!(joined, content(&body, 0));
    // Without logprobs the field is null.
    let body = ok(server, "/v1/chat/completions", &chat(SMOL, "Hi there", 2)).await;
    assert!(body["choices"][0]["logprobs"].is_null(), "{body}");
}

#[tokio::test]
async fn stream_logprobs() {
    let server = shared();
    let req = with(chat(SMOL, "Hi there", 3), json!({"logprobs": true, "top_logprobs": 2, "stream": true}));
    let events = stream(server, "/v1/chat/completions", &req).await;
    let count: usize = events.iter().filter_map(|e| e["choices"][0]["logprobs"]["content"].as_array()).map(Vec::len).sum();
    assert!((1..=3).contains(&count), "streamed logprobs entries: {events:?}");
}

#[tokio::test]
async fn system_and_multi_turn_messages() {
    let server = shared();
    let req = json!({"model": "gpt-4", "max_tokens": 2, "temperature": 0, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye", "name": "bob"}]});
    let body = ok(server, "/v1/chat/completions", &req).await;
    assert_envelope(&body, "chat.completion", "gpt-4");
}

#[tokio::test]
async fn context_length_exceeded() {
    let server = shared();
    // gpt-3.5-turbo's window is 4,096 tokens.
    let req = chat("gpt-3.5-turbo", "Hello there", 5000);
    let (status, body) = post(server, "/v1/chat/completions", &req).await;
    let msg = assert_error(status, &body, 400, "invalid_request_error", Some("messages"), Some("context_length_exceeded"));
    assert!(msg.starts_with("This model's maximum context length is 4096 tokens. However, you requested "), "{msg}");
    let p = usage(&ok(server, "/v1/chat/completions", &chat("gpt-3.5-turbo", "Hello there", 1)).await).0;
    let want = format!("you requested {} tokens ({p} in the messages, 5000 in the completion)", p + 5000);
    assert!(msg.contains(&want), "{msg:?} should contain {want:?}");
    // A long prompt alone also overflows.
    let long = "word ".repeat(5000);
    let (status, body) = post(server, "/v1/chat/completions", &chat("gpt-3.5-turbo", &long, 1)).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("messages"), Some("context_length_exceeded"));
}
