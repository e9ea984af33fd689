//! A fine-tuning job as hearth keeps it (one record for both APIs), what a
//! create request may ask for, and the bases that can be fine-tuned.
use crate::error::{ApiError, INVALID_REQUEST};
use crate::state::AppState;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Store kinds: the current API's jobs and the legacy API's fine-tunes.
pub const CURRENT: &str = "fine_tuning";
pub const LEGACY: &str = "fine_tune";
/// Statuses after which a job does not change.
pub const FINISHED: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// What training data a base learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// `prompt`/`completion` lines (gemma-3-270m: the davinci/curie/babbage/ada family).
    Completion,
    /// `messages` lines, through the base's chat template (SmolLM2-135M-Instruct).
    Chat,
}

/// The catalog models that can be fine-tuned, and their data.
const TRAINABLE: [(&str, DataKind); 2] = [("gemma-3-270m-q4_k_m", DataKind::Completion), ("smollm2-135m-instruct-q4_1", DataKind::Chat)];

/// A hyperparameter: `None` is "auto" until the job starts and resolves it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hyper {
    pub n_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rate_multiplier: Option<f64>,
}

/// A fine-tuning job, whichever API made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FtJob {
    pub id: String,
    pub legacy: bool,
    /// What the create request asked for (stored as fields of the job itself).
    #[serde(flatten)]
    pub asked: Requested,
    pub status: String,
    pub fine_tuned_model: Option<String>,
    pub trained_tokens: Option<i64>,
    pub result_files: Vec<String>,
    /// `{code, message, param}` of a failed job.
    pub error: Option<Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// What a create request of either API asked for (validated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requested {
    /// The model name the client asked for (`davinci-002`, `curie`, ...).
    pub model: String,
    /// The catalog model it resolved to.
    pub base: String,
    pub data: DataKind,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub hyper: Hyper,
    pub suffix: Option<String>,
    pub seed: i64,
}

impl FtJob {
    /// A new job, validating its files: the one constructor of both APIs
    /// (`legacy`: a `/v1/fine-tunes` job, ids `ft-`; else `ftjob-`).
    pub fn new(legacy: bool, asked: Requested) -> Self {
        let created = hearth_store::now();
        Self {
            id: hearth_store::time_id(if legacy { "ft-" } else { "ftjob-" }),
            legacy,
            asked,
            status: "validating_files".into(),
            fine_tuned_model: None,
            trained_tokens: None,
            result_files: vec![],
            error: None,
            created_at: created,
            updated_at: created,
            finished_at: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        if self.legacy {
            LEGACY
        } else {
            CURRENT
        }
    }
}

fn not_trainable(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("Model {name} is not available for fine-tuning or does not exist."),
        INVALID_REQUEST,
        Some("model"),
        Some("model_not_available"),
    )
}

/// The loaded catalog model a fine-tune of `name` trains, and its data kind.
pub fn trainable_base(state: &AppState, name: &str) -> Result<(String, DataKind), ApiError> {
    let today = state.today();
    let resolved = match state.catalog.resolve(name, None, &today) {
        Ok(r) => r,
        Err(_) if state.tuned_model(name).is_some() => return Err(not_trainable(name)),
        Err(_) => return Err(ApiError::model_not_found(name)),
    };
    let id = resolved.entry.id.clone();
    let Some((_, kind)) = TRAINABLE.iter().find(|(t, _)| *t == id) else { return Err(not_trainable(name)) };
    if !state.engines.contains_key(&id) {
        return Err(ApiError::model_not_found(name));
    }
    Ok((id, *kind))
}

fn out_of_range(param: &str, what: &str, got: &Value) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("Invalid '{param}': expected 'auto' or {what}, but got {got} instead."),
        INVALID_REQUEST,
        Some(param),
        Some("invalid_value"),
    )
}

/// One hyperparameter as sent: absent or "auto" is None.
fn integer(value: Option<&Value>, param: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n as u32)),
            _ => Err(out_of_range(param, &format!("an integer between {} and {}", range.start(), range.end()), v)),
        },
    }
}

fn multiplier(value: Option<&Value>, param: &str) -> Result<Option<f64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x <= 10.0 => Ok(Some(x)),
            _ => Err(out_of_range(param, "a number greater than 0 and at most 10", v)),
        },
    }
}

/// Hyperparameters from an object (`hyperparameters` of the current API, or the
/// legacy request itself), each parameter named as `prefix` + its name.
pub fn hyper(obj: &Value, prefix: &str) -> Result<Hyper, ApiError> {
    if !(obj.is_object() || obj.is_null()) {
        return Err(ApiError::invalid(format!("Invalid type for '{}': expected an object.", prefix.trim_end_matches('.')), Some(prefix.trim_end_matches('.'))));
    }
    let name = |n: &str| format!("{prefix}{n}");
    Ok(Hyper {
        n_epochs: integer(obj.get("n_epochs"), &name("n_epochs"), 1..=50)?,
        batch_size: integer(obj.get("batch_size"), &name("batch_size"), 1..=256)?,
        learning_rate_multiplier: multiplier(obj.get("learning_rate_multiplier"), &name("learning_rate_multiplier"))?,
    })
}

/// A model-name suffix: up to `max` characters of letters, digits, `-` and `_`.
pub fn suffix(value: Option<&Value>, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("Invalid 'suffix': expected a string of at most {max} letters, digits, '-' or '_'."), Some("suffix"))),
    }
}

/// Checks every line of a training (or validation) file against what the base
/// learns from; the error names the first bad line.
pub fn check_data(bytes: &[u8], kind: DataKind, param: &str) -> Result<usize, ApiError> {
    let bad = |message: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid file format for Fine-Tuning API. {message}"),
            INVALID_REQUEST,
            Some(param),
            Some("invalid_file_format"),
        )
    };
    let mut examples = 0;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        crate::files::example_problem(line).map_err(|what| bad(format!("Line {}: {what}", i + 1)))?;
        let value: Value = serde_json::from_slice(line).map_err(|e| bad(format!("Line {}: {e}", i + 1)))?;
        let is_chat = value.get("messages").is_some();
        match (kind, is_chat) {
            (DataKind::Completion, true) => {
                return Err(bad(format!("Line {}: this base model learns from 'prompt' and 'completion' examples, not chat 'messages'.", i + 1)))
            }
            (DataKind::Chat, false) => return Err(bad(format!("Line {}: this chat model learns from 'messages' examples, not 'prompt'/'completion'.", i + 1))),
            _ => {}
        }
        examples += 1;
    }
    if examples == 0 {
        return Err(bad("The file contains no examples.".into()));
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs outlive the process: what a job asked for is stored as fields of the
    /// job itself, as before `Requested` was one part of it, so stored jobs still load.
    #[test]
    fn stored_job_keeps_its_request_fields_at_the_top() {
        let asked = Requested {
            model: "davinci".into(),
            base: "gemma-3-270m-q4_k_m".into(),
            data: DataKind::Completion,
            training_file: "file-a".into(),
            validation_file: None,
            hyper: Hyper { n_epochs: Some(3), ..Hyper::default() },
            suffix: Some("facts".into()),
            seed: 7,
        };
        let stored = serde_json::to_value(FtJob::new(false, asked)).unwrap();
        assert_eq!(stored["model"], "davinci");
        assert_eq!(stored["data"], "completion");
        assert_eq!(stored["hyper"]["n_epochs"], 3);
        assert_eq!(stored["seed"], 7);
        assert!(stored.get("asked").is_none(), "{stored}");
        let loaded: FtJob = serde_json::from_value(stored).unwrap();
        assert_eq!((loaded.asked.training_file.as_str(), loaded.asked.suffix.as_deref()), ("file-a", Some("facts")));
    }
}
