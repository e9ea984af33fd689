//! Jobs on files against the real binary: `/v1/batches` (answers equal the
//! same requests sent one by one), the fine-tuning APIs' refusals, and model
//! deletion rules. One server with a state directory of its own.
mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

const MODELS: &str = "smollm2-135m-instruct-q4_1,gemma-3-270m-q4_k_m,all-minilm-l6-v2,hearth-moderation-1";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-e2e-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Server::start(&["--models", MODELS, "--state-dir", dir.to_str().unwrap()], None)
    })
}

async fn upload(purpose: &str, name: &str, text: String) -> String {
    upload_to(server(), purpose, name, text).await
}

async fn upload_to(server: &Server, purpose: &str, name: &str, text: String) -> String {
    jobs::upload(server, None, purpose, name, text).await
}

async fn content(id: &str) -> String {
    client().get(server().url(&format!("/v1/files/{id}/content"))).send().await.unwrap().text().await.unwrap()
}

async fn wait_batch(id: &str) -> Value {
    let done = |s: &str| ["completed", "failed", "cancelled", "expired"].contains(&s);
    jobs::wait_status(server(), None, &format!("/v1/batches/{id}"), Duration::from_millis(300), Duration::from_secs(900), done).await
}

/// What must be equal between a batch answer and the same request's own answer.
fn answer(endpoint: &str, body: &Value) -> Value {
    match endpoint {
        "/v1/chat/completions" | "/v1/completions" => json!([body["model"], body["choices"], body["usage"]]),
        "/v1/embeddings" => json!([body["model"], body["data"], body["usage"]]),
        _ => json!([body["model"], body["results"]]),
    }
}

/// Floats compared within `tol` (embedding and moderation scores depend on batch padding by rounding only).
fn close(a: &Value, b: &Value, tol: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= tol,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q, tol)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w, tol))),
        _ => a == b,
    }
}

fn requests(endpoint: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| match endpoint {
            "/v1/chat/completions" => {
                json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": format!("Count to {i}.")}], "max_tokens": 3, "temperature": 0})
            }
            "/v1/completions" => json!({"model": "davinci", "prompt": format!("Item {i}:"), "max_tokens": 3, "temperature": 0}),
            "/v1/embeddings" => json!({"model": "text-embedding-ada-002", "input": format!("sentence number {i}")}),
            _ => json!({"model": "text-moderation-latest", "input": format!("message {i} is friendly")}),
        })
        .collect()
}

/// 200 requests over the four endpoints (one batch each, run together), plus
/// two that fail; each answer equals the same request sent alone at temperature 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_answer_as_single_requests() {
    let plan = [("/v1/chat/completions", 90), ("/v1/completions", 70), ("/v1/embeddings", 20), ("/v1/moderations", 20)];
    let mut batches = Vec::new();
    for (endpoint, n) in plan {
        let mut bodies = requests(endpoint, n);
        if endpoint == "/v1/chat/completions" {
            bodies.push(json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}));
            bodies.push(json!({"model": "gpt-3.5-turbo", "messages": []}));
        }
        let lines: String = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{}\n", json!({"custom_id": format!("req-{i}"), "method": "POST", "url": endpoint, "body": b})))
            .collect();
        let file = upload("batch", "requests.jsonl", lines).await;
        let batch =
            ok(server(), "/v1/batches", &json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h", "metadata": {"k": "v"}})).await;
        assert_eq!((batch["object"].as_str(), batch["status"].as_str()), (Some("batch"), Some("validating")), "{batch}");
        assert_eq!(batch["metadata"], json!({"k": "v"}));
        batches.push((endpoint, bodies, batch["id"].as_str().unwrap().to_string()));
    }
    let mut total = 0;
    for (endpoint, bodies, id) in &batches {
        let done = wait_batch(id).await;
        assert_eq!(done["status"], "completed", "{done}");
        let failed = if *endpoint == "/v1/chat/completions" { 2 } else { 0 };
        assert_eq!(done["request_counts"], json!({"total": bodies.len(), "completed": bodies.len() - failed, "failed": failed}), "{done}");
        let output = content(done["output_file_id"].as_str().unwrap()).await;
        let lines: Vec<Value> = output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), bodies.len() - failed);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["custom_id"], format!("req-{i}"), "output in input order");
            assert!(line["id"].as_str().unwrap().starts_with("batch_req_") && line["error"].is_null(), "{line}");
            assert_eq!(line["response"]["status_code"], 200);
            let alone = ok(server(), endpoint, &bodies[i]).await;
            let (got, want) = (answer(endpoint, &line["response"]["body"]), answer(endpoint, &alone));
            assert!(close(&got, &want, 1e-4), "{endpoint} request {i}: batch answered {got}, alone {want}");
            total += 1;
        }
        if failed > 0 {
            let errors = content(done["error_file_id"].as_str().unwrap()).await;
            let errors: Vec<Value> = errors.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            let codes: Vec<(Value, Value)> = errors.iter().map(|e| (e["custom_id"].clone(), e["response"]["status_code"].clone())).collect();
            assert_eq!(codes, vec![(json!(format!("req-{}", bodies.len() - 2)), json!(404)), (json!(format!("req-{}", bodies.len() - 1)), json!(400))]);
            assert!(errors[0]["response"]["body"]["error"]["message"].as_str().unwrap().contains("no-such-model"));
        } else {
            assert!(done["error_file_id"].is_null());
        }
    }
    assert_eq!(total, 200);
    let (status, list) = get(server(), "/v1/batches?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!((list["data"].as_array().unwrap().len(), list["has_more"].as_bool()), (2, Some(true)), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_refusals() {
    let good = format!("{}\n", json!({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "text-embedding-ada-002", "input": "x"}}));
    let tune = upload("fine-tune", "t.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\"}\n".into()).await;
    let file = upload("batch", "b.jsonl", good).await;
    let create = |file: &str, endpoint: &str, window: &str| json!({"input_file_id": file, "endpoint": endpoint, "completion_window": window});
    let (s, b) = post(server(), "/v1/batches", &create(&tune, "/v1/embeddings", "24h")).await;
    assert_error(s, &b, 400, "invalid_request_error", Some("input_file_id"), Some("invalid_file_purpose"));
    let (s, b) = post(server(), "/v1/batches", &create("file-nope", "/v1/embeddings", "24h")).await;
    assert_error(s, &b, 404, "invalid_request_error", Some("input_file_id"), Some("file_not_found"));
    let (s, b) = post(server(), "/v1/batches", &create(&file, "/v1/images/generations", "24h")).await;
    assert_error(s, &b, 400, "invalid_request_error", Some("endpoint"), None);
    let (s, b) = post(server(), "/v1/batches", &create(&file, "/v1/embeddings", "1h")).await;
    assert_error(s, &b, 400, "invalid_request_error", Some("completion_window"), None);
    let (s, b) = get(server(), "/v1/batches/batch_nope").await;
    assert_error(s, &b, 404, "invalid_request_error", Some("batch_id"), None);
    // A malformed line fails the batch in validation, naming the line.
    let bad = format!("{}\nnot json\n", json!({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}));
    let bad = upload("batch", "bad.jsonl", bad).await;
    let batch = ok(server(), "/v1/batches", &create(&bad, "/v1/embeddings", "24h")).await;
    let done = wait_batch(batch["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["errors"]["data"][0]["line"], 2, "{done}");
    let (s, b) = post(server(), &format!("/v1/batches/{}/cancel", batch["id"].as_str().unwrap()), &json!({})).await;
    assert_error(s, &b, 409, "invalid_request_error", None, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_tuning_refusals() {
    let completion_data = upload("fine-tune", "pc.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\"}\n".into()).await;
    let chat_data =
        upload("fine-tune", "chat.jsonl", format!("{}\n", json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})))
            .await;
    let batch_file = upload("batch", "b.jsonl", "{}\n".into()).await;
    let job = |model: &str, file: &str, extra: Value| {
        let mut body = json!({"model": model, "training_file": file});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (job("no-such-model", &completion_data, json!({})), 404, None, Some("model_not_found")),
        (job("gpt-4", &completion_data, json!({})), 400, Some("model"), Some("model_not_available")),
        (job("text-embedding-ada-002", &completion_data, json!({})), 400, Some("model"), Some("model_not_available")),
        (job("davinci", &completion_data, json!({"hyperparameters": {"n_epochs": 0}})), 400, Some("hyperparameters.n_epochs"), Some("invalid_value")),
        (job("davinci", &completion_data, json!({"hyperparameters": {"batch_size": 1000}})), 400, Some("hyperparameters.batch_size"), Some("invalid_value")),
        (
            job("davinci", &completion_data, json!({"hyperparameters": {"learning_rate_multiplier": -1}})),
            400,
            Some("hyperparameters.learning_rate_multiplier"),
            Some("invalid_value"),
        ),
        (job("davinci", "file-nope", json!({})), 404, Some("training_file"), Some("file_not_found")),
        (job("davinci", &batch_file, json!({})), 400, Some("training_file"), Some("invalid_file_purpose")),
        (job("davinci", &chat_data, json!({})), 400, Some("training_file"), Some("invalid_file_format")),
        (job("gpt-3.5-turbo", &completion_data, json!({})), 400, Some("training_file"), Some("invalid_file_format")),
        (job("davinci", &completion_data, json!({"suffix": "has:colon"})), 400, Some("suffix"), None),
    ];
    for (body, status, param, code) in cases {
        let (s, b) = post(server(), "/v1/fine_tuning/jobs", &body).await;
        let message = assert_error(s, &b, status, "invalid_request_error", param, code);
        if code == Some("invalid_file_format") {
            assert!(message.contains("Line 1"), "the error names the line: {message}");
        }
    }
    let (s, b) = post(server(), "/v1/fine-tunes", &json!({"training_file": completion_data, "model": "curie", "n_epochs": 99})).await;
    assert_error(s, &b, 400, "invalid_request_error", Some("n_epochs"), Some("invalid_value"));
    let (s, b) = get(server(), "/v1/fine_tuning/jobs/ftjob-nope").await;
    assert_error(s, &b, 404, "invalid_request_error", Some("fine_tune_id"), Some("fine_tune_not_found"));
    let (s, b) = get(server(), "/v1/fine_tuning/jobs?limit=0").await;
    assert_error(s, &b, 400, "invalid_request_error", Some("limit"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_models_cannot_be_deleted() {
    let resp = client().delete(server().url("/v1/models/gpt-3.5-turbo")).send().await.unwrap();
    let (s, b) = read_json(resp).await;
    assert_error(s, &b, 403, "invalid_request_error", Some("model"), None);
    let resp = client().delete(server().url("/v1/models/ft:davinci:nobody::x")).send().await.unwrap();
    let (s, b) = read_json(resp).await;
    assert_error(s, &b, 404, "invalid_request_error", None, Some("model_not_found"));
}

/// The `ft_*.gguf` files in `dir`.
fn fine_tuned_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with("ft_") && n.ends_with(".gguf")).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A server killed (-9) while a batch runs and a fine-tuning job is queued or
/// running: the next server on the same state takes both up. The batch is run
/// again and completes; the job ends succeeded, or failed with its reason in
/// `error` and in its events, never left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_takes_up_unfinished_jobs() {
    let dir = std::env::temp_dir().join(format!("hearth-e2e-jobs-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["--models", "smollm2-135m-instruct-q4_1,gemma-3-270m-q4_k_m", "--state-dir", dir.to_str().unwrap()];
    // Fine-tuned weights are state: the shared model cache gains none.
    let cache_before = fine_tuned_in(&hearth_home().join("models"));
    let first = Server::start(&args, None);
    let lines: String = (0..60)
        .map(|i| {
            let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": format!("Tell a story about {i}.")}], "max_tokens": 16, "temperature": 0});
            format!("{}\n", json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions", "body": body}))
        })
        .collect();
    let file = upload_to(&first, "batch", "r.jsonl", lines).await;
    let (s, batch) = read_json(
        client()
            .post(first.url("/v1/batches"))
            .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{batch}");
    let data: String = (0..4).map(|_| format!("{}\n", json!({"prompt": "The zorblax is", "completion": " a purple moon fish."}))).collect();
    let data = upload_to(&first, "fine-tune", "d.jsonl", data).await;
    let (s, job) = read_json(
        client()
            .post(first.url("/v1/fine_tuning/jobs"))
            .json(&json!({"model": "davinci", "training_file": data, "hyperparameters": {"n_epochs": 1, "batch_size": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["status"], "validating_files", "a new job first validates its files: {job}");
    let batch_id = batch["id"].as_str().unwrap().to_string();
    let job_id = job["id"].as_str().unwrap().to_string();
    // Killed once the batch runs.
    let every = Duration::from_millis(50);
    jobs::wait_status(&first, None, &format!("/v1/batches/{batch_id}"), every, Duration::from_secs(120), |s| s != "validating").await;
    std::process::Command::new("kill").args(["-9", &first.pid().to_string()]).status().unwrap();
    while first.exited().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Server::start(&args, None);
    let done = |s: &str| ["completed", "failed", "cancelled"].contains(&s);
    let batch = jobs::wait_status(&second, None, &format!("/v1/batches/{batch_id}"), Duration::from_millis(300), Duration::from_secs(900), done).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["request_counts"], json!({"total": 60, "completed": 60, "failed": 0}));
    let done = |s: &str| ["succeeded", "failed", "cancelled"].contains(&s);
    let job = jobs::wait_status(&second, None, &format!("/v1/fine_tuning/jobs/{job_id}"), Duration::from_millis(500), Duration::from_secs(1500), done).await;
    let (_, events) = read_json(client().get(second.url(&format!("/v1/fine_tuning/jobs/{job_id}/events?limit=1000"))).send().await.unwrap()).await;
    let messages: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    if job["status"] == "failed" {
        let reason = job["error"]["message"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a failed job says why: {job}");
        assert!(messages.iter().any(|m| m.contains(reason)), "and its events say it too: {messages:?}");
    } else {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(job["fine_tuned_model"].as_str().unwrap().starts_with("ft:davinci:user-hearth::"), "{job}");
        assert_eq!(fine_tuned_in(&dir.join("fine_tuned")).len(), 1, "the weights are in the state directory");
    }
    drop(second);
    assert_eq!(fine_tuned_in(&hearth_home().join("models")), cache_before, "nothing written to the model cache");
    let _ = std::fs::remove_dir_all(dir);
}
