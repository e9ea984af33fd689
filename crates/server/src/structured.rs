//! Structured outputs for chat completions, held by the engine's constrained decoding so
//! that every choice parses and validates: `response_format` `json_object` (any JSON
//! object) and `json_schema` (a value valid against the schema), and forced tool calls
//! (`tool_choice` `required` or a named function: `<tool_call>` blocks whose arguments
//! follow the function's `parameters`); under `auto`, the same calls once the model itself
//! opens one.
use crate::error::ApiError;
use hearth_api::chat::ChatCompletionRequest;
use hearth_engine::text::constraint::{Constraint, ConstraintSpec, Function};
use hearth_engine::text::{ConstraintFailure, TextEngine};
use serde_json::{json, Value};

/// What a request holds its output to, and what a refused schema belongs to.
pub struct Structure {
    spec: ConstraintSpec,
    /// "response_format 'name'" or "function 'name'", for error messages.
    owner: String,
    param: &'static str,
}

/// The structure `body` asks for: a forced tool call, else its `response_format`, else
/// (tools offered, `auto`) calls the model may open.
pub fn requested(body: &Value, req: &ChatCompletionRequest) -> Result<Option<Structure>, ApiError> {
    let tools_param = if req.legacy_functions { "functions" } else { "tools" };
    if let Some(spec) = forced_calls(body, req)? {
        return Ok(Some(Structure { spec, owner: tools_param.into(), param: tools_param }));
    }
    let owner = match body.pointer("/response_format/json_schema/name").and_then(Value::as_str) {
        Some(name) => format!("response_format '{name}'"),
        None => "response_format".into(),
    };
    if let Some(spec) = response_format(body, &req.messages)? {
        return Ok(Some(Structure { spec, owner, param: "response_format" }));
    }
    Ok(auto_calls(body, req).map(|spec| Structure { spec, owner: tools_param.into(), param: tools_param }))
}

/// Tools offered and `tool_choice` `auto` (or left out): the model may write text or open
/// a call; an opened call is held to the tools.
fn auto_calls(body: &Value, req: &ChatCompletionRequest) -> Option<ConstraintSpec> {
    let auto = match &req.tool_choice {
        None => true,
        Some(Value::String(s)) => s == "auto",
        Some(_) => false,
    };
    let functions = functions(req, None);
    (auto && !functions.is_empty()).then(|| ConstraintSpec::AutoToolCalls { functions, parallel: parallel(body, req, None) })
}

/// The request's functions (only `named`, when given), with their parameters' schemas.
fn functions(req: &ChatCompletionRequest, named: Option<&str>) -> Vec<Function> {
    let Some(tools) = req.tools.as_ref().and_then(Value::as_array) else { return Vec::new() };
    tools
        .iter()
        .filter_map(|t| t.get("function"))
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?.to_string();
            let parameters = f.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            Some(Function { name, parameters })
        })
        .filter(|f| named.is_none_or(|n| n == f.name))
        .collect()
}

/// Whether several calls may be made: legacy `functions` and a named function get one;
/// OpenAI's default is parallel.
fn parallel(body: &Value, req: &ChatCompletionRequest, named: Option<&str>) -> bool {
    !req.legacy_functions && named.is_none() && body.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(true)
}

/// `tool_choice` `required` (any of the tools) or naming one function (legacy
/// `function_call: {"name"}` too): the calls the output must be.
fn forced_calls(body: &Value, req: &ChatCompletionRequest) -> Result<Option<ConstraintSpec>, ApiError> {
    let Some(choice) = &req.tool_choice else { return Ok(None) };
    let named = match choice {
        Value::String(s) if s == "required" => None,
        Value::String(_) => return Ok(None),
        // {"type": "function", "function": {"name"}} or legacy {"name"}.
        Value::Object(o) => match o.get("function").unwrap_or(choice).get("name").and_then(Value::as_str) {
            Some(name) => Some(name),
            None => return Err(ApiError::invalid("Missing required parameter: 'tool_choice.function.name'.", Some("tool_choice.function.name"))),
        },
        _ => return Ok(None),
    };
    if req.tools.is_none() {
        return Err(ApiError::invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", Some("tool_choice")));
    }
    let functions = functions(req, named);
    if functions.is_empty() {
        let name = named.unwrap_or_default();
        return Err(ApiError::invalid(format!("Invalid value for 'tool_choice': no function named '{name}' in 'tools'."), Some("tool_choice")));
    }
    Ok(Some(ConstraintSpec::ToolCalls { functions, parallel: parallel(body, req, named) }))
}

/// The constraint `response_format` asks for, checked against the messages (`body` is the
/// request as sent; its shape was already validated by `ChatCompletionRequest::parse`).
fn response_format(body: &Value, messages: &[Value]) -> Result<Option<ConstraintSpec>, ApiError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else { return Ok(None) };
    match rf.get("type").and_then(Value::as_str) {
        Some("json_object") => {
            if !mentions_json(messages) {
                return Err(ApiError::invalid(
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                    Some("messages"),
                ));
            }
            Ok(Some(ConstraintSpec::JsonObject))
        }
        Some("json_schema") => json_schema(rf.get("json_schema")).map(Some),
        _ => Ok(None),
    }
}

/// `response_format.json_schema`: `{name, description?, schema?, strict?}`.
fn json_schema(js: Option<&Value>) -> Result<ConstraintSpec, ApiError> {
    const PARAM: &str = "response_format.json_schema";
    let missing = |what: &str| ApiError::invalid(format!("Missing required parameter: '{what}'."), Some(what));
    let Some(js) = js.filter(|v| !v.is_null()) else { return Err(missing(PARAM)) };
    let Some(obj) = js.as_object() else {
        return Err(ApiError::invalid(format!("Invalid type for '{PARAM}': expected an object, but got {}.", kind(js)), Some(PARAM)));
    };
    match obj.get("name") {
        None => return Err(missing("response_format.json_schema.name")),
        Some(Value::String(name)) if valid_name(name) => {}
        Some(Value::String(name)) => {
            return Err(ApiError::invalid(
                format!("Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$' with at most 64 characters, but got '{name}'."),
                Some("response_format.json_schema.name"),
            ))
        }
        Some(v) => {
            return Err(ApiError::invalid(
                format!("Invalid type for 'response_format.json_schema.name': expected a string, but got {}.", kind(v)),
                Some("response_format.json_schema.name"),
            ))
        }
    }
    if let Some(strict) = obj.get("strict").filter(|v| !v.is_null() && !v.is_boolean()) {
        return Err(ApiError::invalid(
            format!("Invalid type for 'response_format.json_schema.strict': expected a boolean, but got {}.", kind(strict)),
            Some("response_format.json_schema.strict"),
        ));
    }
    match obj.get("schema") {
        // No schema: any JSON value.
        None | Some(Value::Null) => Ok(ConstraintSpec::JsonSchema(serde_json::json!({}))),
        Some(schema @ Value::Object(_)) => Ok(ConstraintSpec::JsonSchema(schema.clone())),
        Some(v) => Err(ApiError::invalid(
            format!("Invalid type for 'response_format.json_schema.schema': expected an object, but got {}.", kind(v)),
            Some("response_format.json_schema.schema"),
        )),
    }
}

/// Compiles the structure for `engine` (off the async threads: the first use builds the
/// vocabulary's tables). A schema the engine cannot hold is the client's 400.
pub async fn constraint(engine: &TextEngine, structure: Option<Structure>) -> Result<Option<Constraint>, ApiError> {
    let Some(Structure { spec, owner, param }) = structure else { return Ok(None) };
    let engine = engine.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        // A refused tool call is told by the function whose parameters were refused.
        if let ConstraintSpec::ToolCalls { functions, .. } | ConstraintSpec::AutoToolCalls { functions, .. } = &spec {
            for f in functions {
                if let Err(e) = engine.constraint(&ConstraintSpec::JsonSchema(f.parameters.clone())) {
                    return Err((e, format!("function '{}'", f.name)));
                }
            }
        }
        engine.constraint(&spec).map_err(|e| (e, owner))
    })
    .await
    .map_err(ApiError::internal)?;
    match compiled {
        Ok(c) => Ok(Some(c)),
        Err((ConstraintFailure::Spec(e), owner)) => Err(ApiError::invalid(format!("Invalid schema for {owner}: {e}."), Some(param))),
        Err((e @ ConstraintFailure::Vocabulary(_), _)) => Err(ApiError::internal(e)),
    }
}

/// OpenAI asks JSON mode to be requested in words too: a model told nothing about JSON
/// would otherwise be forced into it blind.
fn mentions_json(messages: &[Value]) -> bool {
    messages.iter().any(|m| m.get("content").and_then(Value::as_str).is_some_and(|c| c.to_ascii_lowercase().contains("json")))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Vec<Value> {
        vec![json!({"role": "user", "content": text})]
    }

    #[test]
    fn json_object_needs_the_word_json() {
        let body = json!({"response_format": {"type": "json_object"}});
        assert_eq!(response_format(&body, &user("Give me a Json list")).unwrap(), Some(ConstraintSpec::JsonObject));
        let e = response_format(&body, &user("Give me a list")).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.body.error.param.as_deref(), Some("messages"));
    }

    #[test]
    fn json_schema_fields_are_checked() {
        let rf = |js: Value| response_format(&json!({"response_format": {"type": "json_schema", "json_schema": js}}), &user("x"));
        let schema = json!({"type": "object"});
        assert_eq!(rf(json!({"name": "a-b_1", "schema": schema, "strict": true})).unwrap(), Some(ConstraintSpec::JsonSchema(schema)));
        assert_eq!(rf(json!({"schema": {}})).unwrap_err().body.error.param.as_deref(), Some("response_format.json_schema.name"));
        assert!(rf(json!({"name": "bad name"})).is_err());
        assert!(rf(json!({"name": "x", "schema": []})).is_err());
        assert!(rf(json!({"name": "x", "strict": "yes"})).is_err());
        assert!(rf(Value::Null).is_err());
        assert_eq!(response_format(&json!({"response_format": {"type": "text"}}), &user("x")).unwrap(), None);
    }

    fn forced(extra: Value) -> Result<Option<ConstraintSpec>, ApiError> {
        let mut body = json!({"model": "m", "messages": user("x"), "tools": [
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b"}}
        ]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let req = ChatCompletionRequest::parse(&body).expect("valid request");
        forced_calls(&body, &req)
    }

    #[test]
    fn tool_choice_forces_calls() {
        let names = |spec: Option<ConstraintSpec>| match spec {
            Some(ConstraintSpec::ToolCalls { functions, parallel }) => (functions.into_iter().map(|f| f.name).collect::<Vec<_>>(), parallel),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(forced(json!({"tool_choice": "required"})).unwrap()), (vec!["a".into(), "b".into()], true));
        let one = json!({"tool_choice": {"type": "function", "function": {"name": "b"}}});
        assert_eq!(names(forced(one).unwrap()), (vec!["b".into()], false));
        let no_parallel = json!({"tool_choice": "required", "parallel_tool_calls": false});
        assert!(!names(forced(no_parallel).unwrap()).1);
        assert_eq!(forced(json!({"tool_choice": "auto"})).unwrap(), None);
        assert_eq!(forced(json!({"tool_choice": "none"})).unwrap(), None);
        let unknown = forced(json!({"tool_choice": {"type": "function", "function": {"name": "zzz"}}})).unwrap_err();
        assert_eq!(unknown.body.error.param.as_deref(), Some("tool_choice"));
        assert!(unknown.body.error.message.contains("zzz"));
    }
}
