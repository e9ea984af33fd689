//! POST /v1/embeddings against the real server and the real all-MiniLM-L6-v2 (and all-mpnet-base-v2):
//! every input form, both encodings, `dimensions`, the bad-input table with
//! OpenAI's exact bodies, and batching under concurrent requests.
mod common;
#[path = "common/openapi.rs"]
mod openapi;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

const MODEL: &str = "all-minilm-l6-v2";
const ALIAS: &str = "text-embedding-ada-002";
const INVALID_INPUT: &str = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

/// One server with only the embedding model loaded.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&["--models", MODEL], None))
}

async fn embed(body: Value) -> Value {
    let resp = ok(server(), "/v1/embeddings", &body).await;
    if body.get("encoding_format").and_then(Value::as_str) != Some("base64") {
        openapi::assert_matches("CreateEmbeddingResponse", &resp);
    }
    resp
}

fn vectors(resp: &Value) -> Vec<Vec<f32>> {
    resp["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            match &item["embedding"] {
                Value::Array(xs) => xs.iter().map(|x| x.as_f64().expect("number") as f32).collect(),
                Value::String(text) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(text).expect("base64");
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
                }
                other => panic!("embedding is neither a list nor base64: {other}"),
            }
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn prompt_tokens(resp: &Value) -> u64 {
    assert_eq!(resp["usage"]["prompt_tokens"], resp["usage"]["total_tokens"]);
    resp["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens")
}

#[tokio::test]
async fn a_string_gives_one_unit_vector_and_exact_usage() {
    let resp = embed(json!({"model": ALIAS, "input": "hello world"})).await;
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["model"], ALIAS);
    let v = vectors(&resp);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), 384);
    let norm = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    // [CLS] hello world [SEP]
    assert_eq!(prompt_tokens(&resp), 4);
}

#[tokio::test]
async fn every_input_form_embeds_the_same_text_alike() {
    let text = embed(json!({"model": ALIAS, "input": "hello world"})).await;
    let reference = &vectors(&text)[0];
    // cl100k_base ids of "hello world", as OpenAI clients send them to an OpenAI name.
    let cl100k = embed(json!({"model": ALIAS, "input": [15339, 1917]})).await;
    let cl100k_lists = embed(json!({"model": ALIAS, "input": [[15339, 1917], [15339]]})).await;
    // The model's own (BERT) ids, sent to the model's own id.
    let own = embed(json!({"model": MODEL, "input": [7592, 2088]})).await;
    for (what, resp) in [("cl100k list", &cl100k), ("cl100k lists", &cl100k_lists), ("own ids", &own)] {
        let v = &vectors(resp)[0];
        assert!(cosine(v, reference) > 0.99999, "{what}: cosine {}", cosine(v, reference));
        assert!(prompt_tokens(resp) >= 4);
    }
    assert_eq!(prompt_tokens(&cl100k), 4, "usage counts the real model's tokens");
    assert_eq!(prompt_tokens(&cl100k_lists), 4 + 3);
    assert_eq!(vectors(&cl100k_lists).len(), 2);

    let texts = ["hello world", "The cat sat on the mat.", "Embeddings turn text into vectors."];
    let listed = embed(json!({"model": ALIAS, "input": texts})).await;
    let listed = vectors(&listed);
    assert_eq!(listed.len(), 3);
    for (text, v) in texts.iter().zip(&listed) {
        let solo = &vectors(&embed(json!({"model": ALIAS, "input": text})).await)[0];
        assert!(cosine(v, solo) > 0.99999, "{text}: list vs solo");
    }
    assert!(cosine(&listed[1], &listed[2]) < 0.9, "different sentences must differ");
}

#[tokio::test]
async fn base64_is_the_float_vector_little_endian() {
    let float = embed(json!({"model": ALIAS, "input": "base64 and floats", "encoding_format": "float"})).await;
    let b64 = embed(json!({"model": ALIAS, "input": "base64 and floats", "encoding_format": "base64"})).await;
    assert!(b64["data"][0]["embedding"].is_string());
    let (f, b) = (&vectors(&float)[0], &vectors(&b64)[0]);
    assert_eq!(b.len(), 384);
    assert!(f.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1e-6)), "floats and base64 differ");
}

#[tokio::test]
async fn dimensions_truncate_and_renormalise() {
    let full = &vectors(&embed(json!({"model": ALIAS, "input": "short vectors"})).await)[0];
    for dims in [1, 64, 384] {
        let resp = embed(json!({"model": ALIAS, "input": "short vectors", "dimensions": dims, "user": "tester"})).await;
        let v = &vectors(&resp)[0];
        assert_eq!(v.len(), dims);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "dims {dims}: norm {norm}");
        assert!(cosine(v, &full[..dims]) > 0.99999, "dims {dims}: not the leading components");
    }
}

#[tokio::test]
async fn bad_inputs_get_openai_errors() {
    let over_window = "word ".repeat(300); // 300 WordPiece tokens + [CLS] + [SEP]
    let too_many: Vec<&str> = vec!["x"; 2049];
    let cases: Vec<(Value, &str, Option<&str>, Option<&str>)> = vec![
        (json!({"model": ALIAS}), "'input' is a required property", Some("input"), None),
        (json!({"model": ALIAS, "input": ""}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": []}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": [""]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": ["a", ""]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": ["a", 1]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": [1, "a"]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": [[1], []]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": [{"text": "a"}]}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": 42}), INVALID_INPUT, None, None),
        (json!({"model": ALIAS, "input": too_many}), INVALID_INPUT, None, None),
        (
            json!({"model": ALIAS, "input": "x", "dimensions": 385}),
            "Invalid 'dimensions': integer above maximum value. Expected a value <= 384, but got 385 instead.",
            Some("dimensions"),
            None,
        ),
        (json!({"model": ALIAS, "input": "x", "dimensions": 0}), "0 is less than the minimum of 1 - 'dimensions'", Some("dimensions"), None),
        (
            json!({"model": ALIAS, "input": "x", "encoding_format": "int8"}),
            "Invalid value: 'int8'. Supported values are: 'float' and 'base64'.",
            Some("encoding_format"),
            None,
        ),
        (
            json!({"model": ALIAS, "input": ["fits", over_window]}),
            "This model's maximum context length is 256 tokens, however you requested 302 tokens (302 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.",
            Some("input"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, message, param, code) in cases {
        let (status, resp) = post(server(), "/v1/embeddings", &body).await;
        let got = assert_error(status, &resp, 400, "invalid_request_error", param, code);
        assert_eq!(got, message, "body: {}", &body.to_string()[..body.to_string().len().min(200)]);
        openapi::assert_matches("ErrorResponse", &resp);
    }
}

#[tokio::test]
async fn the_window_holds_exactly_254_tokens_of_text() {
    let fits = "word ".repeat(254);
    let resp = embed(json!({"model": ALIAS, "input": fits})).await;
    assert_eq!(prompt_tokens(&resp), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_each_get_their_solo_result() {
    let texts: Vec<String> = (0..16)
        .map(|i| format!("Request number {i} asks about {} and nothing else.", ["rivers", "stars", "bread", "engines"][i % 4]).repeat(1 + i % 3))
        .collect();
    let mut solo = Vec::new();
    for t in &texts {
        solo.push(vectors(&embed(json!({"model": ALIAS, "input": t})).await).remove(0));
    }
    let together = futures::future::join_all(texts.iter().map(|t| embed(json!({"model": ALIAS, "input": t})))).await;
    for (i, (resp, alone)) in together.iter().zip(&solo).enumerate() {
        let v = &vectors(resp)[0];
        assert!(cosine(v, alone) > 0.99999, "request {i}: concurrent {} vs solo", cosine(v, alone));
    }
}

/// all-mpnet-base-v2 through the server: 768-dim unit vectors in OpenAI's shape, its own
/// `dimensions` bound and 384-token window answered with OpenAI's errors.
#[tokio::test]
async fn mpnet_serves_its_own_dimensions_and_window() {
    const MPNET: &str = "all-mpnet-base-v2";
    let server = Server::start(&["--models", MPNET], None);
    let resp = ok(&server, "/v1/embeddings", &json!({"model": MPNET, "input": ["a red apple", "a green apple"]})).await;
    openapi::assert_matches("CreateEmbeddingResponse", &resp);
    let vs = vectors(&resp);
    assert_eq!(vs.len(), 2);
    for v in &vs {
        assert_eq!(v.len(), 768);
        assert!((cosine(v, v) - 1.0).abs() < 1e-4 && (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-3);
    }
    let cases = [
        (
            json!({"model": MPNET, "input": "x", "dimensions": 769}),
            "Invalid 'dimensions': integer above maximum value. Expected a value <= 768, but got 769 instead.",
            Some("dimensions"),
            None,
        ),
        (
            json!({"model": MPNET, "input": "word ".repeat(400)}),
            "This model's maximum context length is 384 tokens, however you requested 402 tokens (402 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.",
            Some("input"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, message, param, code) in cases {
        let (status, resp) = post(&server, "/v1/embeddings", &body).await;
        assert_eq!(assert_error(status, &resp, 400, "invalid_request_error", param, code), message);
        openapi::assert_matches("ErrorResponse", &resp);
    }
}
