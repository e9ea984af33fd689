//! Every failure becomes an `ApiError`: the HTTP status and OpenAI's error body
//! are decided here and nowhere else.
use crate::limits::{BODY_LIMIT, FILE_LIMIT};
use crate::paths::endpoint_path;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::{ErrorResponse, Invalid};
use hearth_catalog::{Endpoint, ResolveError};
use hearth_engine::audio::{AudioError, SpeechError};
use hearth_engine::embed::EmbedError;
use hearth_engine::text::{ContextExceeded, EngineError, PromptError};

pub const INVALID_REQUEST: &str = "invalid_request_error";
pub const SERVER_ERROR: &str = "server_error";
const OVERLOADED: &str = "That model is currently overloaded with other requests. You can retry your request later.";
/// What a 429's `retry-after` says.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorResponse,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, kind: &str, param: Option<&str>, code: Option<&str>) -> Self {
        Self { status, body: ErrorResponse::new(message, kind, param, code) }
    }

    /// 400 invalid_request_error.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, INVALID_REQUEST, param, None)
    }

    pub fn malformed_json() -> Self {
        Self::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            None,
        )
    }

    pub fn unsupported_content_type(given: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unsupported content type: '{given}'. This API method only accepts 'application/json' requests, but you specified the header 'Content-Type: {given}'. Please try again with a supported content type."
            ),
            INVALID_REQUEST,
            None,
            Some("unsupported_content_type"),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("The request body is too large. The maximum size is {limit} bytes."), INVALID_REQUEST, None, None)
    }

    pub fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from your hearth administrator.",
            INVALID_REQUEST,
            None,
            Some("invalid_api_key"),
        )
    }

    pub fn incorrect_api_key(given: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            format!("Incorrect API key provided: {}. You can find your API key in your hearth configuration.", mask_key(given)),
            INVALID_REQUEST,
            None,
            Some("invalid_api_key"),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("The model `{model}` does not exist"), INVALID_REQUEST, None, Some("model_not_found"))
    }

    pub fn invalid_url(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("Invalid URL ({method} {path})"), INVALID_REQUEST, None, None)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, format!("Invalid method for URL ({method} {path})"), INVALID_REQUEST, None, None)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "The server had an error while processing your request. Sorry about that!", SERVER_ERROR, None, None)
    }

    /// An uploaded audio file over the limit (OpenAI's 25 MB).
    pub fn file_too_large(limit: usize, read: Option<usize>) -> Self {
        let read = read.map(|n| format!(" ({n} bytes read)")).unwrap_or_default();
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Maximum content size limit ({limit}) exceeded{read}"), INVALID_REQUEST, Some("file"), None)
    }

    pub fn overloaded() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, OVERLOADED, "requests", None, Some("rate_limit_exceeded"))
    }

    /// Prompt + completion over the window, worded as `endpoint` words it.
    pub fn context_exceeded(endpoint: Endpoint, e: ContextExceeded) -> Self {
        match endpoint {
            Endpoint::Completions => Self::context_exceeded_completion(e.window, e.prompt, e.completion.unwrap_or(0)),
            _ => Self::context_exceeded_chat(e.window, e.prompt, e.completion),
        }
    }

    /// A request of more sequences than the model can hold, running and queued:
    /// waiting would not help, so not a 429.
    pub fn beyond_capacity(sequences: usize, capacity: usize) -> Self {
        Self::invalid(
            format!(
                "This request needs {sequences} sequences (prompts × n, or × best_of for completions), but this server runs and queues at most {capacity} per model (--max-batch + --queue). Send fewer choices or prompts per request."
            ),
            Some("n"),
        )
    }

    /// Prompt + completion over the window (chat wording).
    pub fn context_exceeded_chat(window: usize, prompt: usize, completion: Option<usize>) -> Self {
        let message = match completion {
            Some(c) => format!(
                "This model's maximum context length is {window} tokens. However, you requested {} tokens ({prompt} in the messages, {c} in the completion). Please reduce the length of the messages or completion.",
                prompt + c
            ),
            None => format!(
                "This model's maximum context length is {window} tokens. However, your messages resulted in {prompt} tokens. Please reduce the length of the messages."
            ),
        };
        Self::new(StatusCode::BAD_REQUEST, message, INVALID_REQUEST, Some("messages"), Some("context_length_exceeded"))
    }

    /// Prompt + completion over the window (completions wording).
    pub fn context_exceeded_completion(window: usize, prompt: usize, completion: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "This model's maximum context length is {window} tokens, however you requested {} tokens ({prompt} in your prompt; {completion} for the completion). Please reduce your prompt; or completion length.",
                prompt + completion
            ),
            INVALID_REQUEST,
            Some("prompt"),
            Some("context_length_exceeded"),
        )
    }

    /// An embedding input over the window (OpenAI's embeddings wording: no completion part).
    pub fn context_exceeded_embedding(window: usize, prompt: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "This model's maximum context length is {window} tokens, however you requested {prompt} tokens ({prompt} in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
            ),
            INVALID_REQUEST,
            Some("input"),
            Some("context_length_exceeded"),
        )
    }

    /// The body of a mid-stream failure event.
    pub fn stream_failure(detail: &str) -> ErrorResponse {
        tracing::error!("generation failed mid-stream: {detail}");
        ErrorResponse::new(format!("The server had an error while generating: {detail}"), SERVER_ERROR, None, None)
    }
}

/// `sk-abcdefghijkl` -> `sk-********ijkl`: enough to recognise a key, not to use it.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let busy = self.body.error.message == OVERLOADED;
        let mut response = (self.status, Json(self.body)).into_response();
        // A 429 means the queue is full now; it drains as requests finish.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS));
            if busy {
                response.extensions_mut().insert(crate::access::EngineBusy);
            }
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::invalid(e.message, e.param.as_deref())
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound { model } => Self::model_not_found(&model),
            ResolveError::Deprecated { model, date, replacement } => {
                let instead = replacement.map(|r| format!(" Use `{r}` instead.")).unwrap_or_default();
                Self::new(
                    StatusCode::NOT_FOUND,
                    format!("The model `{model}` has been deprecated since {date}.{instead}"),
                    INVALID_REQUEST,
                    None,
                    Some("model_not_found"),
                )
            }
            ResolveError::WrongEndpoint { model, serves } => {
                let chat = serves.contains(&Endpoint::ChatCompletions);
                let completions = serves.contains(&Endpoint::Completions);
                let message = if chat && !completions {
                    "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use v1/chat/completions?".to_string()
                } else if completions && !chat {
                    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. Did you mean to use v1/completions?".to_string()
                } else {
                    let paths: Vec<&str> = serves.iter().map(|&e| endpoint_path(e).trim_start_matches('/')).collect();
                    format!("The model `{model}` is not supported by this endpoint. It serves: {}.", paths.join(", "))
                };
                Self::new(StatusCode::NOT_FOUND, message, INVALID_REQUEST, Some("model"), None)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded => Self::overloaded(),
            EngineError::InvalidRequest(message) => Self::invalid(message, None),
            EngineError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<PromptError> for ApiError {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::Template(e) => Self::invalid(format!("The messages could not be formatted for this model: {e}"), Some("messages")),
            PromptError::FimUnsupported => Self::invalid("suffix is not supported for this model", Some("suffix")),
            PromptError::TokenOutOfVocabulary { id, vocab_size } => {
                Self::invalid(format!("Invalid token id {id} in 'prompt': this model's vocabulary has {vocab_size} tokens."), Some("prompt"))
            }
            PromptError::Empty => Self::invalid("The prompt is empty.", Some("prompt")),
            PromptError::Tokenizer(detail) => Self::internal(detail),
        }
    }
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Overloaded => Self::overloaded(),
            EmbedError::InvalidInput(message) => Self::invalid(message, Some("input")),
            EmbedError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<SpeechError> for ApiError {
    fn from(e: SpeechError) -> Self {
        match e {
            SpeechError::Overloaded => Self::overloaded(),
            SpeechError::Audio(AudioError::TooShort) => {
                Self::new(StatusCode::BAD_REQUEST, AudioError::TooShort.to_string(), INVALID_REQUEST, Some("file"), Some("audio_too_short"))
            }
            SpeechError::Audio(AudioError::TooLong) => {
                Self::new(StatusCode::BAD_REQUEST, AudioError::TooLong.to_string(), INVALID_REQUEST, Some("file"), Some("audio_too_long"))
            }
            // Nobody reads this: the client is gone.
            SpeechError::Cancelled | SpeechError::Audio(AudioError::Cancelled(_)) => {
                Self::new(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST), "The request was cancelled.", INVALID_REQUEST, None, None)
            }
            SpeechError::Audio(e) => Self::new(StatusCode::BAD_REQUEST, e.to_string(), INVALID_REQUEST, Some("file"), Some("invalid_value")),
            SpeechError::Internal(e) => Self::internal(format!("{e:#}")),
        }
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(e: MultipartRejection) -> Self {
        Self::invalid(format!("Could not parse multipart form: {}", e.body_text()), None)
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::file_too_large(FILE_LIMIT, None)
        } else {
            Self::invalid(format!("Could not parse multipart form: {}", e.body_text()), None)
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::body_too_large(BODY_LIMIT)
        } else {
            Self::invalid(format!("Could not read the request body: {}", e.body_text()), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys() {
        assert_eq!(mask_key("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(mask_key("short"), "*****");
    }

    #[test]
    fn wrong_endpoint_wording() {
        let e: ApiError = ResolveError::WrongEndpoint { model: "m".into(), serves: vec![Endpoint::ChatCompletions] }.into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.body.error.message.starts_with("This is a chat model and not supported in the v1/completions endpoint."));
        assert_eq!(e.body.error.param.as_deref(), Some("model"));
        let e: ApiError = ResolveError::WrongEndpoint { model: "m".into(), serves: vec![Endpoint::Completions] }.into();
        assert!(e.body.error.message.starts_with("This is not a chat model"));
    }

    #[test]
    fn wrong_endpoint_lists_the_paths_it_serves_and_unknown_models_are_not_found() {
        let serves = vec![Endpoint::ChatCompletions, Endpoint::Completions];
        let e: ApiError = ResolveError::WrongEndpoint { model: "q".into(), serves }.into();
        assert_eq!(e.body.error.message, "The model `q` is not supported by this endpoint. It serves: v1/chat/completions, v1/completions.");
        let e: ApiError = ResolveError::NotFound { model: "gpt-5".into() }.into();
        assert_eq!((e.status, e.body.error.code.as_deref()), (StatusCode::NOT_FOUND, Some("model_not_found")));
        assert!(e.body.error.message.starts_with("The model `gpt-5` does not exist"), "{}", e.body.error.message);
    }

    #[test]
    fn deprecated_names_replacement() {
        let e: ApiError = ResolveError::Deprecated { model: "a".into(), date: "2024-01-04".into(), replacement: Some("b".into()) }.into();
        assert_eq!(e.body.error.message, "The model `a` has been deprecated since 2024-01-04. Use `b` instead.");
        assert_eq!(e.body.error.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn context_errors_worded_per_endpoint() {
        let e = ApiError::context_exceeded(Endpoint::ChatCompletions, ContextExceeded { window: 100, prompt: 10, completion: Some(91) });
        assert_eq!(e.body.error.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(
            e.body.error.message,
            "This model's maximum context length is 100 tokens. However, you requested 101 tokens (10 in the messages, 91 in the completion). Please reduce the length of the messages or completion."
        );
        assert_eq!(e.body.error.param.as_deref(), Some("messages"));
        let e = ApiError::context_exceeded(Endpoint::Completions, ContextExceeded { window: 100, prompt: 10, completion: Some(91) });
        assert_eq!(e.body.error.param.as_deref(), Some("prompt"));
    }

    #[test]
    fn overloaded_is_429() {
        let e: ApiError = EngineError::Overloaded.into();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body.error.code.as_deref(), Some("rate_limit_exceeded"));
    }
}
