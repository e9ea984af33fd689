//! Server-sent events framing as OpenAI sends it: `data: {json}\n\n`, ending with `data: [DONE]\n\n`.
use serde::Serialize;

/// The payload of the last event of every stream.
pub const DONE: &str = "[DONE]";

/// One full SSE frame carrying `payload` as JSON.
pub fn frame<T: Serialize>(payload: &T) -> String {
    let json = serde_json::to_string(payload).unwrap_or_else(|_| "{}".to_string());
    format!("data: {json}\n\n")
}

pub fn done_frame() -> String {
    format!("data: {DONE}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn frames_are_data_lines() {
        assert_eq!(frame(&serde_json::json!({"a": 1})), "data: {\"a\":1}\n\n");
        assert_eq!(done_frame(), "data: [DONE]\n\n");
    }
}
