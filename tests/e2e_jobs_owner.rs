//! Jobs against the real binary with stored keys: fine-tuning jobs, legacy
//! fine-tunes and batches belong to the key that created them (another key
//! gets OpenAI's 404 for an unknown id, an admin key sees them all); a new
//! fine-tuning job is `validating_files` before `queued`, and its events say
//! so; a batch's requests are counted in usage like the same requests sent
//! directly. SQLite store (the store suite runs the same queries on PostgreSQL).
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Keys {
    alice: String,
    bob: String,
    admin: String,
}

fn create_key(dir: &Path, name: &str, admin: bool) -> String {
    let mut args = vec!["--state-dir", dir.to_str().unwrap(), "keys", "create", "--name", name];
    if admin {
        args.push("--admin");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth")).args(&args).output().expect("run hearth keys create");
    assert!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A data directory of its own (fine-tuned outputs never land in the shared cache),
/// its models linked from the cache.
fn home() -> PathBuf {
    jobs::linked_home("owner", &[GEMMA, SMOL])
}

async fn call(server: &Server, key: &str, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = client().request(method, server.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(b);
    }
    read_json(req.send().await.unwrap()).await
}

async fn get_as(server: &Server, key: &str, path: &str) -> (u16, Value) {
    call(server, key, reqwest::Method::GET, path, None).await
}

async fn post_as(server: &Server, key: &str, path: &str, body: &Value) -> (u16, Value) {
    call(server, key, reqwest::Method::POST, path, Some(body)).await
}

async fn upload(server: &Server, key: &str, purpose: &str, text: String) -> String {
    jobs::upload(server, Some(key), purpose, "f.jsonl", text).await
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap_or_else(|| panic!("{list}")).iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
}

/// Another key is told the job does not exist, on every route; the owner and an admin see it.
async fn assert_owned(server: &Server, keys: &Keys, base: &str, id: &str, routes: &[&str]) {
    for route in routes {
        let path = format!("{base}/{id}{route}");
        let (status, body) = get_as(server, &keys.bob, &path).await;
        assert_eq!(status, 404, "another key reads {path}: {body}");
        assert_error_shape(&body);
        let (status, body) = get_as(server, &keys.alice, &path).await;
        assert_eq!(status, 200, "the owner reads {path}: {body}");
        let (status, body) = get_as(server, &keys.admin, &path).await;
        assert_eq!(status, 200, "an admin reads {path}: {body}");
    }
    let (status, body) = post_as(server, &keys.bob, &format!("{base}/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 404, "another key cancels: {body}");
    assert_error_shape(&body);
    let (_, list) = get_as(server, &keys.bob, base).await;
    assert!(!ids(&list).contains(&id.to_string()), "another key's list: {list}");
    for key in [&keys.alice, &keys.admin] {
        let (_, list) = get_as(server, key, base).await;
        assert!(ids(&list).contains(&id.to_string()), "{list}");
    }
}

async fn wait_status(server: &Server, key: &str, path: &str, until: impl Fn(&str) -> bool) -> Value {
    jobs::wait_status(server, Some(key), path, Duration::from_millis(100), Duration::from_secs(600), until).await
}

/// Completions usage of one key since `start`: (requests, input tokens, output tokens).
async fn usage_of(server: &Server, admin: &str, key_id: &str, start: i64) -> (i64, i64, i64) {
    let (status, page) = get_as(server, admin, &format!("/v1/organization/usage/completions?start_time={start}&bucket_width=1d&group_by=api_key_id")).await;
    assert_eq!(status, 200, "{page}");
    let mut sums = (0, 0, 0);
    for bucket in page["data"].as_array().unwrap() {
        for r in bucket["results"].as_array().unwrap().iter().filter(|r| r["api_key_id"] == key_id) {
            sums.0 += r["num_model_requests"].as_i64().unwrap();
            sums.1 += r["input_tokens"].as_i64().unwrap();
            sums.2 += r["output_tokens"].as_i64().unwrap();
        }
    }
    sums
}

/// The store's id of a key (what usage is grouped by), from `keys list`.
fn key_id(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth")).args(["--state-dir", dir.to_str().unwrap(), "keys", "list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.split_whitespace().any(|w| w == name)).unwrap_or_else(|| panic!("{name} not in {text}"));
    line.split_whitespace().find(|w| w.starts_with("key_")).unwrap_or_else(|| panic!("no key id in {line:?}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_belong_to_their_key_validate_first_and_batches_count_usage() {
    let home = home();
    let dir = home.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let keys = Keys { alice: create_key(&dir, "alice", false), bob: create_key(&dir, "bob", false), admin: create_key(&dir, "boss", true) };
    let models = format!("{GEMMA},{SMOL}");
    let server =
        Server::start_with_env(&["--models", &models, "--state-dir", dir.to_str().unwrap()], Some(&keys.alice), &[("HEARTH_HOME", home.to_str().unwrap())]);
    let start = unix_now() - 60;

    // Fine-tuning job: validating_files first, then queued, as its events say.
    let data: String = (0..4).map(|_| format!("{}\n", json!({"prompt": "The zorblax is", "completion": " a purple moon fish."}))).collect();
    let file = upload(&server, &keys.alice, "fine-tune", data).await;
    let (status, job) =
        post_as(&server, &keys.alice, "/v1/fine_tuning/jobs", &json!({"model": "davinci", "training_file": file, "hyperparameters": {"n_epochs": 50}})).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "validating_files", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/v1/fine_tuning/jobs/{id}");
    wait_status(&server, &keys.alice, &path, |s| s != "validating_files").await;
    let (_, events) = get_as(&server, &keys.alice, &format!("{path}/events?limit=100")).await;
    let mut messages: Vec<String> = events["data"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
    messages.reverse();
    assert_eq!(messages[0], format!("Created fine-tuning job: {id}"), "{messages:?}");
    assert_eq!(messages[1], format!("Validating training file: {file}"), "{messages:?}");
    assert_eq!(messages[2], "Files validated, moving job to queued state", "{messages:?}");
    assert_owned(&server, &keys, "/v1/fine_tuning/jobs", &id, &["", "/events", "/checkpoints"]).await;
    let (status, cancelled) = post_as(&server, &keys.alice, &format!("{path}/cancel"), &json!({})).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");

    // Legacy fine-tune: the same rule.
    let (status, legacy) = post_as(&server, &keys.alice, "/v1/fine-tunes", &json!({"model": "curie", "training_file": file, "n_epochs": 50})).await;
    assert_eq!(status, 200, "{legacy}");
    let legacy_id = legacy["id"].as_str().unwrap().to_string();
    assert_owned(&server, &keys, "/v1/fine-tunes", &legacy_id, &["", "/events"]).await;
    let (status, _) = post_as(&server, &keys.alice, &format!("/v1/fine-tunes/{legacy_id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);

    // Batch: the same rule; its requests count in alice's usage exactly as bob's same requests sent directly.
    let requests: Vec<Value> = ["Name a color.", "Name a fruit.", "Count to three."]
        .iter()
        .map(|q| json!({"model": SMOL, "messages": [{"role": "user", "content": q}], "max_tokens": 8, "temperature": 0}))
        .collect();
    let lines: String = requests
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}\n", json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions", "body": b})))
        .collect();
    let input = upload(&server, &keys.alice, "batch", lines).await;
    let (status, batch) =
        post_as(&server, &keys.alice, "/v1/batches", &json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_string();
    let done = wait_status(&server, &keys.alice, &format!("/v1/batches/{batch_id}"), |s| ["completed", "failed", "cancelled", "expired"].contains(&s)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (status, body) = get_as(&server, &keys.bob, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_as(&server, &keys.bob, &format!("/v1/batches/{batch_id}/cancel"), &json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = get_as(&server, &keys.bob, "/v1/batches").await;
    assert!(!ids(&list).contains(&batch_id), "{list}");
    let (_, list) = get_as(&server, &keys.admin, "/v1/batches").await;
    assert!(ids(&list).contains(&batch_id), "{list}");
    for r in &requests {
        let (status, body) = post_as(&server, &keys.bob, "/v1/chat/completions", r).await;
        assert_eq!(status, 200, "{body}");
    }
    let (alice_id, bob_id) = (key_id(&dir, "alice"), key_id(&dir, "bob"));
    let batched = usage_of(&server, &keys.admin, &alice_id, start).await;
    let direct = usage_of(&server, &keys.admin, &bob_id, start).await;
    assert_eq!(direct.0, 3, "bob's direct requests: {direct:?}");
    assert_eq!(batched, direct, "alice's batch counts as bob's same requests sent directly");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
