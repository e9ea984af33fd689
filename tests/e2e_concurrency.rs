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

/// Starts a stream with a long generation, reads one chunk, and drops it.
async fn start_and_abandon(server: &Server) {
    let req = json!({"model": SMOL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
                     "max_tokens": 4000, "temperature": 0.8, "stream": true});
    let resp = client().post(server.url("/v1/chat/completions")).json(&req).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk bytes");
    assert!(first.starts_with(b"data: "), "{:?}", String::from_utf8_lossy(&first));
    drop(body); // disconnect
}

#[tokio::test]
async fn disconnect_mid_stream_frees_the_sequence() {
    // Two slots: if the abandoned sequences (4,000 tokens each, minutes of
    // work) kept running, a full batch of new requests would wait for them.
    let server = Server::start(&["--models", SMOL, "--max-batch", "2", "--queue", "4"], None);
    start_and_abandon(&server).await;
    start_and_abandon(&server).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probe = chat(SMOL, "Hi", 4);
    let both = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join(post(&server, "/v1/chat/completions", &probe), post(&server, "/v1/chat/completions", &probe)),
    )
    .await
    .expect("the server must answer promptly after clients left");
    for (status, body) in [both.0, both.1] {
        assert_eq!(status, 200, "a full batch after disconnects: {body}\n{}", server.log());
    }
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
