//! Operating hearth: health probes, Prometheus metrics (parsed with a text-format
//! parser; counters move by exactly what was sent), the access log (one JSON line per
//! request, never content), `x-request-id`, the config file and `--print-config`.
mod common;

use common::{Server, SMOL};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;

const KEY: &str = "sk-ops-test";

/// Every sample of a scrape, keyed by name and sorted labels.
type Samples = HashMap<String, f64>;

async fn scrape(server: &Server, key: Option<&str>) -> (u16, String) {
    let mut req = common::client().get(server.url("/metrics"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("GET /metrics");
    (resp.status().as_u16(), resp.text().await.expect("metrics body"))
}

fn parse(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    let mut out = Samples::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

fn get(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

async fn post(server: &Server, path: &str, body: &Value, request_id: &str) -> reqwest::Response {
    common::client().post(server.url(path)).bearer_auth(KEY).header("x-request-id", request_id).json(body).send().await.expect("send")
}

/// The access log's lines (JSON objects of target hearth::access).
fn access_lines(server: &Server) -> Vec<Value> {
    server.log().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["target"] == "hearth::access").collect()
}

#[tokio::test]
async fn health_metrics_and_access_log() {
    let state = tempdir();
    let server = Server::start(&["--api-key", KEY, "--models", &format!("{SMOL},all-minilm-l6-v2"), "--log-format", "json", "--state-dir", &state], Some(KEY));

    // Probes need no key; the API still does.
    let (status, body) = common::get(&server, "/health").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = common::get(&server, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(common::get(&server, "/v1/models").await.0, 401);

    let (status, before) = scrape(&server, None).await;
    assert_eq!(status, 200);
    let before = parse(&before);
    assert!(get(&before, &format!("hearth_model_load_seconds{{model={SMOL}}}")) > 0.0, "model load time is recorded");
    assert!(get(&before, "process_resident_memory_bytes{}") > 0.0, "process memory is exported");

    // A marker that must never reach the log.
    let marker = format!("zebra-{}-marker", std::process::id());
    let (mut prompt_tokens, mut completion_tokens) = (0.0, 0.0);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("ops-plain-{i}");
        let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": format!("Say {marker} {i}")}], "max_tokens": 4 + i});
        let resp = post(&server, "/v1/chat/completions", &body, &id).await;
        assert_eq!(resp.headers()["x-request-id"], id.as_str(), "the client's request id is echoed");
        let v: Value = resp.json().await.unwrap();
        prompt_tokens += v["usage"]["prompt_tokens"].as_f64().unwrap();
        completion_tokens += v["usage"]["completion_tokens"].as_f64().unwrap();
        ids.push(id);
    }
    for i in 0..2 {
        let id = format!("ops-stream-{i}");
        let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": format!("Tell {marker}")}], "max_tokens": 5, "stream": true,
            "stream_options": {"include_usage": true}});
        let text = post(&server, "/v1/chat/completions", &body, &id).await.text().await.unwrap();
        let usage: Value = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["usage"].is_object())
            .expect("a usage chunk")["usage"]
            .clone();
        prompt_tokens += usage["prompt_tokens"].as_f64().unwrap();
        completion_tokens += usage["completion_tokens"].as_f64().unwrap();
        ids.push(id);
    }
    let resp = post(&server, "/v1/embeddings", &json!({"model": "text-embedding-ada-002", "input": format!("embed {marker}")}), "ops-embed").await;
    let embed_tokens = resp.json::<Value>().await.unwrap()["usage"]["prompt_tokens"].as_f64().unwrap();
    ids.push("ops-embed".into());
    let resp = post(&server, "/v1/chat/completions", &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}), "ops-404").await;
    assert_eq!(resp.status(), 404);
    ids.push("ops-404".into());
    // Without a request id of its own, the answer carries a generated one.
    let resp = common::client().get(server.url("/health")).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.starts_with("req_") && generated.len() == 36, "{generated}");
    ids.push(generated);

    // A stream is counted once its body is dropped, which may follow the client's last read.
    let chat = "endpoint=/v1/chat/completions,model=gpt-3.5-turbo";
    let mut after = Samples::new();
    for _ in 0..100 {
        after = parse(&scrape(&server, None).await.1);
        if get(&after, &format!("hearth_requests_total{{{chat},status=200}}")) >= 5.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let delta = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(delta(&format!("hearth_requests_total{{{chat},status=200}}")), 5.0, "five chats answered");
    assert_eq!(delta(&format!("hearth_prompt_tokens_total{{{chat}}}")), prompt_tokens);
    assert_eq!(delta(&format!("hearth_generation_tokens_total{{{chat}}}")), completion_tokens);
    assert_eq!(delta(&format!("hearth_request_duration_seconds{{{chat}}}")), 5.0, "one latency observation per chat");
    let embed = "endpoint=/v1/embeddings,model=text-embedding-ada-002";
    assert_eq!(delta(&format!("hearth_requests_total{{{embed},status=200}}")), 1.0);
    assert_eq!(delta(&format!("hearth_prompt_tokens_total{{{embed}}}")), embed_tokens);
    assert_eq!(delta("hearth_requests_total{endpoint=/v1/chat/completions,model=,status=404}"), 1.0, "an unknown model is no label");
    assert_eq!(delta(&format!("hearth_time_to_first_token_seconds{{model={SMOL}}}")), 5.0, "one first token per choice");
    assert_eq!(delta(&format!("hearth_inter_token_latency_seconds{{model={SMOL}}}")), completion_tokens - 5.0, "one gap per later token");
    assert_eq!(get(&after, &format!("hearth_running_sequences{{model={SMOL}}}")), 0.0);
    assert_eq!(get(&after, &format!("hearth_kv_cache_usage_bytes{{model={SMOL}}}")), 0.0);

    // One access line per request, with its facts; no content anywhere in the log.
    let lines = access_lines(&server);
    for id in &ids {
        let matching: Vec<&Value> = lines.iter().filter(|l| l["fields"]["request_id"] == id.as_str()).collect();
        assert_eq!(matching.len(), 1, "one access line for {id}: {lines:?}");
    }
    let line = &lines.iter().find(|l| l["fields"]["request_id"] == "ops-plain-0").unwrap()["fields"];
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/v1/chat/completions");
    assert_eq!(line["status"], 200);
    assert_eq!(line["model"], "gpt-3.5-turbo");
    assert!(line["key_id"].as_str().unwrap().starts_with("static_"), "{line}");
    assert!(line["completion_tokens"].as_i64().unwrap() > 0 && line["latency_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(!server.log().contains(&marker), "the log holds no prompt content");
}

#[tokio::test]
async fn metrics_key_and_config_file() {
    let state = tempdir();
    let config = std::path::Path::new(&state).join("hearth.toml");
    std::fs::write(&config, format!("models = [\"{SMOL}\"]\nmetrics_key = \"mk-secret\"\nmax_batch = 3\nqueue = 5\n")).unwrap();
    let config = config.to_str().unwrap();

    // The file's settings, the flag's override, secrets redacted.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["serve", "--config", config, "--queue", "7", "--print-config"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: toml::Table = String::from_utf8(out.stdout).unwrap().parse().expect("--print-config prints TOML");
    assert_eq!(printed["max_batch"].as_integer(), Some(3));
    assert_eq!(printed["queue"].as_integer(), Some(7), "flags override the file");
    assert_eq!(printed["models"].as_array().unwrap()[0].as_str(), Some(SMOL));
    assert_eq!(printed["metrics_key"].as_str(), Some("<redacted>"));
    assert_eq!(printed["port"].as_integer(), Some(8080), "defaults are shown");
    // An unknown setting is an error naming it.
    let bad = std::path::Path::new(&state).join("bad.toml");
    std::fs::write(&bad, "max_bach = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["serve", "--config", bad.to_str().unwrap(), "--print-config"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `max_bach`"));

    let server = Server::start(&["--config", config, "--state-dir", &state], None);
    assert_eq!(scrape(&server, None).await.0, 401, "the metrics key is required");
    assert_eq!(scrape(&server, Some("wrong")).await.0, 401);
    let (status, text) = scrape(&server, Some("mk-secret")).await;
    assert_eq!(status, 200);
    assert!(parse(&text).contains_key(&format!("hearth_queue_depth{{model={SMOL}}}")), "{text}");
    // The file's batch and queue are the engine's: 3 + 5 sequences, a request of 9 is refused.
    let (status, body) = common::post(&server, "/v1/completions", &json!({"model": SMOL, "prompt": "x", "n": 9, "max_tokens": 1})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains('8'), "{body}");
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("hearth-ops-{}-{}", std::process::id(), common::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}
