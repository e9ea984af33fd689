//! What a request constrains its output to, and its translation into an llguidance
//! grammar: a JSON Schema, any JSON object, or one call of one of several functions.

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

use super::calls::{CALL_CLOSE, CALL_OPEN, OPEN_TAG};
use super::ConstraintError;

/// The shape an output must have.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid against this JSON Schema (`json_schema`).
    JsonSchema(Value),
    /// Function calls as Hermes/Qwen `<tool_call>` blocks:
    /// `<tool_call>\n{"name": <one of the names>, "arguments": <its parameters>}\n</tool_call>`,
    /// one block or (`parallel`) one or more separated by newlines.
    ToolCalls { functions: Vec<Function>, parallel: bool },
    /// Free text, until the model itself writes the call-open tag; from there on, the
    /// rest of the calls as in `ToolCalls` (`tool_choice: "auto"`).
    AutoToolCalls { functions: Vec<Function>, parallel: bool },
}

/// A function a tool call may name, with the JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub parameters: Value,
}

/// How generated JSON is laid out: one space after `:` and `,`, no other whitespace.
/// A fixed layout leaves the model no runs of whitespace to spend its tokens on.
fn layout() -> Value {
    json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": false })
}

/// `schema` with our layout options, or why it cannot be a schema here.
fn with_layout(schema: &Value, what: &str) -> Result<Value, ConstraintError> {
    let Value::Object(map) = schema else {
        return Err(ConstraintError::Invalid(format!("{what} must be a JSON object")));
    };
    let mut map = map.clone();
    // A client's own `x-guidance` would change the grammar's options: ours win.
    map.insert("x-guidance".into(), layout());
    Ok(Value::Object(map))
}

impl ConstraintSpec {
    pub(super) fn grammar(&self) -> Result<TopLevelGrammar, ConstraintError> {
        match self {
            ConstraintSpec::JsonObject => Ok(TopLevelGrammar::from_json_schema(with_layout(&json!({"type": "object"}), "")?)),
            ConstraintSpec::JsonSchema(schema) => Ok(TopLevelGrammar::from_json_schema(with_layout(schema, "the schema")?)),
            ConstraintSpec::ToolCalls { functions, parallel } => tool_call_grammar(functions, *parallel, false).map(TopLevelGrammar::from_lark),
            ConstraintSpec::AutoToolCalls { functions, parallel } => tool_call_grammar(functions, *parallel, true).map(TopLevelGrammar::from_lark),
        }
    }
}

impl ConstraintSpec {
    /// Whether the output is free until the model opens a call (see `AutoToolCalls`).
    pub fn waits_for_call(&self) -> bool {
        matches!(self, ConstraintSpec::AutoToolCalls { .. })
    }
}

/// A Lark grammar of tool-call blocks, each choosing one function, then its arguments by
/// that function's schema. `after_tag`: the grammar starts after the first block's
/// open tag, which the model wrote itself.
fn tool_call_grammar(functions: &[Function], parallel: bool, after_tag: bool) -> Result<String, ConstraintError> {
    if functions.is_empty() {
        return Err(ConstraintError::Invalid("a tool call needs at least one function".into()));
    }
    let mut rules = String::new();
    let mut alternatives = Vec::new();
    for (i, f) in functions.iter().enumerate() {
        let head = format!("\"name\": {}, \"arguments\": ", json!(f.name));
        let schema = with_layout(&f.parameters, &format!("the parameters of function {:?}", f.name))?;
        // Lark string literals take JSON's escapes; %json takes a schema inline.
        rules.push_str(&format!("call_{i}: {} args_{i}\nargs_{i}: %json {schema}\n", json!(head)));
        alternatives.push(format!("call_{i}"));
    }
    let more = if parallel { format!(" ({} block)*", json!("\n")) } else { String::new() };
    let body = format!("\"{{\" ({}) \"}}\" {}", alternatives.join(" | "), json!(CALL_CLOSE));
    let first = if after_tag { format!("{} {body}", json!(&CALL_OPEN[OPEN_TAG.len()..])) } else { "block".into() };
    Ok(format!("start: {first}{more}\nblock: {} {body}\n{rules}", json!(CALL_OPEN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_grammar_names_every_function() {
        let f = |name: &str| Function { name: name.into(), parameters: json!({"type": "object"}) };
        let g = tool_call_grammar(&[f("a"), f("b_c")], true, false).unwrap();
        assert!(g.starts_with("start: block (\"\\n\" block)*\nblock: \"<tool_call>\\n\" \"{\" (call_0 | call_1) \"}\" \"\\n</tool_call>\"\n"), "{g}");
        assert!(g.contains(r#"call_1: "\"name\": \"b_c\", \"arguments\": " args_1"#), "{g}");
        let after = tool_call_grammar(&[f("a")], false, true).unwrap();
        assert!(after.starts_with("start: \"\\n\" \"{\" (call_0) \"}\" \"\\n</tool_call>\"\n"), "{after}");
    }

    #[test]
    fn non_object_schemas_are_refused() {
        let e = ConstraintSpec::JsonSchema(json!(true)).grammar().unwrap_err();
        assert!(matches!(e, ConstraintError::Invalid(_)));
    }
}
