//! The bad-input corpus: every case in tests/bad_input/cases.json (requests to
//! every endpoint: JSON bodies, schemas, token ids, multipart forms, audio
//! headers, routes and methods) is sent to the real server, and the answer must
//! be exactly the status and OpenAI error body the case records.
//! scripts/bad_input_cases.py builds the cases (see its header).
mod common;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const MODELS: &str = "smollm2-135m-instruct-q4_1,all-minilm-l6-v2,hearth-moderation-1,whisper-tiny.en";

fn request(client: &reqwest::Client, server: &Server, case: &Value) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(case["method"].as_str().unwrap().as_bytes()).unwrap();
    let builder = client.request(method, server.url(case["path"].as_str().unwrap()));
    let b64 = |s: &Value| base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap()).unwrap();
    let typed = |b: reqwest::RequestBuilder| b.header("content-type", case["content_type"].as_str().unwrap());
    if let Some(json) = case.get("json") {
        let mut body = json.clone();
        if let Some(fill) = case.get("fill") {
            let items = vec![fill["item"].clone(); fill["times"].as_u64().unwrap() as usize];
            body[fill["field"].as_str().unwrap()] = Value::Array(items);
        }
        builder.header("content-type", "application/json").body(body.to_string())
    } else if let Some(raw) = case.get("raw") {
        typed(builder).body(raw.as_str().unwrap().to_string())
    } else if let Some(raw) = case.get("raw_base64") {
        typed(builder).body(b64(raw))
    } else if let Some(repeat) = case.get("raw_repeat") {
        typed(builder).body(repeat["text"].as_str().unwrap().repeat(repeat["times"].as_u64().unwrap() as usize))
    } else if let Some(form) = case.get("multipart") {
        let mut multipart = reqwest::multipart::Form::new();
        for field in form["fields"].as_array().unwrap() {
            multipart = multipart.text(field[0].as_str().unwrap().to_string(), field[1].as_str().unwrap().to_string());
        }
        if let Some(file) = form["file"].as_object() {
            let part = reqwest::multipart::Part::bytes(b64(&file["base64"])).file_name(file["name"].as_str().unwrap().to_string());
            multipart = multipart.part("file", part);
        }
        // Named file parts (images: `image`, `mask`); `pad_to` appends zero bytes up to that size.
        for file in form["files"].as_array().into_iter().flatten() {
            let mut bytes = b64(&file["base64"]);
            bytes.resize(bytes.len().max(file["pad_to"].as_u64().unwrap_or(0) as usize), 0);
            let part = reqwest::multipart::Part::bytes(bytes).file_name(file["name"].as_str().unwrap().to_string());
            multipart = multipart.part(file["field"].as_str().unwrap().to_string(), part);
        }
        builder.multipart(multipart)
    } else {
        builder
    }
}

#[tokio::test]
async fn every_bad_request_gets_its_exact_status_and_error_body() {
    let corpus: Value = serde_json::from_str(include_str!("bad_input/cases.json")).expect("cases.json parses");
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "the corpus holds {} cases", cases.len());
    let server = Server::start(&["--models", MODELS], None);
    let client = client();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let resp = request(&client, &server, case).send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status != case["status"].as_u64().unwrap() as u16 || body != case["body"] {
            failures.push(format!("{name}: got {status} {body}\n  want {} {}", case["status"], case["body"]));
            continue;
        }
        assert_error_shape(&body);
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(!server.log().contains("panicked"), "a bad request reached a panic:\n{}", server.log());
}
