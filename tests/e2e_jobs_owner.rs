//! Jobs against the real binary with stored keys: fine-tuning jobs, legacy
//! fine-tunes and batches belong to the key that created them (another key
//! gets OpenAI's 404 for an unknown id, an admin key sees them all); a new
//! fine-tuning job is `validating_files` before `queued`, and its events say
//! so; a batch's requests are counted in usage like the same requests sent
//! directly, marked `batch` when the usage API groups by it. Files belong to the key that uploaded them (a job's output files to
//! the job's key) the same way; a job cannot name another key's file. SQLite
//! store (the store suite runs the same queries on PostgreSQL).
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
    // group_by=batch tells them apart; without it `batch` is null; `batch=true` keeps the batch's only.
    let (srv, admin) = (&server, keys.admin.as_str());
    let page = |query: String| async move {
        let (status, page) = get_as(srv, admin, &format!("/v1/organization/usage/completions?start_time={start}&bucket_width=1d{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["data"].as_array().unwrap().iter().flat_map(|b| b["results"].as_array().unwrap().clone()).collect::<Vec<Value>>()
    };
    let grouped = page("&group_by=api_key_id&group_by=batch".into()).await;
    let flags = |results: &[Value], key: &str| -> Vec<(Value, i64)> {
        results.iter().filter(|r| r["api_key_id"] == key).map(|r| (r["batch"].clone(), r["num_model_requests"].as_i64().unwrap())).collect()
    };
    assert_eq!(flags(&grouped, &alice_id), vec![(json!(true), 3)], "{grouped:?}");
    assert_eq!(flags(&grouped, &bob_id), vec![(json!(false), 3)], "{grouped:?}");
    let plain = page("&group_by=api_key_id".into()).await;
    assert!(plain.iter().all(|r| r["batch"].is_null()), "{plain:?}");
    let batch_only = page("&group_by=api_key_id&batch=true".into()).await;
    assert_eq!(batch_only.iter().map(|r| r["api_key_id"].clone()).collect::<Vec<_>>(), vec![json!(alice_id)], "{batch_only:?}");
    let (status, body) = get_as(&server, &keys.admin, &format!("/v1/organization/usage/embeddings?start_time={start}&group_by=batch")).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("group_by"), None);
}

/// Answered as OpenAI answers an unknown file id: 404 `No such File object: <id>`.
fn assert_no_such_file(status: u16, body: &Value, id: &str, param: &str) {
    assert_eq!(status, 404, "{body}");
    assert_error_shape(body);
    assert_eq!(body["error"]["message"], format!("No such File object: {id}"), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_belong_to_their_key() {
    let home = home();
    let dir = home.join("files-state");
    std::fs::create_dir_all(&dir).unwrap();
    let env = [("HEARTH_HOME", home.to_str().unwrap())];
    let args = ["--models", SMOL, "--state-dir", dir.to_str().unwrap()];
    let chat = |q: &str| json!({"model": SMOL, "messages": [{"role": "user", "content": q}], "max_tokens": 2, "temperature": 0});
    let example = format!("{}\n", json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}));

    // A file uploaded while the server had no keys has no owner: every key reads it later.
    let unowned = {
        let server = Server::start_with_env(&args, None, &env);
        upload_keyless(&server, example.clone()).await
    };
    let keys = Keys { alice: create_key(&dir, "alice", false), bob: create_key(&dir, "bob", false), admin: create_key(&dir, "boss", true) };
    let server = Server::start_with_env(&args, Some(&keys.alice), &env);

    let tune = upload(&server, &keys.alice, "fine-tune", example.clone()).await;
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat("Name a color.")});
    let input = upload(&server, &keys.alice, "batch", format!("{line}\n")).await;
    for id in [&tune, &input] {
        for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
            let (status, body) = get_as(&server, &keys.bob, &path).await;
            assert_no_such_file(status, &body, id, "id");
            for key in [&keys.alice, &keys.admin] {
                let resp = client().get(server.url(&path)).bearer_auth(key).send().await.unwrap();
                assert_eq!(resp.status(), 200, "{path}");
            }
        }
        let (status, body) = call(&server, &keys.bob, reqwest::Method::DELETE, &format!("/v1/files/{id}"), None).await;
        assert_no_such_file(status, &body, id, "id");
    }
    let (_, bobs) = get_as(&server, &keys.bob, "/v1/files").await;
    assert_eq!(ids(&bobs), vec![unowned.clone()], "bob lists only the unowned file: {bobs}");
    let (_, alices) = get_as(&server, &keys.alice, "/v1/files?order=asc").await;
    assert_eq!(ids(&alices), vec![unowned.clone(), tune.clone(), input.clone()], "{alices}");
    let (_, all) = get_as(&server, &keys.admin, "/v1/files?order=asc").await;
    assert_eq!(ids(&all), vec![unowned.clone(), tune.clone(), input.clone()], "{all}");
    for key in [&keys.alice, &keys.bob] {
        let (status, body) = get_as(&server, key, &format!("/v1/files/{unowned}")).await;
        assert_eq!(status, 200, "{body}");
    }

    // Bob's jobs cannot name alice's files: the same 404 as a missing file, naming the parameter.
    let own = upload(&server, &keys.bob, "fine-tune", example.clone()).await;
    let (status, body) = post_as(&server, &keys.bob, "/v1/fine_tuning/jobs", &json!({"model": "gpt-3.5-turbo", "training_file": tune})).await;
    assert_no_such_file(status, &body, &tune, "training_file");
    let (status, body) =
        post_as(&server, &keys.bob, "/v1/fine_tuning/jobs", &json!({"model": "gpt-3.5-turbo", "training_file": own, "validation_file": tune})).await;
    assert_no_such_file(status, &body, &tune, "validation_file");
    let (status, body) = post_as(&server, &keys.bob, "/v1/fine-tunes", &json!({"model": "gpt-3.5-turbo", "training_file": tune})).await;
    assert_no_such_file(status, &body, &tune, "training_file");
    let (status, body) =
        post_as(&server, &keys.bob, "/v1/batches", &json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_no_such_file(status, &body, &input, "input_file_id");

    // A batch's output file is its owner's.
    let (status, batch) =
        post_as(&server, &keys.alice, "/v1/batches", &json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_eq!(status, 200, "{batch}");
    let done = wait_status(&server, &keys.alice, &format!("/v1/batches/{}", batch["id"].as_str().unwrap()), |s| s == "completed" || s == "failed").await;
    let output = done["output_file_id"].as_str().unwrap_or_else(|| panic!("{done}")).to_string();
    let (status, body) = get_as(&server, &keys.bob, &format!("/v1/files/{output}")).await;
    assert_no_such_file(status, &body, &output, "id");
    let (_, bobs) = get_as(&server, &keys.bob, "/v1/files?purpose=batch_output").await;
    assert!(ids(&bobs).is_empty(), "{bobs}");
    for key in [&keys.alice, &keys.admin] {
        let resp = client().get(server.url(&format!("/v1/files/{output}/content"))).bearer_auth(key).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("\"custom_id\":\"a\""));
    }

    // The owner deletes.
    let (status, body) = call(&server, &keys.alice, reqwest::Method::DELETE, &format!("/v1/files/{tune}"), None).await;
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)), "{body}");
}

async fn upload_keyless(server: &Server, text: String) -> String {
    let form =
        reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(text.into_bytes()).file_name("old.jsonl"));
    let (status, body) = read_json(client().post(server.url("/v1/files")).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
