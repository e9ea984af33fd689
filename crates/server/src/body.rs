//! Request bodies: bytes -> JSON value, with OpenAI's errors.
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap};
use serde_json::Value;

/// The body as JSON. A `Content-Type` other than `application/json` (its
/// parameters, such as a charset, aside) is refused as OpenAI refuses it; a
/// request without one is read as JSON.
pub fn json(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let media_type = text.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::unsupported_content_type(&text));
        }
    }
    let bytes = body?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::malformed_json())
}
