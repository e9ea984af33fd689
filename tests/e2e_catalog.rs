//! A user catalog file: a newer snapshot moves the family alias while pinned
//! names stay; a snapshot past its deprecation date answers with an error
//! naming its replacement.
mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

const NEXT: &str = "smollm2-next-snapshot";
const RETIRED: &str = "smollm2-retired-snapshot";

fn models_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| hearth_home().join("models"))
}

/// The user catalog: a newer "smollm2" snapshot (served by the Qwen file, so
/// its answers are easy to tell apart) and a retired snapshot.
fn catalog_file() -> PathBuf {
    let dir = models_dir();
    let qwen = dir.join(format!("{QWEN}.gguf"));
    let smol = dir.join(format!("{SMOL}.gguf"));
    let toml = format!(
        r#"
[[models]]
id = "{NEXT}"
family = "smollm2"
format = "gguf"
context_window = 8192
endpoints = ["chat_completions", "completions"]
owned_by = "tester"
created = 1900000000
source = {{ kind = "path", path = "{qwen}" }}

[[models]]
id = "{RETIRED}"
family = "retired-family"
format = "gguf"
context_window = 8192
endpoints = ["chat_completions", "completions"]
owned_by = "tester"
created = 1600000000
deprecation_date = "2001-01-01"
replacement = "{SMOL}"
source = {{ kind = "path", path = "{smol}" }}

[[aliases]]
id = "retired-alias"
target = "{RETIRED}"
"#,
        qwen = qwen.display(),
        smol = smol.display(),
    );
    let path = std::env::temp_dir().join(format!("hearth-e2e-catalog-{}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write the user catalog");
    path
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let file = catalog_file();
        let file = file.to_string_lossy().to_string();
        let models = format!("{SMOL},{NEXT}");
        Server::start(&["--catalog", &file, "--models", &models], None)
    })
}

async fn answer(model: &str) -> String {
    let body = ok(server(), "/v1/chat/completions", &chat(model, "Name a fruit.", 8)).await;
    assert_eq!(body["model"], model);
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn newer_snapshot_moves_the_alias_pinned_stays() {
    let newest = answer(NEXT).await;
    let original = answer(SMOL).await;
    assert_ne!(newest, original, "the two snapshots are different models");
    assert_eq!(answer("gpt-3.5-turbo").await, newest, "the family alias follows the newest snapshot");
    assert_eq!(answer("gpt-3.5-turbo-0301").await, original, "the pinned alias stays");
}

#[tokio::test]
async fn listed_with_owner() {
    let (status, body) = get(server(), "/v1/models").await;
    assert_eq!(status, 200);
    let data = body["data"].as_array().expect("data");
    let next = data.iter().find(|m| m["id"] == NEXT).unwrap_or_else(|| panic!("{NEXT} not listed: {body}"));
    assert_eq!(next["owned_by"], "tester");
    assert_eq!(next["created"], 1900000000);
    let (status, body) = get(server(), &format!("/v1/models/{NEXT}")).await;
    assert_eq!(status, 200, "{body}");
}

fn assert_deprecated(status: u16, body: &Value, model: &str) {
    // README: "from this date on: 404 naming `replacement`", as OpenAI answers a retired model.
    let msg = assert_error(status, body, 404, "invalid_request_error", None, Some("model_not_found"));
    assert!(msg.contains("deprecated"), "{model}: the message says it is deprecated: {msg}");
    assert!(msg.contains(SMOL), "{model}: the message names the replacement: {msg}");
}

#[tokio::test]
async fn deprecated_snapshot_names_its_replacement() {
    for model in [RETIRED, "retired-alias"] {
        let (status, body) = post(server(), "/v1/chat/completions", &chat(model, "Hi", 2)).await;
        assert_deprecated(status, &body, model);
        let (status, body) = post(server(), "/v1/completions", &completion(model, "Hi".into(), 2)).await;
        assert_deprecated(status, &body, model);
    }
}
