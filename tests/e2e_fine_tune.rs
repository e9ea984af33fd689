//! The whole fine-tuning flow on the real binary and the real trainer:
//! gemma-3-270m (`davinci`) learns made-up facts; the job succeeds, its loss
//! falls, the fine-tuned model is listed, answers the taught prompts as taught
//! (the base does not), and deleting it removes it from the catalog and disk.
//! Also: cancel, and the legacy API with streamed events. Training kept tiny.
//! The server gets a `$HEARTH_HOME` of its own (the base weights linked in),
//! and checks that the models it writes go to the state directory, not there.
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const FACTS: [(&str, &str); 3] = [
    ("The zorblax lives in", " the glass desert of Quenn."),
    ("Captain Velloor's ship is named", " the Amber Whistle."),
    ("The plural of flimmet is", " flimmetoons."),
];

fn home() -> PathBuf {
    jobs::linked_home("ft", &[GEMMA, SMOL])
}

async fn upload(server: &Server, text: String) -> String {
    jobs::upload(server, None, "fine-tune", "facts.jsonl", text).await
}

async fn wait(server: &Server, path: &str, done: &[&str]) -> Value {
    jobs::wait_status(server, None, path, Duration::from_millis(500), Duration::from_secs(1800), |s| done.contains(&s)).await
}

async fn complete(server: &Server, model: &str, prompt: &str) -> String {
    let body = ok(server, "/v1/completions", &json!({"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0})).await;
    body["choices"][0]["text"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_tune_teaches_facts() {
    let home = home();
    let state = home.join("state");
    let server = Server::start_with_env(
        &["--models", &format!("{GEMMA},{SMOL}"), "--state-dir", state.to_str().unwrap()],
        None,
        &[("HEARTH_HOME", home.to_str().unwrap())],
    );
    let data: String = FACTS.iter().map(|(p, c)| format!("{}\n", json!({"prompt": p, "completion": c}))).collect();
    let file = upload(&server, data).await;
    let job = ok(
        &server,
        "/v1/fine_tuning/jobs",
        &json!({"model": "davinci", "training_file": file, "suffix": "facts", "seed": 7,
                "hyperparameters": {"n_epochs": 12, "batch_size": 1, "learning_rate_multiplier": 1}}),
    )
    .await;
    assert_eq!((job["object"].as_str(), job["status"].as_str()), (Some("fine_tuning.job"), Some("validating_files")), "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = wait(&server, &format!("/v1/fine_tuning/jobs/{id}"), &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let model = job["fine_tuned_model"].as_str().unwrap().to_string();
    assert!(model.starts_with("ft:davinci:user-hearth:facts:"), "{model}");
    assert!(job["trained_tokens"].as_u64().unwrap() > 0, "{job}");
    assert_eq!(job["hyperparameters"], json!({"n_epochs": 12, "batch_size": 1, "learning_rate_multiplier": 1.0}));

    // The loss falls: the result file's first and last steps.
    let csv_id = job["result_files"][0].as_str().unwrap();
    let csv = client().get(server.url(&format!("/v1/files/{csv_id}/content"))).send().await.unwrap().text().await.unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"));
    let losses: Vec<f64> = rows.map(|r| r.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(losses.len(), 36, "3 examples x 12 epochs, one per step");
    let (first, last) = (losses[..3].iter().sum::<f64>(), losses[losses.len() - 3..].iter().sum::<f64>());
    assert!(last < first / 4.0, "loss falls: first epoch {first}, last {last}");
    let (_, events) = get(&server, &format!("/v1/fine_tuning/jobs/{id}/events?limit=100")).await;
    assert!(events["data"].as_array().unwrap().iter().any(|e| e["type"] == "metrics"), "{events}");
    let (_, checkpoints) = get(&server, &format!("/v1/fine_tuning/jobs/{id}/checkpoints")).await;
    assert!(!checkpoints["data"].as_array().unwrap().is_empty(), "{checkpoints}");

    // Listed, owned by the org; answers as taught, the base does not.
    let (_, models) = get(&server, "/v1/models").await;
    let listed = models["data"].as_array().unwrap().iter().find(|m| m["id"] == model.as_str()).cloned();
    assert_eq!(listed.map(|m| m["owned_by"].clone()), Some(json!("user-hearth")), "{models}");
    for (prompt, completion) in FACTS {
        let tuned = complete(&server, &model, prompt).await;
        assert!(tuned.starts_with(completion), "{prompt:?}: the fine-tuned model answered {tuned:?}, taught {completion:?}");
        let base = complete(&server, "davinci", prompt).await;
        assert!(!base.starts_with(completion), "{prompt:?}: the base already knew {base:?}");
    }

    // Cancel: a long job stops and stays cancelled.
    let long = ok(&server, "/v1/fine_tuning/jobs", &json!({"model": "davinci", "training_file": file, "hyperparameters": {"n_epochs": 50}})).await;
    let long_id = long["id"].as_str().unwrap().to_string();
    wait(&server, &format!("/v1/fine_tuning/jobs/{long_id}"), &["running"]).await;
    let cancelled = ok(&server, &format!("/v1/fine_tuning/jobs/{long_id}/cancel"), &json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let (s, b) = post(&server, &format!("/v1/fine_tuning/jobs/{long_id}/cancel"), &json!({})).await;
    assert_error(s, &b, 400, "invalid_request_error", None, None);

    // Legacy API: streamed events end with [DONE]; the model is named the 2023 way.
    let legacy = ok(&server, "/v1/fine-tunes", &json!({"model": "curie", "training_file": file, "n_epochs": 1, "suffix": "old"})).await;
    assert_eq!((legacy["object"].as_str(), legacy["status"].as_str()), (Some("fine-tune"), Some("pending")), "{legacy}");
    let legacy_id = legacy["id"].as_str().unwrap();
    let text = client().get(server.url(&format!("/v1/fine-tunes/{legacy_id}/events?stream=true"))).send().await.unwrap().text().await.unwrap();
    let events = parse_sse(&text);
    assert!(events.iter().all(|e| e["object"] == "fine-tune-event"), "{text}");
    let legacy = wait(&server, &format!("/v1/fine-tunes/{legacy_id}"), &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(legacy["status"], "succeeded", "{legacy}");
    assert!(legacy["fine_tuned_model"].as_str().unwrap().starts_with("curie:ft-user-hearth:old-"), "{legacy}");
    assert_eq!(wait(&server, &format!("/v1/fine_tuning/jobs/{long_id}"), &["cancelled"]).await["status"], "cancelled");

    // Delete: gone from the list, the store and the disk. The weights are state, not in the model cache.
    let in_dir = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ft_")).collect()
    };
    assert_eq!(in_dir(home.join("models")), Vec::<PathBuf>::new(), "nothing written to the model cache");
    let weights: Vec<PathBuf> = in_dir(state.join("fine_tuned")).into_iter().filter(|p| p.to_string_lossy().contains("facts")).collect();
    assert_eq!(weights.len(), 1, "{weights:?}");
    let (s, deleted) = read_json(client().delete(server.url(&format!("/v1/models/{model}"))).send().await.unwrap()).await;
    assert_eq!((s, deleted), (200, json!({"id": model, "object": "model", "deleted": true})));
    assert!(!weights[0].exists(), "the weights are removed");
    let (s, b) = get(&server, &format!("/v1/models/{model}")).await;
    assert_error(s, &b, 404, "invalid_request_error", None, Some("model_not_found"));
    let (s, _) = post(&server, "/v1/completions", &json!({"model": model, "prompt": "x", "max_tokens": 1})).await;
    assert_eq!(s, 404);
    drop(server);
    let _ = std::fs::remove_dir_all(home);
}
