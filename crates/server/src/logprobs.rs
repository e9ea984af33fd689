//! Engine logprobs -> the two OpenAI shapes (chat: list of objects; completions: parallel arrays).
use hearth_api::chat::{TokenLogprob as ChatTokenLogprob, TopLogprob};
use hearth_api::completions::CompletionLogprobs;
use hearth_engine::text::{TextEngine, TokenLogprob};
use serde_json::{Map, Value};

/// The bytes of a token's text; the engine writes partial UTF-8 as `bytes:\xe2\x80`.
pub fn token_bytes(text: &str) -> Vec<u8> {
    let Some(escaped) = text.strip_prefix("bytes:") else { return text.as_bytes().to_vec() };
    escaped
        .split("\\x")
        .filter(|h| !h.is_empty())
        .filter_map(|h| u8::from_str_radix(h.get(..2).unwrap_or(h), 16).ok())
        .collect()
}

pub fn chat_token(engine: &TextEngine, id: u32, lp: &TokenLogprob) -> ChatTokenLogprob {
    let token = engine.token_text(id);
    ChatTokenLogprob {
        bytes: Some(token_bytes(&token)),
        token,
        logprob: lp.logprob,
        top_logprobs: lp
            .top
            .iter()
            .map(|&(tid, logprob)| {
                let token = engine.token_text(tid);
                TopLogprob { bytes: Some(token_bytes(&token)), token, logprob }
            })
            .collect(),
    }
}

/// Builds completions logprobs token by token, keeping `text_offset` running.
pub struct CompletionLogprobsBuilder {
    pub offset: usize,
}

impl CompletionLogprobsBuilder {
    pub fn new(offset: usize) -> Self {
        Self { offset }
    }

    /// Appends one token; `lp` None means "no logprob" (the first prompt token).
    pub fn push(&mut self, out: &mut CompletionLogprobs, engine: &TextEngine, id: u32, lp: Option<&TokenLogprob>) {
        let token = engine.token_text(id);
        out.text_offset.push(self.offset);
        if !token.starts_with("bytes:") {
            self.offset += token.chars().count();
        }
        out.token_logprobs.push(lp.map(|l| l.logprob));
        out.top_logprobs.push(lp.map(|l| {
            let mut top = Map::new();
            for &(tid, logprob) in &l.top {
                top.insert(engine.token_text(tid), json_f32(logprob));
            }
            top
        }));
        out.tokens.push(token);
    }
}

/// An f32 as JSON with its shortest decimal form (`-0.8764954`, not `-0.876495361328125`),
/// the way serde writes the f32 fields next to it.
fn json_f32(x: f32) -> Value {
    format!("{x}").parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_partial_tokens() {
        assert_eq!(token_bytes("hé"), "hé".as_bytes());
        assert_eq!(token_bytes("bytes:\\xe2\\x80"), vec![0xe2, 0x80]);
    }

    #[test]
    fn short_floats() {
        assert_eq!(json_f32(-0.876_495_36).to_string(), "-0.87649536");
        assert_eq!(json_f32(f32::NAN), Value::Null);
    }
}
