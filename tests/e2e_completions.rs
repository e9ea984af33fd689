//! POST /v1/completions: prompt forms, n/best_of, echo, logprobs, suffix,
//! stop, usage, logit_bias and streaming.
mod common;
use common::*;
use serde_json::{json, Value};

fn text(body: &Value, i: usize) -> String {
    body["choices"][i]["text"].as_str().unwrap_or_else(|| panic!("choice {i} has no text: {body}")).to_string()
}

/// The token strings of a completion's logprobs.
fn lp_tokens(body: &Value, i: usize) -> Vec<String> {
    body["choices"][i]["logprobs"]["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.tokens: {body}"))
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn string_prompt_shape_and_usage() {
    let server = shared();
    let body = ok(server, "/v1/completions", &completion(SMOL, json!("The capital of France is"), 6)).await;
    assert_envelope(&body, "text_completion", SMOL);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert!(choice["logprobs"].is_null(), "logprobs null unless asked: {body}");
    assert!(choice.as_object().unwrap().contains_key("logprobs"), "logprobs key present: {body}");
    let reason = choice["finish_reason"].as_str().unwrap_or_default();
    assert!(reason == "stop" || reason == "length", "{body}");
    let (p, c, _) = usage(&body);
    assert!((1..=6).contains(&c));
    // prompt_tokens is the model's own count: the echoed prompt has exactly that many tokens.
    let req = with(completion(SMOL, json!("The capital of France is"), 0), json!({"echo": true, "logprobs": 0}));
    let echoed = ok(server, "/v1/completions", &req).await;
    assert_eq!(lp_tokens(&echoed, 0).len() as u64, p, "{echoed}");
    assert_eq!(text(&echoed, 0), "The capital of France is");
}

#[tokio::test]
async fn token_list_prompt_counts_exactly() {
    let server = shared();
    let ids = json!([504, 3458, 282, 4649, 314]);
    let body = ok(server, "/v1/completions", &completion(SMOL, ids.clone(), 3)).await;
    assert_eq!(usage(&body).0, 5, "prompt_tokens equals the token list's length: {body}");
    // Echo of a token prompt reports exactly those tokens.
    let req = with(completion(SMOL, ids, 0), json!({"echo": true, "logprobs": 0}));
    let echo = ok(server, "/v1/completions", &req).await;
    assert_eq!(lp_tokens(&echo, 0).len(), 5, "{echo}");
}

#[tokio::test]
async fn list_prompts_give_one_choice_each() {
    let server = shared();
    let body = ok(server, "/v1/completions", &completion(SMOL, json!(["One, two,", "Red, green,"]), 3)).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{body}");
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    let single = ok(server, "/v1/completions", &completion(SMOL, json!("Red, green,"), 3)).await;
    assert_eq!(text(&body, 1), text(&single, 0), "each prompt is completed on its own");

    let body = ok(server, "/v1/completions", &completion(SMOL, json!([[504, 3458], [504, 3458, 282]]), 2)).await;
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    assert_eq!(usage(&body).0, 5, "prompt tokens of every prompt are counted: {body}");
}

#[tokio::test]
async fn n_and_best_of() {
    let server = shared();
    let req = with(completion(SMOL, json!("Once upon a time"), 4), json!({"n": 2, "temperature": 1.0, "seed": 3}));
    let body = ok(server, "/v1/completions", &req).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{body}");
    assert_eq!((choices[0]["index"].clone(), choices[1]["index"].clone()), (json!(0), json!(1)));

    // Two prompts x n=2: choices are indexed prompt-major.
    let req = with(completion(SMOL, json!(["A", "B"]), 2), json!({"n": 2, "temperature": 1.0}));
    let body = ok(server, "/v1/completions", &req).await;
    let idx: Vec<u64> = body["choices"].as_array().unwrap().iter().filter_map(|c| c["index"].as_u64()).collect();
    assert_eq!(idx, [0, 1, 2, 3], "{body}");

    let req = with(completion(SMOL, json!("Once upon a time"), 4), json!({"n": 2, "best_of": 3, "temperature": 1.0}));
    let body = ok(server, "/v1/completions", &req).await;
    assert_eq!(body["choices"].as_array().unwrap().len(), 2, "best_of returns n choices: {body}");

    let req = with(completion(SMOL, json!("x"), 2), json!({"n": 3, "best_of": 2}));
    let (status, body) = post(server, "/v1/completions", &req).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("best_of"), None);
}

/// Sum of a choice's token logprobs.
fn summed_logprob(choice: &Value) -> f64 {
    choice["logprobs"]["token_logprobs"].as_array().unwrap_or_else(|| panic!("token_logprobs: {choice}")).iter().map(|l| l.as_f64().unwrap()).sum()
}

#[tokio::test]
async fn best_of_returns_the_likeliest_candidate_and_counts_them_all() {
    let server = shared();
    // Sequence i of a seeded request samples with seed + i, so `n: 3` shows the three
    // candidates that `best_of: 3` ranks. With seed 2 the likeliest is the last one and
    // with seed 1 the middle one, so neither "first" nor "last" passes by chance.
    for seed in [1, 2] {
        let base = with(completion(SMOL, json!("Once upon a time"), 5), json!({"temperature": 1.0, "seed": seed, "logprobs": 0}));
        let all = ok(server, "/v1/completions", &with(base.clone(), json!({"n": 3}))).await;
        let candidates = all["choices"].as_array().unwrap();
        assert_eq!(candidates.len(), 3, "{all}");
        // All run to max_tokens: the highest sum is also the highest mean per token (OpenAI's rule).
        assert!(candidates.iter().all(|c| c["finish_reason"] == "length"), "{all}");
        let best = candidates.iter().max_by(|a, b| summed_logprob(a).total_cmp(&summed_logprob(b))).unwrap();

        let picked = ok(server, "/v1/completions", &with(base, json!({"n": 1, "best_of": 3}))).await;
        let choices = picked["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "{picked}");
        assert_eq!(choices[0]["text"], best["text"], "seed {seed}: best_of must return the candidate with the highest logprob; candidates {all}");
        assert!((summed_logprob(&choices[0]) - summed_logprob(best)).abs() < 1e-4, "{picked}");
        assert_eq!(usage(&picked), usage(&all), "usage counts every candidate, returned or not: {picked} vs {all}");
        assert_eq!(usage(&picked).1, 15, "{picked}");
    }
}

#[tokio::test]
async fn max_tokens_length_and_determinism() {
    let server = shared();
    let req = completion(SMOL, json!("def fibonacci(n):"), 7);
    let a = ok(server, "/v1/completions", &req).await;
    let b = ok(server, "/v1/completions", &req).await;
    assert_eq!(a["choices"][0]["finish_reason"], "length", "{a}");
    assert_eq!(usage(&a).1, 7);
    assert_eq!(text(&a, 0), text(&b, 0), "temperature 0 is deterministic");
    let seeded = with(completion(SMOL, json!("def fibonacci(n):"), 7), json!({"temperature": 1.2, "seed": 99}));
    let c = ok(server, "/v1/completions", &seeded).await;
    let d = ok(server, "/v1/completions", &seeded).await;
    assert_eq!(text(&c, 0), text(&d, 0), "same seed, same output");
}

#[tokio::test]
async fn stop_strings() {
    let server = shared();
    let base = completion(SMOL, json!("1, 2, 3, 4, 5,"), 12);
    let full = text(&ok(server, "/v1/completions", &base).await, 0);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    for stop_field in [json!(stop), json!(["zzzzqqq", stop])] {
        let body = ok(server, "/v1/completions", &with(base.clone(), json!({"stop": stop_field}))).await;
        assert_eq!(text(&body, 0), want, "text stops before {stop:?}");
        assert!(!text(&body, 0).contains(&stop));
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }
    let events = stream(server, "/v1/completions", &with(base, json!({"stop": stop, "stream": true}))).await;
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, want, "streaming never leaks the stop string");
}

#[tokio::test]
async fn echo_and_logprobs() {
    let server = shared();
    let prompt = "Hello, my name is";
    let req = with(completion(SMOL, json!(prompt), 3), json!({"echo": true, "logprobs": 2}));
    let body = ok(server, "/v1/completions", &req).await;
    let full = text(&body, 0);
    assert!(full.starts_with(prompt), "echo puts the prompt first: {full:?}");
    let lp = &body["choices"][0]["logprobs"];
    let tokens = lp_tokens(&body, 0);
    let token_lps = lp["token_logprobs"].as_array().expect("token_logprobs");
    let tops = lp["top_logprobs"].as_array().expect("top_logprobs");
    let offsets = lp["text_offset"].as_array().expect("text_offset");
    let (p, c, _) = usage(&body);
    assert_eq!(tokens.len() as u64, p + c, "prompt and completion tokens: {body}");
    assert_eq!(token_lps.len(), tokens.len());
    assert_eq!(tops.len(), tokens.len());
    assert_eq!(offsets.len(), tokens.len());
    assert_eq!(tokens.concat(), full, "tokens spell the text");
    assert!(token_lps[0].is_null(), "the first prompt token has no logprob: {lp}");
    assert!(tops[0].is_null(), "{lp}");
    let mut offset = 0u64;
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(offsets[i].as_u64(), Some(offset), "text_offset[{i}]: {lp}");
        offset += t.len() as u64;
        if i > 0 {
            assert!(token_lps[i].as_f64().is_some_and(|v| v <= 0.0), "{lp}");
            let top = tops[i].as_object().unwrap_or_else(|| panic!("top_logprobs[{i}]: {lp}"));
            assert!((1..=3).contains(&top.len()), "logprobs=2 gives 2 alternatives (+ the chosen one): {lp}");
        }
    }
}

#[tokio::test]
async fn logprobs_without_echo() {
    let server = shared();
    let req = with(completion(SMOL, json!("Hello, my name is"), 4), json!({"logprobs": 1}));
    let body = ok(server, "/v1/completions", &req).await;
    let tokens = lp_tokens(&body, 0);
    assert_eq!(tokens.len() as u64, usage(&body).1);
    assert_eq!(tokens.concat(), text(&body, 0));
    let lp = &body["choices"][0]["logprobs"];
    assert_eq!(lp["text_offset"][0], "Hello, my name is".len(), "offsets count from the prompt start: {lp}");
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 1, "{lp}");
        // Greedy: the chosen token is the single most likely one.
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((top.values().next().unwrap().as_f64().unwrap() - chosen).abs() < 1e-3, "{lp}");
    }
}

#[tokio::test]
async fn logit_bias_forces_a_token() {
    let server = shared();
    let forced = 1000;
    let echo = ok(server, "/v1/completions", &with(completion(SMOL, json!([forced]), 0), json!({"echo": true}))).await;
    let forced_text = text(&echo, 0);
    let req = with(completion(SMOL, json!("The weather today"), 4), json!({"logit_bias": {forced.to_string(): 100}}));
    let body = ok(server, "/v1/completions", &req).await;
    assert_eq!(text(&body, 0), forced_text.repeat(4), "+100 makes the token the only choice");
    // -100 bans: two tokens pushed up, one of them banned, leaves only the other.
    let other = 1001;
    let echo = ok(server, "/v1/completions", &with(completion(SMOL, json!([other]), 0), json!({"echo": true}))).await;
    let other_text = text(&echo, 0);
    let req = with(completion(SMOL, json!("The weather today"), 3), json!({"logit_bias": {forced.to_string(): -100, other.to_string(): 100}}));
    let body = ok(server, "/v1/completions", &req).await;
    assert_eq!(text(&body, 0), other_text.repeat(3), "{body}");
    let req = with(completion(SMOL, json!("The weather today"), 4), json!({"logit_bias": {forced.to_string(): -100}}));
    let body = ok(server, "/v1/completions", &with(req, json!({"logprobs": 0}))).await;
    assert!(!lp_tokens(&body, 0).contains(&forced_text), "{body}");
}

/// Generated tokens that repeat an earlier generated token.
fn repeated_tokens(tokens: &[String]) -> usize {
    tokens.iter().enumerate().filter(|(i, t)| tokens[..*i].contains(t)).count()
}

#[tokio::test]
async fn penalties_make_greedy_output_repeat_less() {
    let server = shared();
    let req = with(completion(SMOL, json!("I like"), 24), json!({"logprobs": 0}));
    let plain = ok(server, "/v1/completions", &req).await;
    let plain_repeats = repeated_tokens(&lp_tokens(&plain, 0));
    for penalty in ["presence_penalty", "frequency_penalty"] {
        let body = ok(server, "/v1/completions", &with(req.clone(), Value::Object([(penalty.to_string(), json!(2))].into_iter().collect()))).await;
        let repeats = repeated_tokens(&lp_tokens(&body, 0));
        assert!(repeats < plain_repeats, "{penalty} 2 repeats {repeats} tokens, no penalty {plain_repeats}: {body} vs {plain}");
    }
}

#[tokio::test]
async fn suffix_on_qwen_inserts() {
    let server = shared();
    // The only sensible middle is the function's name, which only the suffix tells.
    let suffix = "(a, b):\n    return a * b\n\n\nprint(multiply(6, 7))\n";
    for model in [QWEN, "code-davinci-002"] {
        let req = with(completion(model, json!("def "), 8), json!({"suffix": suffix}));
        let body = ok(server, "/v1/completions", &req).await;
        assert_eq!(text(&body, 0).trim(), "multiply", "{model}: the middle between the prefix and the suffix: {body}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "the middle ends where the suffix begins: {body}");
    }
    // Without the suffix the model names some other function.
    let body = ok(server, "/v1/completions", &completion(QWEN, json!("def "), 8)).await;
    assert!(!text(&body, 0).starts_with("multiply"), "{body}");
}

#[tokio::test]
async fn suffix_on_smollm2_is_400() {
    let server = shared();
    let req = with(completion(SMOL, json!("def add(a, b):"), 4), json!({"suffix": "return x"}));
    let (status, body) = post(server, "/v1/completions", &req).await;
    let msg = assert_error(status, &body, 400, "invalid_request_error", Some("suffix"), None);
    assert!(msg.to_lowercase().contains("suffix"), "{msg}");
}

#[tokio::test]
async fn base_model_completes() {
    let server = shared();
    let body = ok(server, "/v1/completions", &completion(GEMMA, json!("The sun rises in the"), 4)).await;
    assert!(usage(&body).1 >= 1);
    let body = ok(server, "/v1/completions", &completion("davinci", json!([[2, 818, 3768]]), 2)).await;
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn stream_framing_and_text() {
    let server = shared();
    let req = completion(SMOL, json!("Once upon a time"), 6);
    let plain = ok(server, "/v1/completions", &req).await;
    let events = stream(server, "/v1/completions", &with(req, json!({"stream": true, "stream_options": {"include_usage": true}}))).await;
    let (usage_event, chunks) = events.split_last().expect("events");
    assert_eq!(usage_event["choices"], json!([]), "{usage_event}");
    assert_eq!(usage(usage_event), usage(&plain));
    let id = chunks[0]["id"].clone();
    let (last, rest) = chunks.split_last().unwrap();
    for e in chunks {
        assert_eq!(e["object"], "text_completion", "{e}");
        assert_eq!(e["id"], id);
        assert_eq!(e["model"], SMOL);
        assert!(e["usage"].is_null(), "{e}");
    }
    for e in rest {
        assert!(e["choices"][0]["finish_reason"].is_null(), "{e}");
    }
    assert_eq!(last["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
    let streamed: String = chunks.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, text(&plain, 0));
}

#[tokio::test]
async fn context_length_exceeded() {
    let server = shared();
    // davinci's window is 2,049 tokens.
    let (status, body) = post(server, "/v1/completions", &completion("davinci", json!("Hello"), 3000)).await;
    assert_error_shape(&body);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("This model's maximum context length is 2049 tokens"), "{msg}");
    // A token-list prompt longer than the window.
    let ids: Vec<u32> = vec![818; 2100];
    let (status, body) = post(server, "/v1/completions", &completion("davinci", json!(ids), 1)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
}
