//! `/v1/files`: upload, list, retrieve, download, delete, in OpenAI's shapes.
//! Files are kept until deleted. A file belongs to the key that uploaded it
//! (`0004_file_owner.sql`): another key is answered as for an unknown id; admin
//! keys see every file. An upload's bytes stream to a temporary blob;
//! only once they are whole and durable is the record written and the upload
//! answered, so an interrupted upload leaves nothing behind.
use crate::auth::Caller;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::jobs::{caller, CallerExt};
use crate::platform::Platform;
use crate::state::AppState;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_store::blobs::BlobWriter;
use hearth_store::{FileRecord, ListOrder};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub const PURPOSES: [&str; 4] = ["fine-tune", "batch", "assistants", "user_data"];
/// Bytes gathered before each (blocking) write to the blob.
const WRITE_CHUNK: usize = 1024 * 1024;

fn platform(state: &AppState) -> Result<&Arc<Platform>, ApiError> {
    state.platform.as_ref().ok_or_else(|| ApiError::internal("this server was started without a store"))
}

pub(crate) fn object(f: &FileRecord) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": null,
    })
}

fn no_such_file(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No such File object: {id}"), INVALID_REQUEST, Some("id"), None)
}

/// The key whose files `caller` sees; None: every file (admin keys, and every
/// caller of a server without keys).
pub(crate) fn viewer(caller: &Caller) -> Option<&str> {
    if caller.admin {
        None
    } else {
        caller.key_id.as_deref()
    }
}

/// The record of file `id`, when `caller` may see it.
pub(crate) async fn visible_file(platform: &Platform, caller: &Caller, id: &str) -> Result<Option<FileRecord>, ApiError> {
    let file = platform.store.file(id).await.map_err(internal)?;
    Ok(file.filter(|f| f.visible_to(viewer(caller))))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

pub async fn upload(State(state): State<Arc<AppState>>, who: CallerExt, form: Result<Multipart, MultipartRejection>) -> Result<Json<Value>, ApiError> {
    let platform = platform(&state)?.clone();
    let limit = platform.config.max_file_bytes;
    let mut form = form?;
    let mut purpose = None;
    let mut upload: Option<(Box<dyn BlobWriter>, String, JsonlCheck)> = None;
    while let Some(mut field) = form.next_field().await? {
        match field.name().unwrap_or_default() {
            "purpose" => purpose = Some(field.text().await?),
            "file" => {
                let filename = field.file_name().unwrap_or("file").to_string();
                let mut writer = blocking({
                    let p = platform.clone();
                    move || p.blobs.create()
                })
                .await?;
                let mut check = JsonlCheck::default();
                let mut pending: Vec<u8> = Vec::new();
                let mut total = 0usize;
                while let Some(chunk) = field.chunk().await? {
                    total += chunk.len();
                    if total > limit {
                        return Err(ApiError::file_too_large(limit, Some(total)));
                    }
                    check.feed(&chunk);
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= WRITE_CHUNK {
                        writer = write(writer, std::mem::take(&mut pending)).await?;
                    }
                }
                writer = write(writer, pending).await?;
                check.finish();
                upload = Some((writer, filename, check));
            }
            // Other fields are ignored, as OpenAI does.
            _ => {}
        }
    }
    let Some(purpose) = purpose else {
        return Err(ApiError::invalid("'purpose' is a required property", Some("purpose")));
    };
    if !PURPOSES.contains(&purpose.as_str()) {
        return Err(ApiError::invalid(format!("'{purpose}' is not one of ['fine-tune', 'batch', 'assistants', 'user_data'] - 'purpose'"), Some("purpose")));
    }
    let Some((writer, filename, check)) = upload else {
        return Err(ApiError::invalid("'file' is a required property", Some("file")));
    };
    if purpose == "fine-tune" {
        if let Some(problem) = check.problem {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid file format for Fine-Tuning API. {problem}"),
                INVALID_REQUEST,
                Some("file"),
                Some("invalid_file_format"),
            ));
        }
    }
    let id = FileRecord::new_id();
    let committed = blocking({
        let id = id.clone();
        move || writer.commit(&id)
    })
    .await?;
    let record = FileRecord::new(id.clone(), &purpose, &filename, committed.bytes, committed.sha256).owned_by(caller(who).key_id);
    if let Err(e) = platform.store.insert_file(&record).await {
        let _ = blocking(move || platform.blobs.remove(&id)).await;
        return Err(internal(e));
    }
    Ok(Json(object(&record)))
}

async fn write(mut writer: Box<dyn BlobWriter>, bytes: Vec<u8>) -> Result<Box<dyn BlobWriter>, ApiError> {
    if bytes.is_empty() {
        return Ok(writer);
    }
    blocking(move || writer.write(&bytes).map(|()| writer)).await
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?.map_err(internal)
}

#[derive(Deserialize)]
pub struct ListParams {
    purpose: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    order: Option<String>,
}

pub async fn list(State(state): State<Arc<AppState>>, who: CallerExt, Query(params): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let platform = platform(&state)?;
    let limit = match params.limit.as_deref() {
        None => 10_000,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err(ApiError::invalid(format!("Invalid 'limit': expected an integer between 1 and 10000, but got {text} instead."), Some("limit"))),
        },
    };
    let order = match params.order.as_deref() {
        None | Some("desc") => ListOrder::Desc,
        Some("asc") => ListOrder::Asc,
        Some(other) => return Err(ApiError::invalid(format!("Invalid 'order': expected 'asc' or 'desc', but got '{other}' instead."), Some("order"))),
    };
    // One more than asked tells whether there are more.
    let caller = caller(who);
    let mut files = platform.store.list_files(viewer(&caller), params.purpose.as_deref(), params.after.as_deref(), limit + 1, order).await.map_err(internal)?;
    let has_more = files.len() as i64 > limit;
    files.truncate(limit as usize);
    Ok(Json(json!({
        "object": "list",
        "data": files.iter().map(object).collect::<Vec<_>>(),
        "first_id": files.first().map(|f| f.id.clone()),
        "last_id": files.last().map(|f| f.id.clone()),
        "has_more": has_more,
    })))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let file = visible_file(platform(&state)?, &caller(who), &id).await?.ok_or_else(|| no_such_file(&id))?;
    Ok(Json(object(&file)))
}

pub async fn content(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Response, ApiError> {
    let platform = platform(&state)?.clone();
    let file = visible_file(&platform, &caller(who), &id).await?.ok_or_else(|| no_such_file(&id))?;
    let bytes = blocking(move || platform.blobs.read(&id)).await?;
    // The checksum taken at upload guards against bytes changed on disk.
    let sha = hex_sha256(&bytes);
    if sha != file.sha256 {
        return Err(ApiError::internal(format!("file {} does not match its checksum", file.id)));
    }
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn delete(State(state): State<Arc<AppState>>, who: CallerExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let platform = platform(&state)?.clone();
    if visible_file(&platform, &caller(who), &id).await?.is_none() {
        return Err(no_such_file(&id));
    }
    // The record goes first: a crash between the two leaves bytes without a
    // record, which the next start sweeps, never a record without bytes.
    if !platform.store.delete_file(&id).await.map_err(internal)? {
        return Err(no_such_file(&id));
    }
    let name = id.clone();
    blocking(move || platform.blobs.remove(&name)).await?;
    Ok(Json(json!({ "id": id, "object": "file", "deleted": true })))
}

/// Checks, as bytes arrive, that a file is JSONL of fine-tuning examples:
/// chat (`messages`) or prompt/completion, one JSON object per line. Keeps the
/// first problem, naming its line.
#[derive(Default)]
struct JsonlCheck {
    line: Vec<u8>,
    number: usize,
    examples: usize,
    problem: Option<String>,
}

impl JsonlCheck {
    fn feed(&mut self, mut bytes: &[u8]) {
        while self.problem.is_none() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&bytes[..end]);
                    self.check_line();
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }

    fn finish(&mut self) {
        if self.problem.is_none() && !self.line.is_empty() {
            self.check_line();
        }
        if self.problem.is_none() && self.examples == 0 {
            self.problem = Some("The file contains no examples: expected one JSON object per line.".into());
        }
    }

    fn check_line(&mut self) {
        self.number += 1;
        let line = std::mem::take(&mut self.line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if let Err(what) = example_problem(&line) {
            self.problem = Some(format!("Line {}: {what}", self.number));
        } else {
            self.examples += 1;
        }
    }
}

pub(crate) fn example_problem(line: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON ({e})."))?;
    let Some(obj) = value.as_object() else { return Err("expected a JSON object.".into()) };
    if let Some(messages) = obj.get("messages") {
        let Some(messages) = messages.as_array().filter(|m| !m.is_empty()) else {
            return Err("'messages' must be a non-empty array.".into());
        };
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str);
            if !matches!(role, Some("system" | "developer" | "user" | "assistant" | "tool")) {
                return Err(format!("messages[{i}] has no valid 'role' (system, user, assistant or tool)."));
            }
            let content = m.get("content");
            let has_tool_calls = m.get("tool_calls").is_some_and(Value::is_array);
            if !(content.is_some_and(|c| c.is_string() || c.is_array()) || role == Some("assistant") && has_tool_calls) {
                return Err(format!("messages[{i}] has no 'content'."));
            }
        }
        if !messages.iter().any(|m| m.get("role").and_then(Value::as_str) == Some("assistant")) {
            return Err("the example has no assistant message to learn from.".into());
        }
        return Ok(());
    }
    match (obj.get("prompt"), obj.get("completion")) {
        (Some(p), Some(c)) if p.is_string() && c.is_string() => Ok(()),
        (Some(_), Some(_)) => Err("'prompt' and 'completion' must be strings.".into()),
        _ => Err("expected a 'messages' array, or 'prompt' and 'completion'.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, chunk: usize) -> Option<String> {
        let mut c = JsonlCheck::default();
        for piece in text.as_bytes().chunks(chunk) {
            c.feed(piece);
        }
        c.finish();
        c.problem
    }

    #[test]
    fn jsonl_shapes() {
        let chat = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;
        let pc = r#"{"prompt":"a","completion":"b"}"#;
        for chunk in [1, 3, 1000] {
            assert_eq!(check(&format!("{chat}\n{pc}\n\n"), chunk), None);
            assert_eq!(check(&format!("{chat}\n{pc}"), chunk), None, "no final newline");
            let bad = check(&format!("{chat}\n{pc}\n{{\"prompt\": 1, \"completion\": \"x\"}}\n"), chunk).unwrap();
            assert!(bad.starts_with("Line 3:"), "{bad}");
            let bad = check(&format!("{chat}\nnot json\n"), chunk).unwrap();
            assert!(bad.starts_with("Line 2: not valid JSON"), "{bad}");
        }
        assert!(check(r#"{"messages":[{"role":"user","content":"hi"}]}"#, 9).unwrap().contains("no assistant"));
        assert!(check("", 1).unwrap().contains("no examples"));
        assert!(check("[1,2]\n", 1).unwrap().starts_with("Line 1: expected a JSON object"));
    }
}
