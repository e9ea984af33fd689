//! Training files: OpenAI's JSONL formats, one example per line. Chat lines are
//! `{"messages": [{"role", "content", "weight"?}, ...]}` (today's fine-tuning API);
//! prompt/completion lines are `{"prompt", "completion"}` (the legacy API and the
//! `davinci`-family bases). A file holds one format throughout.
use serde_json::{Map, Value};

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// Loss on the completion's tokens (and the end-of-text token after them).
    Completion { prompt: String, completion: String },
    /// Rendered through the base model's chat template; loss on assistant turns only
    /// (those whose `weight` is not 0), each with its end-of-turn token.
    Chat { messages: Vec<Turn> },
}

/// One chat message of a training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    /// OpenAI's per-message `weight`: `Some(0)` keeps an assistant turn out of the
    /// loss; `None` or `Some(1)` trains it. Only meaningful on assistant turns.
    pub weight: Option<u8>,
}

impl Turn {
    /// Whether this turn's tokens count in the loss.
    pub fn trained(&self) -> bool {
        self.role == "assistant" && self.weight != Some(0)
    }
}

/// What is wrong with a training file, and where (OpenAI's wording: the client fixes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid file format. {}{message}", location(*line))]
pub struct LineError {
    /// 1-based line number; 0 when the problem is the file as a whole (e.g. empty).
    pub line: usize,
    pub message: String,
}

fn location(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("Line {line}: ")
    }
}

/// Parses a JSONL training (or validation) file. Blank lines are skipped; every other
/// line must be one example, all of the same format.
pub fn parse_jsonl(bytes: &[u8]) -> Result<Vec<Example>, LineError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        LineError { line, message: "the file is not valid UTF-8.".into() }
    })?;
    let mut examples: Vec<Example> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |message: String| LineError { line, message };
        let value: Value = serde_json::from_str(raw).map_err(|e| err(format!("not valid JSON ({e}).")))?;
        let Value::Object(obj) = value else {
            return Err(err("each line must be a JSON object.".into()));
        };
        let example = parse_object(&obj).map_err(err)?;
        if let Some(first) = examples.first() {
            if std::mem::discriminant(first) != std::mem::discriminant(&example) {
                return Err(err("mixes chat (`messages`) and prompt/completion examples; a file holds one format.".into()));
            }
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(LineError { line: 0, message: "the file has no examples.".into() });
    }
    Ok(examples)
}

fn parse_object(obj: &Map<String, Value>) -> Result<Example, String> {
    if let Some(messages) = obj.get("messages") {
        return parse_messages(messages).map(|messages| Example::Chat { messages });
    }
    match (obj.get("prompt"), obj.get("completion")) {
        (Some(Value::String(prompt)), Some(Value::String(completion))) => {
            if completion.is_empty() {
                return Err("`completion` must not be empty.".into());
            }
            Ok(Example::Completion { prompt: prompt.clone(), completion: completion.clone() })
        }
        (None, None) => Err("missing key `messages` (chat) or `prompt` and `completion`.".into()),
        (Some(Value::String(_)), None) => Err("missing key `completion`.".into()),
        (None, Some(Value::String(_))) => Err("missing key `prompt`.".into()),
        (Some(Value::String(_)), Some(_)) => Err("`completion` must be a string.".into()),
        _ => Err("`prompt` must be a string.".into()),
    }
}

fn parse_messages(messages: &Value) -> Result<Vec<Turn>, String> {
    let Value::Array(items) = messages else {
        return Err("`messages` must be a list.".into());
    };
    let mut turns = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let at = j + 1;
        let Value::Object(m) = item else {
            return Err(format!("message {at} must be an object."));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) if matches!(r.as_str(), "system" | "user" | "assistant" | "tool" | "developer") => {
                if r == "developer" {
                    "system".to_string()
                } else {
                    r.clone()
                }
            }
            Some(Value::String(r)) => return Err(format!("message {at} has an unrecognized role `{r}`.")),
            Some(_) => return Err(format!("message {at}: `role` must be a string.")),
            None => return Err(format!("message {at} is missing `role`.")),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Content parts: only text parts can be trained on.
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => return Err(format!("message {at}: only text content parts are supported.")),
                    }
                }
                text
            }
            Some(Value::Null) | None => return Err(format!("message {at} is missing `content`.")),
            Some(_) => return Err(format!("message {at}: `content` must be a string or a list of text parts.")),
        };
        let weight = match m.get("weight") {
            None | Some(Value::Null) => None,
            Some(w) => match w.as_u64() {
                Some(0) => Some(0),
                Some(1) => Some(1),
                _ => return Err(format!("message {at}: `weight` must be 0 or 1.")),
            },
        };
        if weight.is_some() && role != "assistant" {
            return Err(format!("message {at}: `weight` is only allowed on assistant messages."));
        }
        turns.push(Turn { role, content, weight });
    }
    if !turns.iter().any(Turn::trained) {
        return Err("the example has no assistant message to train on.".into());
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_and_skips_blank_lines() {
        let chat = br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo","weight":1}]}

{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"text","text":"b"}]}]}
"#;
        let ex = parse_jsonl(chat).unwrap();
        assert_eq!(ex.len(), 2);
        let Example::Chat { messages } = &ex[1] else { panic!("{ex:?}") };
        assert_eq!(messages[2], Turn { role: "assistant".into(), content: "b".into(), weight: None });

        let pc = parse_jsonl(b"{\"prompt\":\"p ->\",\"completion\":\" c\\n\"}\n").unwrap();
        assert_eq!(pc, vec![Example::Completion { prompt: "p ->".into(), completion: " c\n".into() }]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_jsonl(b"{\"prompt\":\"a\",\"completion\":\"b\"}\nnot json\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("Invalid file format. Line 2: not valid JSON"), "{e}");

        let e = parse_jsonl(b"{\"prompt\":\"a\"}").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (1, "missing key `completion`."));

        let e = parse_jsonl(br#"{"messages":[{"role":"user","content":"a"}]}"#).unwrap_err();
        assert!(e.message.contains("no assistant message"), "{e}");

        let e = parse_jsonl(br#"{"messages":[{"role":"wizard","content":"a"}]}"#).unwrap_err();
        assert!(e.message.contains("unrecognized role `wizard`"), "{e}");

        let mixed = b"{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}";
        assert_eq!(parse_jsonl(mixed).unwrap_err().line, 2);

        let e = parse_jsonl(b"\n\n").unwrap_err();
        assert_eq!(e.to_string(), "Invalid file format. the file has no examples.");
    }
}
