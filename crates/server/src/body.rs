//! Request bodies: bytes -> JSON value, with OpenAI's errors (any content type is accepted).
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde_json::Value;

pub fn json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::malformed_json())
}
