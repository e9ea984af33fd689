//! `POST /v1/chat/completions`: request (validated), response, stream chunk.
use crate::common::{Sampling, StreamOptions, Usage};
use crate::schema::{self, repr, Invalid};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields of the 2023 contract plus what today's SDKs send (some accepted and ignored).
pub const FIELDS: &[&str] = &[
    "model",
    "messages",
    "functions",
    "function_call",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stop",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    // modern SDKs
    "max_completion_tokens",
    "seed",
    "logprobs",
    "top_logprobs",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "prediction",
    "reasoning_effort",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
];

pub const ROLES: &[&str] = &["system", "assistant", "user", "function", "tool", "developer"];

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletionRequest {
    pub model: String,
    /// Messages normalised for chat templates: content flattened to a string,
    /// `developer` mapped to `system`, null content to "".
    pub messages: Vec<Value>,
    /// `tools` (or legacy `functions` wrapped as tools), for the template.
    pub tools: Option<Value>,
    /// The functions came as legacy `functions`: a call is answered as `message.function_call`.
    pub legacy_functions: bool,
    pub tool_choice: Option<Value>,
    pub sampling: Sampling,
    pub n: usize,
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub stop: Vec<String>,
    /// `max_completion_tokens`, else `max_tokens`; None = the rest of the context window.
    pub max_tokens: Option<usize>,
    pub logprobs: bool,
    pub top_logprobs: Option<usize>,
    pub user: Option<String>,
    /// `response_format.type` ("text", "json_object", "json_schema").
    pub response_format: Option<String>,
}

impl ChatCompletionRequest {
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        let model = schema::model(obj)?;
        schema::reject_unknown(obj, FIELDS)?;
        let messages = messages(obj)?;
        let tools = tools(obj)?;
        let legacy_functions = tools.is_some() && schema::get(obj, "tools").is_none();
        let tool_choice = match schema::get(obj, "tool_choice").or_else(|| schema::get(obj, "function_call")) {
            None => None,
            Some(v @ (Value::String(_) | Value::Object(_))) => Some(v.clone()),
            Some(v) => return Err(Invalid::no_schema_matches("tool_choice", v)),
        };
        let sampling = schema::sampling(obj)?;
        let n = schema::opt_integer(obj, "n", Some(1), Some(128))?.unwrap_or(1) as usize;
        let stream = schema::opt_bool(obj, "stream")?.unwrap_or(false);
        let stream_options = schema::stream_options(obj, stream)?;
        let stop = schema::stop(obj)?;
        let max_tokens = schema::opt_integer(obj, "max_tokens", Some(1), None)?;
        let max_completion_tokens = schema::opt_integer(obj, "max_completion_tokens", Some(1), None)?;
        let logprobs = schema::opt_bool(obj, "logprobs")?.unwrap_or(false);
        let top_logprobs = schema::opt_integer(obj, "top_logprobs", Some(0), Some(20))?;
        if top_logprobs.is_some() && !logprobs {
            return Err(Invalid::new("Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.", Some("top_logprobs")));
        }
        let user = schema::opt_string(obj, "user")?;
        let response_format = response_format(obj)?;
        for key in ["parallel_tool_calls", "store"] {
            schema::opt_bool(obj, key)?;
        }
        schema::opt_string(obj, "service_tier")?;
        schema::opt_object(obj, "metadata")?;
        Ok(Self {
            model,
            messages,
            tools,
            legacy_functions,
            tool_choice,
            sampling,
            n,
            stream,
            stream_options,
            stop,
            max_tokens: max_completion_tokens.or(max_tokens).map(|m| m as usize),
            logprobs,
            top_logprobs: top_logprobs.map(|k| k as usize),
            user,
            response_format,
        })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.map(|o| o.include_usage).unwrap_or(false)
    }
}

/// A validated message, typed: what the server hands the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// One of `ROLES`, `developer` already read as `system`.
    pub role: String,
    /// Text parts already joined.
    pub content: String,
    pub name: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
}

/// A function offered in `tools` (or legacy `functions`).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

impl ChatCompletionRequest {
    /// The messages, typed.
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        self.messages.iter().map(chat_message).collect()
    }

    /// The functions offered, typed.
    pub fn functions(&self) -> Vec<FunctionSpec> {
        let Some(Value::Array(tools)) = &self.tools else { return Vec::new() };
        tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| FunctionSpec {
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                description: f.get("description").and_then(Value::as_str).map(str::to_string),
                parameters: f.get("parameters").cloned(),
                strict: f.get("strict").and_then(Value::as_bool),
            })
            .collect()
    }
}

/// A message `message()` validated, typed. Tool calls keep what templates read:
/// id, name, arguments (JSON text; an object sent as arguments is written as text).
fn chat_message(m: &Value) -> ChatMessage {
    let text = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_string);
    let tool_calls = match m.get("tool_calls") {
        // A legacy assistant `function_call` is one call without an id.
        None if m.get("function_call").is_some_and(Value::is_object) => vec![serde_json::json!({"id": "", "function": m["function_call"]})],
        Some(Value::Array(calls)) => calls.clone(),
        _ => Vec::new(),
    };
    let tool_calls = tool_calls
        .iter()
        .map(|c| {
            let function = c.get("function");
            let arguments = match function.and_then(|f| f.get("arguments")) {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(v) => v.to_string(),
            };
            ToolCall {
                index: None,
                id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                kind: "function".into(),
                function: FunctionCall { name: function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default().to_string(), arguments },
            }
        })
        .collect();
    ChatMessage {
        role: text("role").unwrap_or_default(),
        content: text("content").unwrap_or_default(),
        name: text("name"),
        tool_calls,
        tool_call_id: text("tool_call_id"),
    }
}

fn messages(obj: &Map<String, Value>) -> Result<Vec<Value>, Invalid> {
    let list = match obj.get("messages") {
        None => return Err(Invalid::required("messages", None)),
        Some(Value::Array(list)) => list,
        Some(v) => return Err(Invalid::not_of_type("messages", v, "array")),
    };
    if list.is_empty() {
        return Err(Invalid::new("[] is too short - 'messages'", Some("messages")));
    }
    list.iter().enumerate().map(|(i, m)| message(i, m)).collect()
}

fn message(i: usize, m: &Value) -> Result<Value, Invalid> {
    let path = format!("messages.{i}");
    let Some(obj) = m.as_object() else { return Err(Invalid::not_of_type(&path, m, "object")) };
    let role = match obj.get("role") {
        None => return Err(Invalid::required("role", Some(&path))),
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
        Some(v) => {
            let roles = ROLES.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", ");
            let p = format!("{path}.role");
            return Err(Invalid::new(format!("{} is not one of [{roles}] - '{p}'", repr(v)), Some(&p)));
        }
    };
    let content = match obj.get("content") {
        None if role == "assistant" => String::new(),
        None => return Err(Invalid::required("content", Some(&path))),
        Some(Value::Null) if role == "assistant" || role == "function" => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => content_parts(&path, parts)?,
        Some(v) => return Err(Invalid::no_schema_matches(&format!("{path}.content"), v)),
    };
    if let Some(name) = obj.get("name") {
        if !name.is_string() {
            return Err(Invalid::not_of_type(&format!("{path}.name"), name, "string"));
        }
    }
    if role == "tool" && !obj.get("tool_call_id").is_some_and(Value::is_string) {
        return Err(Invalid::new(
            "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
            Some(&format!("messages.[{i}].tool_call_id")),
        ));
    }
    let mut out = obj.clone();
    out.insert("role".into(), Value::String(if role == "developer" { "system" } else { role }.into()));
    out.insert("content".into(), Value::String(content));
    Ok(Value::Object(out))
}

/// Flattens `[{"type":"text","text":...}]` into one string; other part types are refused.
fn content_parts(path: &str, parts: &[Value]) -> Result<String, Invalid> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{path}.content.{j}");
        let kind = part.get("type").and_then(Value::as_str);
        match (kind, part.get("text")) {
            (Some("text"), Some(Value::String(t))) => text.push_str(t),
            (Some("text"), _) => return Err(Invalid::required("text", Some(&p))),
            (Some(other), _) => {
                return Err(Invalid::new(format!("Invalid content type. {other} is only supported by certain models."), Some(&format!("{p}.type"))))
            }
            (None, _) => return Err(Invalid::no_schema_matches(&p, part)),
        }
    }
    Ok(text)
}

fn tools(obj: &Map<String, Value>) -> Result<Option<Value>, Invalid> {
    if let Some(tools) = schema::opt_array(obj, "tools")? {
        for (i, t) in tools.iter().enumerate() {
            let path = format!("tools.{i}");
            let Some(o) = t.as_object() else { return Err(Invalid::not_of_type(&path, t, "object")) };
            match o.get("function") {
                Some(Value::Object(f)) if f.get("name").is_some_and(Value::is_string) => {}
                Some(Value::Object(_)) => return Err(Invalid::required("name", Some(&format!("{path}.function")))),
                Some(v) => return Err(Invalid::not_of_type(&format!("{path}.function"), v, "object")),
                None => return Err(Invalid::required("function", Some(&path))),
            }
        }
        return Ok(if tools.is_empty() { None } else { Some(Value::Array(tools.clone())) });
    }
    if let Some(functions) = schema::opt_array(obj, "functions")? {
        let mut wrapped = Vec::with_capacity(functions.len());
        for (i, f) in functions.iter().enumerate() {
            let path = format!("functions.{i}");
            let Some(o) = f.as_object() else { return Err(Invalid::not_of_type(&path, f, "object")) };
            if !o.get("name").is_some_and(Value::is_string) {
                return Err(Invalid::required("name", Some(&path)));
            }
            wrapped.push(serde_json::json!({"type": "function", "function": f}));
        }
        return Ok(if wrapped.is_empty() { None } else { Some(Value::Array(wrapped)) });
    }
    Ok(None)
}

fn response_format(obj: &Map<String, Value>) -> Result<Option<String>, Invalid> {
    let Some(rf) = schema::opt_object(obj, "response_format")? else { return Ok(None) };
    const KINDS: &[&str] = &["text", "json_object", "json_schema"];
    match rf.get("type") {
        Some(Value::String(t)) if KINDS.contains(&t.as_str()) => Ok(Some(t.clone())),
        Some(v) => Err(Invalid::new(
            format!("{} is not one of ['text', 'json_object', 'json_schema'] - 'response_format.type'", repr(v)),
            Some("response_format.type"),
        )),
        None => Err(Invalid::required("type", Some("response_format"))),
    }
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The legacy shape of one call (requests that sent `functions`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub function_call: Option<FunctionCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Only in stream deltas.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

/// `choices[].logprobs` of chat: `{"content": [...]}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// `object: "chat.completion.chunk"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    /// Absent unless `stream_options.include_usage`; then null on all chunks but the last.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatCompletionRequest, Invalid> {
        ChatCompletionRequest::parse(&v)
    }
    fn msg() -> Value {
        json!([{"role": "user", "content": "hi"}])
    }

    #[test]
    fn minimal_request() {
        let r = parse(json!({"model": "gpt-4", "messages": msg()})).unwrap();
        assert_eq!(r.n, 1);
        assert!(!r.stream);
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn validation_table() {
        let cases: &[(Value, &str, Option<&str>)] = &[
            (json!({"messages": msg()}), "you must provide a model parameter", None),
            (json!({"model": "m"}), "'messages' is a required property", Some("messages")),
            (json!({"model": "m", "messages": []}), "[] is too short - 'messages'", Some("messages")),
            (json!({"model": "m", "messages": msg(), "foo": 1}), "Unrecognized request argument supplied: foo", None),
            (json!({"model": "m", "messages": msg(), "max_tokens": "abc"}), "'abc' is not of type 'integer' - 'max_tokens'", Some("max_tokens")),
            (json!({"model": "m", "messages": msg(), "max_tokens": 0}), "0 is less than the minimum of 1 - 'max_tokens'", Some("max_tokens")),
            (json!({"model": "m", "messages": msg(), "n": 129}), "129 is greater than the maximum of 128 - 'n'", Some("n")),
            (
                json!({"model": "m", "messages": msg(), "top_logprobs": 21, "logprobs": true}),
                "21 is greater than the maximum of 20 - 'top_logprobs'",
                Some("top_logprobs"),
            ),
            (json!({"model": "m", "messages": msg(), "stream": "yes"}), "'yes' is not of type 'boolean' - 'stream'", Some("stream")),
            (
                json!({"model": "m", "messages": [{"role": "bot", "content": "x"}]}),
                "'bot' is not one of ['system', 'assistant', 'user', 'function', 'tool', 'developer'] - 'messages.0.role'",
                Some("messages.0.role"),
            ),
            (json!({"model": "m", "messages": [{"role": "user"}]}), "'content' is a required property - 'messages.0'", Some("messages.0")),
        ];
        for (body, message, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.message, *message, "{body}");
            assert_eq!(e.param.as_deref(), *param, "{body}");
        }
    }

    #[test]
    fn modern_fields() {
        let r = parse(json!({
            "model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 5, "max_tokens": 9, "seed": 3, "logprobs": true, "top_logprobs": 2,
            "stream": true, "stream_options": {"include_usage": true}, "store": false, "metadata": {"a": "b"},
            "response_format": {"type": "json_object"}, "parallel_tool_calls": true, "service_tier": "auto", "user": "u"
        }))
        .unwrap();
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.messages[0]["role"], "system");
        assert_eq!(r.messages[0]["content"], "ab");
        assert!(r.include_usage());
        assert_eq!(r.top_logprobs, Some(2));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(parse(json!({"model": "m", "messages": {"role": "user"}})).is_err());
        assert!(parse(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})).is_err());
        assert!(parse(json!({"model": "m", "messages": ["text"]})).is_err());
    }

    #[test]
    fn typed_messages_and_functions() {
        let r = parse(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
            ],
            "functions": [{"name": "get_weather", "parameters": {"type": "object"}}]
        }))
        .unwrap();
        let messages = r.chat_messages();
        assert_eq!(messages[1].content, "");
        assert_eq!(messages[1].tool_calls[0].function.arguments, "{\"city\": \"Paris\"}");
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("c1"));
        let functions = r.functions();
        assert_eq!(functions[0].name, "get_weather");
        assert_eq!(functions[0].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn chunk_usage_field() {
        let mut c = ChatCompletionChunk {
            id: "x".into(),
            object: "chat.completion.chunk".into(),
            created: 1,
            model: "m".into(),
            system_fingerprint: None,
            choices: vec![],
            usage: None,
        };
        assert!(serde_json::to_value(&c).unwrap().get("usage").is_none());
        c.usage = Some(None);
        assert_eq!(serde_json::to_value(&c).unwrap()["usage"], Value::Null);
    }
}
