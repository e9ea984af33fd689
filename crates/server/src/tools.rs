//! Tool calls written by the model as Qwen/Hermes-style `<tool_call>{json}</tool_call>` blocks.
use hearth_api::chat::{FunctionCall, ToolCall};
use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The text before the first block and the calls, when the text has parseable blocks.
pub fn parse(text: &str) -> Option<(String, Vec<ToolCall>)> {
    let first = text.find(OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(start) = rest.find(OPEN) {
        let body_start = start + OPEN.len();
        let (body, next) = match rest[body_start..].find(CLOSE) {
            Some(end) => (&rest[body_start..body_start + end], &rest[body_start + end + CLOSE.len()..]),
            None => (&rest[body_start..], ""),
        };
        let call: Value = serde_json::from_str(body.trim()).ok()?;
        let name = call.get("name")?.as_str()?.to_string();
        let arguments = match call.get("arguments").or_else(|| call.get("parameters")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "{}".to_string(),
        };
        calls.push(ToolCall { index: None, id: crate::generate::random_id("call_"), kind: "function".into(), function: FunctionCall { name, arguments } });
        rest = next;
    }
    let content = text[..first].trim().to_string();
    (!calls.is_empty()).then_some((content, calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks() {
        let (content, calls) = parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>").unwrap();
        assert_eq!(content, "");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, "{\"city\":\"Paris\"}");
        assert!(parse("plain text").is_none());
        assert!(parse("<tool_call>not json</tool_call>").is_none());
    }
}
