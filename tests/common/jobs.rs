//! Helpers of the job tests (fine-tuning, batches, ownership), shared through
//! `common`: a data directory of the test's own with models linked from the
//! cache, file uploads, and polling a job until its status says it is done.
#![allow(dead_code)]
use super::{client, hearth_home, read_json, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A `$HEARTH_HOME` of the test's own, `hearth-e2e-{name}-{pid}` in the temp
/// folder (fine-tuned outputs never land in the shared cache), with `models`
/// linked from the cache.
pub fn linked_home(name: &str, models: &[&str]) -> PathBuf {
    let home = std::env::temp_dir().join(format!("hearth-e2e-{name}-{}", std::process::id()));
    let dir = home.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let cache = std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| hearth_home().join("models"));
    for id in models {
        let link = dir.join(format!("{id}.gguf"));
        if !link.exists() {
            std::os::unix::fs::symlink(cache.join(format!("{id}.gguf")), &link).unwrap();
        }
    }
    home
}

/// Uploads `text` as the file `name` for `purpose` (as `key`, where given); its id.
pub async fn upload(server: &Server, key: Option<&str>, purpose: &str, name: &str, text: String) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", purpose.to_string())
        .part("file", reqwest::multipart::Part::bytes(text.into_bytes()).file_name(name.to_string()));
    let mut req = client().post(server.url("/v1/files")).multipart(form);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let (status, body) = read_json(req.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// GETs `path` (as `key`, where given) every `every` until `done` holds for its
/// `status`; the last body. Panics on a non-200 answer or after `limit`.
pub async fn wait_status(server: &Server, key: Option<&str>, path: &str, every: Duration, limit: Duration, done: impl Fn(&str) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let mut req = client().get(server.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let (status, body) = read_json(req.send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        if done(body["status"].as_str().unwrap_or_default()) {
            return body;
        }
        assert!(start.elapsed() < limit, "{path} did not finish: {body}");
        tokio::time::sleep(every).await;
    }
}
