//! Continuous batching seen from outside: concurrent requests, clients that
//! disconnect mid-stream, and the bounded queue (429 beyond capacity).
mod common;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn eight_concurrent_requests_match_solo_runs() {
    let server = shared();
    let prompts: Vec<String> = (0..8).map(|i| format!("Write the number {i} in words.")).collect();
    let requests: Vec<(&str, Value)> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 2 == 0 { ("/v1/chat/completions", chat(SMOL, p, 6)) } else { ("/v1/completions", completion(SMOL, json!(p), 6)) })
        .collect();
    let together = futures::future::join_all(requests.iter().map(|(path, body)| post(server, path, body))).await;
    for ((path, body), (status, resp)) in requests.iter().zip(&together) {
        assert_eq!(*status, 200, "{path} {body}: {resp}");
        // Batched greedy decoding gives what the request gets alone.
        let alone = ok(server, path, body).await;
        let pick = |v: &Value| {
            let c = &v["choices"][0];
            c["message"]["content"].as_str().or(c["text"].as_str()).unwrap_or_default().to_string()
        };
        assert_eq!(pick(resp), pick(&alone), "{path} {body}: batched vs alone");
    }
}

/// Starts a stream that cannot end on its own (4,000 tokens, the model's end tokens
/// banned) and reads its first chunk.
async fn start_endless(server: &Server) -> impl futures::Stream {
    let dir = std::env::var_os("HEARTH_TEST_MODELS").map(std::path::PathBuf::from).unwrap_or_else(|| hearth_home().join("models"));
    let (info, _) = hearth_engine::text::load_vocab(&dir.join(format!("{SMOL}.gguf"))).expect("SmolLM2's vocabulary");
    let bias: serde_json::Map<String, Value> = info.stop_tokens.iter().map(|t| (t.to_string(), json!(-100))).collect();
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
                     "max_tokens": 4000, "temperature": 0.8, "stream": true, "logit_bias": bias});
    let resp = client().post(server.url("/v1/chat/completions")).json(&req).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk bytes");
    assert!(first.starts_with(b"data: "), "{:?}", String::from_utf8_lossy(&first));
    body
}

#[tokio::test]
async fn disconnect_mid_stream_frees_the_sequence() {
    let server = Server::start(&["--models", SMOL, "--max-batch", "2", "--queue", "4"], None);
    let a = start_endless(&server).await;
    let b = start_endless(&server).await;
    let running = wait_for_engine(&server, "both streams run", |s| s.running == 2.0 && s.kv_bytes > 0.0).await;
    // Their clients hang up: the server's engine must hold nothing once it notices.
    drop((a, b));
    wait_for_engine(&server, "after the clients hung up", |s| s.running == 0.0 && s.queued == 0.0 && s.kv_bytes == 0.0).await;
    // And a full batch of new requests is served.
    let probe = chat(SMOL, "Hi", 4);
    let both = futures::future::join(post(&server, "/v1/chat/completions", &probe), post(&server, "/v1/chat/completions", &probe)).await;
    for (status, body) in [both.0, both.1] {
        assert_eq!(status, 200, "a full batch after disconnects (before: {running:?}): {body}\n{}", server.log());
    }
}

/// SmolLM2's engine gauges as `/metrics` shows them.
#[derive(Debug)]
struct EngineGauges {
    running: f64,
    queued: f64,
    kv_bytes: f64,
}

/// Polls `/metrics` until `done` holds (bounded: fails with the state last seen).
async fn wait_for_engine(server: &Server, what: &str, done: impl Fn(&EngineGauges) -> bool) -> EngineGauges {
    let mut seen = None;
    for _ in 0..600 {
        let text = client().get(server.url("/metrics")).send().await.expect("GET /metrics").text().await.expect("metrics");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the Prometheus text format");
        let gauge = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get("model") == Some(SMOL))
                .and_then(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) => Some(v),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{name} for {SMOL} in /metrics: {text}"))
        };
        let gauges =
            EngineGauges { running: gauge("hearth_running_sequences"), queued: gauge("hearth_queue_depth"), kv_bytes: gauge("hearth_kv_cache_usage_bytes") };
        if done(&gauges) {
            return gauges;
        }
        seen = Some(gauges);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: the engine's state is still {seen:?}");
}

#[tokio::test]
async fn overload_gets_429_with_openai_body() {
    let server = Server::start(&["--models", SMOL, "--max-batch", "1", "--queue", "1"], None);
    let req = completion(SMOL, json!("Count slowly: one, two,"), 8);
    let results = futures::future::join_all((0..8).map(|_| post(&server, "/v1/completions", &req))).await;
    let mut limited = 0;
    for (status, body) in &results {
        match status {
            200 => assert_eq!(usage(body).1, 8, "{body}"),
            429 => {
                limited += 1;
                assert_error_shape(body);
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let served = results.len() - limited;
    assert!(limited >= 1, "8 requests against 1 slot + 1 queue place must overflow: {results:?}");
    assert!(served >= 1, "the admitted requests are served: {results:?}");
    // Capacity comes back once the batch drains.
    ok(&server, "/v1/completions", &req).await;
}
