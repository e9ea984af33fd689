//! `POST /v1/embeddings`: texts or token lists -> the model's token ids ->
//! batched engine -> vectors, optionally shortened, as floats or base64.
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hearth_api::embeddings::{Embedding, EmbeddingRequest, EmbeddingResponse, Input, INVALID_INPUT};
use hearth_catalog::Endpoint;
use hearth_engine::embed::EmbedEngine;
use std::sync::Arc;

/// Tokens of all inputs together, as OpenAI limits a request.
pub const MAX_REQUEST_TOKENS: usize = 300_000;

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json<EmbeddingResponse>, ApiError> {
    let req = EmbeddingRequest::parse(&crate::body::json(&headers, body)?)?;
    let (resolved, engine) = state.runtime::<EmbedEngine>(&req.model, Endpoint::Embeddings)?;
    let native = engine.dimensions();
    let dimensions = match req.dimensions {
        None => native,
        Some(d) if d <= native => d,
        Some(d) => {
            return Err(ApiError::invalid(
                format!("Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, but got {d} instead."),
                Some("dimensions"),
            ))
        }
    };
    // Token ids sent to an OpenAI name (an alias) are cl100k_base ids, what
    // OpenAI clients send; sent to the model's own id, they are its own ids.
    let openai_ids = resolved.requested != resolved.entry.id;
    let window = resolved.context_window.min(engine.max_tokens());
    let model = resolved.requested.clone();
    let engine = engine.clone();
    let input = req.input;
    // Tokenizing up to 2,048 texts is CPU work: keep it off the async workers.
    let inputs = tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || model_tokens(&engine, input, openai_ids)
    })
    .await
    .map_err(ApiError::internal)??;

    // Each input is framed by [CLS] and [SEP]: those count, as the model reads them.
    let framed = |ids: &Vec<u32>| ids.len() + 2;
    if let Some(longest) = inputs.iter().map(framed).max().filter(|&n| n > window) {
        return Err(ApiError::context_exceeded_embedding(window, longest));
    }
    let prompt_tokens: usize = inputs.iter().map(framed).sum();
    if prompt_tokens > MAX_REQUEST_TOKENS {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("Requested {prompt_tokens} tokens, max {MAX_REQUEST_TOKENS} tokens per request"),
            "max_tokens_per_request",
            None,
            Some("max_tokens_per_request"),
        ));
    }
    let vectors = engine.embed(inputs).await?;
    let data = vectors.iter().enumerate().map(|(i, v)| Embedding::new(i, &shorten(v, dimensions), req.encoding_format)).collect();
    Ok(Json(EmbeddingResponse::new(model, data, prompt_tokens)))
}

/// The model's token ids (without special tokens) for each input.
fn model_tokens(engine: &EmbedEngine, input: Input, openai_ids: bool) -> Result<Vec<Vec<u32>>, ApiError> {
    match input {
        Input::Texts(texts) => Ok(texts.iter().map(|t| engine.tokenize(t)).collect()),
        Input::Tokens(lists) if openai_ids => {
            let bpe = tiktoken_rs::cl100k_base_singleton();
            lists
                .iter()
                .map(|ids| {
                    // A token list may end inside a UTF-8 character: decode bytes, replace the broken tail.
                    let bytes = bpe.decode_bytes(ids).map_err(|_| ApiError::invalid(INVALID_INPUT, None))?;
                    Ok(engine.tokenize(&String::from_utf8_lossy(&bytes)))
                })
                .collect()
        }
        Input::Tokens(lists) => Ok(lists),
    }
}

/// The first `dimensions` components, scaled back to unit length.
fn shorten(vector: &[f32], dimensions: usize) -> Vec<f32> {
    let kept = &vector[..dimensions.min(vector.len())];
    if kept.len() == vector.len() {
        return kept.to_vec();
    }
    let norm = kept.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    kept.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn shortened_vectors_are_unit_length() {
        let v = shorten(&[0.6, 0.0, 0.8], 2);
        assert_eq!(v, vec![1.0, 0.0]);
        assert_eq!(shorten(&[0.6, 0.8], 2), vec![0.6, 0.8]);
    }
}
