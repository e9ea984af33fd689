//! `POST /v1/completions`: request (validated), response, stream chunk.
use crate::common::{Sampling, StreamOptions, Usage};
use crate::schema::{self, Invalid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "suffix",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "logprobs",
    "echo",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "best_of",
    "logit_bias",
    "user",
    // modern SDKs
    "seed",
    "stream_options",
    "service_tier",
    "store",
    "metadata",
];

/// OpenAI's default `max_tokens` for completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// One or several prompts.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl Prompt {
    pub fn len(&self) -> usize {
        match self {
            Prompt::Texts(t) => t.len(),
            Prompt::Tokens(t) => t.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub suffix: Option<String>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub n: usize,
    /// Candidates generated per prompt (>= n); the n best are returned.
    pub best_of: usize,
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stop: Vec<String>,
    pub user: Option<String>,
}

impl CompletionRequest {
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        let model = schema::model(obj)?;
        schema::reject_unknown(obj, FIELDS)?;
        let prompt = match obj.get("prompt") {
            None => return Err(Invalid::required("prompt", None)),
            Some(Value::Null) => Prompt::Texts(vec![String::new()]),
            Some(v) => prompt(v)?,
        };
        let suffix = schema::opt_string(obj, "suffix")?.filter(|s| !s.is_empty());
        let max_tokens = schema::opt_integer(obj, "max_tokens", Some(0), None)?.map(|m| m as usize).unwrap_or(DEFAULT_MAX_TOKENS);
        let sampling = schema::sampling(obj)?;
        let n = schema::opt_integer(obj, "n", Some(1), Some(128))?.unwrap_or(1) as usize;
        let stream = schema::opt_bool(obj, "stream")?.unwrap_or(false);
        let stream_options = schema::stream_options(obj, stream)?;
        let logprobs = schema::opt_integer(obj, "logprobs", Some(0), Some(5))?.map(|k| k as usize);
        let echo = schema::opt_bool(obj, "echo")?.unwrap_or(false);
        let stop = schema::stop(obj)?;
        let best_of = match schema::opt_integer(obj, "best_of", Some(0), Some(20))? {
            None | Some(0) => n,
            Some(b) => b as usize,
        };
        if best_of < n {
            return Err(Invalid::new("best_of must be greater than or equal to n.", Some("best_of")));
        }
        if stream && best_of > n {
            return Err(Invalid::new("Cannot stream results with best_of greater than n.", Some("best_of")));
        }
        let user = schema::opt_string(obj, "user")?;
        schema::opt_bool(obj, "store")?;
        schema::opt_string(obj, "service_tier")?;
        schema::opt_object(obj, "metadata")?;
        Ok(Self { model, prompt, suffix, max_tokens, sampling, n, best_of, stream, stream_options, logprobs, echo, stop, user })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.map(|o| o.include_usage).unwrap_or(false)
    }
}

/// string | [string] | [int] | [[int]].
fn prompt(v: &Value) -> Result<Prompt, Invalid> {
    let token = |t: &Value| t.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32);
    match v {
        Value::String(s) => Ok(Prompt::Texts(vec![s.clone()])),
        Value::Array(items) if items.is_empty() => Err(Invalid::new("[] is too short - 'prompt'", Some("prompt"))),
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                return Ok(Prompt::Texts(items.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()));
            }
            if let Some(ids) = items.iter().map(token).collect::<Option<Vec<u32>>>() {
                return Ok(Prompt::Tokens(vec![ids]));
            }
            let lists: Option<Vec<Vec<u32>>> =
                items.iter().map(|l| l.as_array().filter(|a| !a.is_empty()).and_then(|a| a.iter().map(token).collect())).collect();
            lists.map(Prompt::Tokens).ok_or_else(|| Invalid::no_schema_matches("prompt", v))
        }
        v => Err(Invalid::no_schema_matches("prompt", v)),
    }
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    /// Absent in stream chunks unless `include_usage`; then null on all but the last.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

/// The completions logprobs shape: parallel arrays.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// None for the first prompt token when echoing.
    pub token_logprobs: Vec<Option<f32>>,
    /// {token text: logprob} of the most likely tokens at each position.
    pub top_logprobs: Vec<Option<serde_json::Map<String, Value>>>,
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    pub fn extend(&mut self, other: CompletionLogprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_shapes() {
        assert_eq!(prompt(&json!("a")).unwrap(), Prompt::Texts(vec!["a".into()]));
        assert_eq!(prompt(&json!(["a", "b"])).unwrap(), Prompt::Texts(vec!["a".into(), "b".into()]));
        assert_eq!(prompt(&json!([1, 2])).unwrap(), Prompt::Tokens(vec![vec![1, 2]]));
        assert_eq!(prompt(&json!([[1], [2, 3]])).unwrap(), Prompt::Tokens(vec![vec![1], vec![2, 3]]));
        assert_eq!(prompt(&json!([1, "a"])).unwrap_err().message, "[1, 'a'] is not valid under any of the given schemas - 'prompt'");
        assert!(prompt(&json!([-1])).is_err());
        assert!(prompt(&json!([[]])).is_err());
    }

    #[test]
    fn validation_table() {
        let cases: &[(Value, &str, Option<&str>)] = &[
            (json!({"model": "m"}), "'prompt' is a required property", Some("prompt")),
            (json!({"model": "m", "prompt": "x", "logprobs": 6}), "6 is greater than the maximum of 5 - 'logprobs'", Some("logprobs")),
            (json!({"model": "m", "prompt": "x", "n": 3, "best_of": 2}), "best_of must be greater than or equal to n.", Some("best_of")),
            (json!({"model": "m", "prompt": "x", "stream": true, "best_of": 2}), "Cannot stream results with best_of greater than n.", Some("best_of")),
            (json!({"model": "m", "prompt": "x", "max_tokens": -1}), "-1 is less than the minimum of 0 - 'max_tokens'", Some("max_tokens")),
            (
                json!({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}),
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                Some("stream_options"),
            ),
        ];
        for (body, message, param) in cases {
            let e = CompletionRequest::parse(body).unwrap_err();
            assert_eq!(e.message, *message, "{body}");
            assert_eq!(e.param.as_deref(), *param, "{body}");
        }
        let ok = CompletionRequest::parse(&json!({"model": "m", "prompt": "x"})).unwrap();
        assert_eq!(ok.max_tokens, 16);
        assert_eq!(ok.best_of, 1);
    }
}
