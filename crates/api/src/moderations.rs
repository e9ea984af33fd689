//! `POST /v1/moderations`: the request (a string or a list of strings; today's
//! list of `{"type": "text", "text": …}` parts too) and the response, with the
//! categories under both the slash names of the 2023 contract and the
//! underscore names today's API also sends.
use crate::schema::{self, Invalid};
use serde::Serialize;
use serde_json::{Map, Value};

/// The 2023 default (`text-moderation-latest`); today's SDKs send a model themselves.
pub const DEFAULT_MODEL: &str = "text-moderation-latest";

#[derive(Debug, Clone, PartialEq)]
pub struct ModerationRequest {
    pub model: String,
    pub inputs: Vec<String>,
}

impl ModerationRequest {
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        schema::reject_unknown(obj, &["input", "model"])?;
        let model = match schema::get(obj, "model") {
            None => DEFAULT_MODEL.to_string(),
            Some(_) => schema::model(obj)?,
        };
        let input = obj.get("input").ok_or_else(|| Invalid::required("input", None))?;
        Ok(Self { model, inputs: inputs(input)? })
    }
}

/// Most inputs in one request (OpenAI documents none; each input costs at least
/// one model pass, so an unbounded list is unbounded work).
pub const MAX_INPUTS: usize = 256;

fn inputs(input: &Value) -> Result<Vec<String>, Invalid> {
    match input {
        Value::Array(items) if items.len() > MAX_INPUTS => {
            Err(Invalid::new(format!("Too many inputs. The max number of inputs is {MAX_INPUTS}."), Some("input")))
        }
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => Err(Invalid::new("[] is too short - 'input'", Some("input"))),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            items.iter().enumerate().map(|(i, item)| text_part(i, item.as_object().unwrap_or(&Map::new()))).collect()
        }
        other => Err(Invalid::no_schema_matches("input", other)),
    }
}

/// One part of today's multi-modal input: only text parts can be scored here.
fn text_part(i: usize, part: &Map<String, Value>) -> Result<String, Invalid> {
    let path = format!("input.{i}");
    match (part.get("type").and_then(Value::as_str), part.get("text")) {
        (Some("text"), Some(Value::String(text))) => Ok(text.clone()),
        (Some("text"), Some(v)) => Err(Invalid::not_of_type(&format!("{path}.text"), v, "string")),
        (Some("text"), None) => Err(Invalid::required("text", Some(&path))),
        (Some("image_url"), _) => Err(Invalid::new("Image inputs are not supported by this server's moderation models; send text.", Some(&path))),
        _ => Err(Invalid::no_schema_matches(&path, &Value::Object(part.clone()))),
    }
}

/// A category's slash name (2023 contract) and the underscore name today's API also sends.
pub fn spellings(category: &str) -> (String, Option<String>) {
    let underscored = category.replace(['/', '-'], "_");
    let extra = (underscored != category).then_some(underscored);
    (category.to_string(), extra)
}

#[derive(Debug, Clone, Serialize)]
pub struct ModerationResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<ModerationResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModerationResult {
    pub flagged: bool,
    pub categories: Map<String, Value>,
    pub category_scores: Map<String, Value>,
    /// Today's field: which input kinds each category was scored on (text only here).
    pub category_applied_input_types: Map<String, Value>,
}

impl ModerationResult {
    /// `scored`: (category slash name, score, flagged) for every category.
    pub fn new(scored: &[(&str, f32, bool)]) -> Self {
        let (mut categories, mut category_scores, mut applied) = (Map::new(), Map::new(), Map::new());
        for &(category, score, flag) in scored {
            let (slash, underscore) = spellings(category);
            for name in std::iter::once(slash).chain(underscore) {
                categories.insert(name.clone(), Value::Bool(flag));
                category_scores.insert(name.clone(), Value::from(score as f64));
                applied.insert(name, Value::from(vec!["text"]));
            }
        }
        Self { flagged: scored.iter().any(|s| s.2), categories, category_scores, category_applied_input_types: applied }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_strings_lists_and_text_parts() {
        let r = ModerationRequest::parse(&json!({"input": "hi"})).unwrap();
        assert_eq!((r.model.as_str(), r.inputs), (DEFAULT_MODEL, vec!["hi".to_string()]));
        let r = ModerationRequest::parse(&json!({"input": ["a", ""], "model": "omni-moderation-latest"})).unwrap();
        assert_eq!(r.inputs, vec!["a", ""]);
        let r = ModerationRequest::parse(&json!({"input": [{"type": "text", "text": "x"}]})).unwrap();
        assert_eq!(r.inputs, vec!["x"]);
    }

    #[test]
    fn rejects_bad_input_with_openai_wording() {
        let msg = |body: Value| ModerationRequest::parse(&body).unwrap_err();
        assert_eq!(msg(json!({})).message, "'input' is a required property");
        assert_eq!(msg(json!({"input": 5})).message, "5 is not valid under any of the given schemas - 'input'");
        assert_eq!(msg(json!({"input": ["a", 1]})).message, "['a', 1] is not valid under any of the given schemas - 'input'");
        assert_eq!(msg(json!({"input": []})).param.as_deref(), Some("input"));
        assert_eq!(msg(json!({"input": "a", "model": 3})).message, "3 is not of type 'string' - 'model'");
        assert_eq!(msg(json!({"input": "a", "foo": 1})).message, "Unrecognized request argument supplied: foo");
        assert!(msg(json!({"input": [{"type": "image_url", "image_url": {"url": "x"}}]})).message.contains("Image inputs"));
    }

    #[test]
    fn both_spellings() {
        assert_eq!(spellings("self-harm/intent"), ("self-harm/intent".into(), Some("self_harm_intent".into())));
        assert_eq!(spellings("hate"), ("hate".into(), None));
        let r = ModerationResult::new(&[("hate/threatening", 0.9, true), ("sexual", 0.1, false)]);
        assert!(r.flagged && r.categories["hate_threatening"] == true && r.category_scores.len() == 3);
    }
}
