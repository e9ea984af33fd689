//! Engine logprobs -> the two OpenAI shapes (chat: list of objects; completions: parallel arrays).
use hearth_api::chat::{TokenLogprob as ChatTokenLogprob, TopLogprob};
use hearth_api::completions::CompletionLogprobs;
use hearth_engine::text::{Logprob, TokenText};
use serde_json::{Map, Value};

pub fn chat_token(lp: &Logprob) -> ChatTokenLogprob {
    ChatTokenLogprob {
        token: lp.token.text.clone(),
        bytes: Some(lp.token.bytes.clone()),
        logprob: lp.logprob,
        top_logprobs: lp
            .top
            .iter()
            .map(|(token, logprob)| TopLogprob { token: token.text.clone(), bytes: Some(token.bytes.clone()), logprob: *logprob })
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
    pub fn push(&mut self, out: &mut CompletionLogprobs, token: &TokenText, lp: Option<&Logprob>) {
        out.text_offset.push(self.offset);
        if !token.is_partial() {
            self.offset += token.text.chars().count();
        }
        out.token_logprobs.push(lp.map(|l| l.logprob));
        out.top_logprobs.push(lp.map(|l| {
            let mut top = Map::new();
            for (t, logprob) in &l.top {
                top.insert(t.text.clone(), json_f32(*logprob));
            }
            top
        }));
        out.tokens.push(token.text.clone());
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
    fn short_floats() {
        assert_eq!(json_f32(-0.876_495_36).to_string(), "-0.87649536");
        assert_eq!(json_f32(f32::NAN), Value::Null);
    }
}
