//! Chat templates: the Jinja template stored in `tokenizer.chat_template`, rendered with
//! minijinja configured like Hugging Face's renderer (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`, Python-style `tojson`).

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{Map, Value as Json};

use super::tokenizer::Tokenizer;
use super::ModelInfo;

/// Renders OpenAI chat `messages` (and `tools`) into the prompt text, ending with the
/// assistant turn's opening (`add_generation_prompt`).
pub fn render(info: &ModelInfo, tokenizer: &Tokenizer, messages: &Json, tools: Option<&Json>) -> Result<String> {
    let Some(source) = info.chat_template.as_deref() else {
        bail!("model has no chat template");
    };
    let messages = normalize_messages(messages)?;
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    let template = env.template_from_str(source).map_err(|e| anyhow!("chat template does not parse: {e}"))?;
    let ctx = minijinja::context! {
        messages => Value::from_serialize(&messages),
        tools => tools.filter(|t| !t.is_null()).map(Value::from_serialize),
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

/// OpenAI messages → what templates expect: `content` always a string (text parts joined
/// by newlines, null as ""), tool call `arguments` as JSON objects when they parse.
fn normalize_messages(messages: &Json) -> Result<Vec<Json>> {
    let list = messages.as_array().ok_or_else(|| anyhow!("messages must be an array"))?;
    list.iter()
        .map(|m| {
            let obj = m.as_object().ok_or_else(|| anyhow!("each message must be an object"))?;
            let mut out: Map<String, Json> = obj.clone();
            out.insert("content".into(), Json::String(flatten_content(obj.get("content"))?));
            if let Some(Json::Array(calls)) = obj.get("tool_calls") {
                let calls = calls.iter().map(normalize_tool_call).collect();
                out.insert("tool_calls".into(), Json::Array(calls));
            }
            Ok(Json::Object(out))
        })
        .collect()
}

fn flatten_content(content: Option<&Json>) -> Result<String> {
    match content {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(Json::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Json::as_str).unwrap_or("text") == "text")
                .filter_map(|p| p.get("text").and_then(Json::as_str))
                .collect();
            Ok(texts.join("\n"))
        }
        Some(_) => bail!("message content must be a string or an array of content parts"),
    }
}

fn normalize_tool_call(call: &Json) -> Json {
    let mut call = call.clone();
    if let Some(Json::String(args)) = call.pointer("/function/arguments") {
        if let Ok(parsed) = serde_json::from_str::<Json>(args) {
            if let Some(slot) = call.pointer_mut("/function/arguments") {
                *slot = parsed;
            }
        }
    }
    call
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
