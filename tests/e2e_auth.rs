//! API keys (Authorization: Bearer) and the refusal to listen on a public
//! address without them.
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-right-key";
const OTHER_KEY: &str = "sk-test-second-key";

async fn get_with(server: &Server, path: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().get(server.url(path));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    read_json(req.send().await.expect("send")).await
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let server = Server::start(&["--models", SMOL, "--api-key", KEY, "--api-key", OTHER_KEY], Some(KEY));

    let (status, body) = get_with(&server, "/v1/models", None).await;
    assert_eq!(status, 401, "no key: {body}");
    assert_error_shape(&body);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    let (status, body) = get_with(&server, "/v1/models", Some("Bearer sk-wrong")).await;
    assert_error(status, &body, 401, "invalid_request_error", None, Some("invalid_api_key"));
    assert!(!body["error"]["message"].as_str().unwrap_or_default().contains(KEY), "never echo a real key");

    let (status, body) = get_with(&server, "/v1/models", Some(&format!("Basic {KEY}"))).await;
    assert_eq!(status, 401, "only Bearer auth: {body}");
    assert_error_shape(&body);

    for key in [KEY, OTHER_KEY] {
        let (status, body) = get_with(&server, "/v1/models", Some(&format!("Bearer {key}"))).await;
        assert_eq!(status, 200, "{key}: {body}");
    }

    // Generation endpoints are guarded too, before the body is even looked at.
    let resp = client().post(server.url("/v1/chat/completions")).json(&chat(SMOL, "Hi", 1)).send().await.expect("send");
    let (status, body) = read_json(resp).await;
    assert_eq!(status, 401, "{body}");
    let resp = client().post(server.url("/v1/chat/completions")).bearer_auth(KEY).json(&chat(SMOL, "Hi", 1)).send().await.expect("send");
    let (status, body) = read_json(resp).await;
    assert_eq!(status, 200, "{body}");
}

/// 200 with this key, 401 `invalid_api_key` with any other.
async fn assert_only_these_keys(server: &Server, keys: &[&str]) {
    for key in keys {
        let (status, body) = get_with(server, "/v1/models", Some(&format!("Bearer {key}"))).await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    for wrong in ["sk-not-listed", "# a comment line", ""] {
        let (status, body) = get_with(server, "/v1/models", Some(&format!("Bearer {wrong}"))).await;
        assert_eq!(status, 401, "{wrong:?} is not a key: {body}");
    }
    let (status, body) = get_with(server, "/v1/models", None).await;
    assert_error(status, &body, 401, "invalid_request_error", None, Some("invalid_api_key"));
}

#[tokio::test]
async fn keys_from_the_environment_and_a_keys_file() {
    let file = std::env::temp_dir().join(format!("hearth-keys-{}.txt", std::process::id()));
    std::fs::write(&file, "# keys of the e2e test\nsk-from-file-1\n\n  sk-from-file-2  \n").expect("write the keys file");
    let file_arg = file.to_str().expect("utf-8 path");
    let server =
        Server::start_with_env(&["--models", SMOL, "--api-keys-file", file_arg], Some("sk-from-env-1"), &[("HEARTH_API_KEYS", "sk-from-env-1,sk-from-env-2")]);
    assert_only_these_keys(&server, &["sk-from-env-1", "sk-from-env-2", "sk-from-file-1", "sk-from-file-2"]).await;
    drop(server);

    // The file alone, named by its environment variable.
    let server = Server::start_with_env(&["--models", SMOL], Some("sk-from-file-1"), &[("HEARTH_API_KEYS_FILE", file_arg)]);
    assert_only_these_keys(&server, &["sk-from-file-1", "sk-from-file-2"]).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn insecure_public_bind_serves_without_keys_when_allowed() {
    let server = Server::start_on_host("0.0.0.0", &["--models", SMOL, "--allow-insecure-no-auth"], None, &[]);
    let (status, body) = get_with(&server, "/v1/models", None).await;
    assert_eq!(status, 200, "no key needed: {body}");
    let resp = client().post(server.url("/v1/chat/completions")).json(&chat(SMOL, "Hi", 1)).send().await.expect("send");
    assert_eq!(read_json(resp).await.0, 200);
}

#[test]
fn public_bind_without_keys_is_refused() {
    let port = free_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--host", "0.0.0.0", "--port", &port, "--models", SMOL])
        .env_remove("HEARTH_API_KEYS")
        .env_remove("HEARTH_API_KEYS_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hearth");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hearth serve --host 0.0.0.0 without an API key kept running; it must refuse");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase() + &String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(!status.success(), "must exit non-zero: {stderr}");
    assert!(stderr.contains("key"), "the message must say an API key is needed: {stderr}");
}
