//! Chat templates: the Jinja template stored in `tokenizer.chat_template`, rendered with
//! minijinja configured like Hugging Face's renderer (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`, Python-style `tojson`).

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{json, Map, Value as Json};

use super::constraint::{CALL_CLOSE, CALL_OPEN};
use super::message::{Message, Role, ToolCall, ToolSpec};
use super::tokenizer::Tokenizer;
use super::ModelInfo;

/// Renders chat `messages` (and `tools`) into the prompt text, ending with the
/// assistant turn's opening (`add_generation_prompt`).
pub fn render(info: &ModelInfo, tokenizer: &Tokenizer, messages: &[Message], tools: &[ToolSpec]) -> Result<String> {
    let Some(source) = info.chat_template.as_deref() else {
        bail!("model has no chat template");
    };
    // A template that knows no tool calls (SmolLM2's) gets them written into the messages.
    let written;
    let (messages, tools) = if source.contains("tool_calls") {
        (messages, tools)
    } else {
        written = with_tools_written(messages, tools);
        (&written[..], &[][..])
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

/// What a model whose template has no tool format is told of the tools: the Hermes format
/// Qwen2.5's template uses, which the tool grammar writes and the call parser reads.
const TOOLS_PROMPT: &str = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const TOOLS_PROMPT_END: &str = "\n</tools>\n\nFor each function call, return a json object with function name and arguments \
    within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

/// `messages` with the tools in the system message, the assistant's calls as `<tool_call>`
/// blocks in its content and tool results as user messages in `<tool_response>` tags.
fn with_tools_written(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let mut prompt = TOOLS_PROMPT.to_string();
        for tool in tools {
            prompt.push('\n');
            write_python_json(&tool_value(tool), None, 0, &mut prompt);
        }
        prompt.push_str(TOOLS_PROMPT_END);
        match messages.first() {
            Some(first) if first.role == Role::System => out.push(Message::system(format!("{}\n\n{prompt}", first.text()))),
            _ => out.push(Message::system(prompt)),
        }
    }
    let skip = usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == Role::System));
    for m in &messages[skip..] {
        let mut m = m.clone();
        if !m.tool_calls.is_empty() {
            let mut text = m.text();
            for call in std::mem::take(&mut m.tool_calls) {
                let mut arguments = String::new();
                write_python_json(&tool_call_value(&call)["function"]["arguments"], None, 0, &mut arguments);
                let sep = if text.is_empty() { "" } else { "\n" };
                text.push_str(&format!("{sep}{CALL_OPEN}{{\"name\": {}, \"arguments\": {arguments}}}{CALL_CLOSE}", Json::String(call.name)));
            }
            m = Message { content: vec![super::message::ContentPart::Text(text)], ..m };
        }
        if m.role == Role::Tool {
            m = Message::user(format!("<tool_response>\n{}\n</tool_response>", m.text()));
        }
        out.push(m);
    }
    out
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
