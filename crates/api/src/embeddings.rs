//! `POST /v1/embeddings`: request (validated with OpenAI's wording) and response.
use crate::schema::{self, Invalid};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FIELDS: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];

/// Most inputs in one request.
pub const MAX_INPUTS: usize = 2048;

/// What OpenAI answers for an empty, oversized or mistyped `input` (param and code null).
pub const INVALID_INPUT: &str = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

/// string | [string] | [int] | [[int]].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl Input {
    pub fn len(&self) -> usize {
        match self {
            Input::Texts(t) => t.len(),
            Input::Tokens(t) => t.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64 (what the official Python SDK asks for by default).
    Base64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Input,
    pub encoding_format: EncodingFormat,
    /// Keep the first `dimensions` components (re-normalised); checked against the model by the server.
    pub dimensions: Option<usize>,
    pub user: Option<String>,
}

impl EmbeddingRequest {
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        let model = schema::model(obj)?;
        schema::reject_unknown(obj, FIELDS)?;
        let input = match obj.get("input") {
            None => return Err(Invalid::required("input", None)),
            Some(v) => input(v).ok_or_else(|| Invalid::new(INVALID_INPUT, None))?,
        };
        let encoding_format = match schema::opt_string(obj, "encoding_format")?.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => return Err(Invalid::new(format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."), Some("encoding_format"))),
        };
        let dimensions = schema::opt_integer(obj, "dimensions", Some(1), None)?.map(|d| d as usize);
        let user = schema::opt_string(obj, "user")?;
        Ok(Self { model, input, encoding_format, dimensions, user })
    }
}

/// The accepted shapes of `input`; None for everything OpenAI refuses: empty
/// strings, empty lists, empty token lists, more than 2,048 items, mixed or
/// non-string items, negative or oversized token ids.
fn input(v: &Value) -> Option<Input> {
    let token = |t: &Value| t.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32);
    let tokens = |items: &Vec<Value>| -> Option<Vec<u32>> {
        if items.is_empty() {
            return None;
        }
        items.iter().map(token).collect()
    };
    match v {
        Value::String(s) if !s.is_empty() => Some(Input::Texts(vec![s.clone()])),
        Value::Array(items) if items.is_empty() || items.len() > MAX_INPUTS => None,
        Value::Array(items) => match &items[0] {
            Value::String(_) => items.iter().map(|s| s.as_str().filter(|s| !s.is_empty()).map(str::to_string)).collect::<Option<Vec<_>>>().map(Input::Texts),
            Value::Number(_) => tokens(items).map(|ids| Input::Tokens(vec![ids])),
            Value::Array(_) => items.iter().map(|list| list.as_array().and_then(tokens)).collect::<Option<Vec<_>>>().map(Input::Tokens),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

impl EmbeddingResponse {
    pub fn new(model: String, data: Vec<Embedding>, prompt_tokens: usize) -> Self {
        Self { object: "list".into(), data, model, usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens } }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub object: String,
    pub index: usize,
    pub embedding: Vector,
}

impl Embedding {
    pub fn new(index: usize, vector: &[f32], format: EncodingFormat) -> Self {
        let embedding = match format {
            EncodingFormat::Float => Vector::Float(vector.to_vec()),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        };
        Self { object: "embedding".into(), index, embedding }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_shapes() {
        assert_eq!(input(&json!("a")), Some(Input::Texts(vec!["a".into()])));
        assert_eq!(input(&json!(["a", "b"])), Some(Input::Texts(vec!["a".into(), "b".into()])));
        assert_eq!(input(&json!([1, 2])), Some(Input::Tokens(vec![vec![1, 2]])));
        assert_eq!(input(&json!([[1], [2, 3]])), Some(Input::Tokens(vec![vec![1], vec![2, 3]])));
        for bad in [
            json!(""),
            json!([]),
            json!([""]),
            json!(["a", ""]),
            json!(["a", 1]),
            json!([1, "a"]),
            json!([[]]),
            json!([[1], []]),
            json!([-1]),
            json!([1.5]),
            json!(3),
            json!(null),
            json!([null]),
            json!({"a": 1}),
        ] {
            assert_eq!(input(&bad), None, "{bad}");
        }
        assert!(input(&json!(vec!["x"; MAX_INPUTS])).is_some());
        assert!(input(&json!(vec!["x"; MAX_INPUTS + 1])).is_none());
    }

    #[test]
    fn validation_table() {
        let cases: &[(Value, &str, Option<&str>)] = &[
            (json!({"model": "m"}), "'input' is a required property", Some("input")),
            (json!({"model": "m", "input": ""}), INVALID_INPUT, None),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "Invalid value: 'int8'. Supported values are: 'float' and 'base64'.",
                Some("encoding_format"),
            ),
            (json!({"model": "m", "input": "x", "dimensions": 0}), "0 is less than the minimum of 1 - 'dimensions'", Some("dimensions")),
            (json!({"model": "m", "input": "x", "user": 5}), "5 is not of type 'string' - 'user'", Some("user")),
            (json!({"model": "m", "input": "x", "temperature": 1}), "Unrecognized request argument supplied: temperature", None),
        ];
        for (body, message, param) in cases {
            let e = EmbeddingRequest::parse(body).unwrap_err();
            assert_eq!(e.message, *message, "{body}");
            assert_eq!(e.param.as_deref(), *param, "{body}");
        }
        let ok = EmbeddingRequest::parse(&json!({"model": "m", "input": "x", "dimensions": 8, "encoding_format": "base64", "user": "u"})).unwrap();
        assert_eq!((ok.encoding_format, ok.dimensions, ok.user.as_deref()), (EncodingFormat::Base64, Some(8), Some("u")));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let e = Embedding::new(0, &[1.0, -2.5], EncodingFormat::Base64);
        let Vector::Base64(text) = e.embedding else { panic!("base64 expected") };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
    }
}
