//! Chat templates: the Jinja template stored in `tokenizer.chat_template`, rendered with
//! minijinja configured like Hugging Face's renderer (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`, Python-style `tojson`).

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{json, Map, Value as Json};

use super::message::{Message, ToolCall, ToolSpec};
use super::tokenizer::Tokenizer;
use super::ModelInfo;

/// Renders chat `messages` (and `tools`) into the prompt text, ending with the
/// assistant turn's opening (`add_generation_prompt`).
pub fn render(info: &ModelInfo, tokenizer: &Tokenizer, messages: &[Message], tools: &[ToolSpec]) -> Result<String> {
    let Some(source) = info.chat_template.as_deref() else {
        bail!("model has no chat template");
    };
    let messages: Vec<Json> = messages.iter().map(message_value).collect();
    let tools: Vec<Json> = tools.iter().map(tool_value).collect();
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
    env.add_filter("tojson", tojson);
    let template = env.template_from_str(source).map_err(|e| anyhow!("chat template does not parse: {e}"))?;
    let ctx = minijinja::context! {
        messages => Value::from_serialize(&messages),
        tools => (!tools.is_empty()).then(|| Value::from_serialize(&tools)),
        add_generation_prompt => true,
        bos_token => info.bos.map(|id| tokenizer.token_text(id)).unwrap_or_default(),
        eos_token => tokenizer.eos().map(|id| tokenizer.token_text(id)).unwrap_or_default(),
    };
    template.render(ctx).map_err(|e| anyhow!("chat template: {}", describe(&e)))
}

/// The message text of a template error (`raise_exception` messages come through as is).
fn describe(e: &Error) -> String {
    e.detail().map(str::to_owned).unwrap_or_else(|| e.to_string())
}

/// A message as templates expect it (the Hugging Face convention): `content` one string,
/// tool call `arguments` as JSON objects when they parse.
fn message_value(m: &Message) -> Json {
    let mut out = Map::new();
    out.insert("role".into(), Json::String(m.role.as_str().into()));
    out.insert("content".into(), Json::String(m.text()));
    if let Some(name) = &m.name {
        out.insert("name".into(), Json::String(name.clone()));
    }
    if !m.tool_calls.is_empty() {
        out.insert("tool_calls".into(), Json::Array(m.tool_calls.iter().map(tool_call_value).collect()));
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), Json::String(id.clone()));
    }
    Json::Object(out)
}

fn tool_call_value(call: &ToolCall) -> Json {
    let arguments = serde_json::from_str::<Json>(&call.arguments).unwrap_or_else(|_| Json::String(call.arguments.clone()));
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
}

fn tool_value(tool: &ToolSpec) -> Json {
    let mut function = Map::new();
    function.insert("name".into(), Json::String(tool.name.clone()));
    if let Some(d) = &tool.description {
        function.insert("description".into(), Json::String(d.clone()));
    }
    if let Some(p) = &tool.parameters {
        function.insert("parameters".into(), p.clone());
    }
    if let Some(s) = tool.strict {
        function.insert("strict".into(), Json::Bool(s));
    }
    json!({"type": "function", "function": function})
}

/// `tojson` as Python's `json.dumps(value, ensure_ascii=False, indent=indent)` writes it,
/// which is what the templates were written against.
fn tojson(value: Value, indent: Option<usize>) -> Result<Value, Error> {
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_python_json(v: &Json, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}
