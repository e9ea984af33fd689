//! Tool calls in generated text: `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`
//! blocks, the format the tool grammar writes and Qwen's template teaches, read back
//! incrementally. One parser serves streamed and whole answers, so both read the same calls.

/// Opens one call: the tag, then the newline before its JSON body.
pub const CALL_OPEN: &str = "<tool_call>\n";
/// Closes one call.
pub const CALL_CLOSE: &str = "\n</tool_call>";
/// The tag that opens a call, as the model writes it (what `auto` tool calls wait for).
pub const OPEN_TAG: &str = "<tool_call>";
const CLOSE_TAG: &str = "</tool_call>";
const ARGS: &str = "\"arguments\":";

/// What the parser has read so far, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Text outside calls, before the first call (text after a call is dropped, as the
    /// tool format has no place for it).
    Content(String),
    /// Call `index` began: its function's name.
    Start { index: usize, name: String },
    /// The next piece of call `index`'s arguments (JSON text).
    Arguments { index: usize, fragment: String },
}

/// Reads the calls of one output as its text arrives.
#[derive(Debug, Default)]
pub struct CallParser {
    /// Text not yet released: a possible start of the open tag, or a call's body.
    held: String,
    in_call: bool,
    /// Calls started so far.
    calls: usize,
    /// Bytes of the current call's arguments already released.
    sent_args: usize,
    /// Whether the current call's `Start` went out.
    named: bool,
}

impl CallParser {
    /// Calls started so far (a choice with any has finish reason `tool_calls`).
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Adds generated text; returns what can be told now.
    pub fn push(&mut self, text: &str) -> Vec<CallEvent> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if !self.in_call {
                match self.held.find(OPEN_TAG) {
                    Some(at) => {
                        let before: String = self.held.drain(..at + OPEN_TAG.len()).collect();
                        let before = before[..at].trim_end();
                        if !before.trim().is_empty() && self.calls == 0 {
                            out.push(CallEvent::Content(before.to_string()));
                        }
                        self.in_call = true;
                        self.named = false;
                        self.sent_args = 0;
                    }
                    None => {
                        // Keep back what may be the start of the tag.
                        let keep = partial_suffix(&self.held, OPEN_TAG);
                        let ready: String = self.held.drain(..self.held.len() - keep).collect();
                        if !ready.is_empty() && self.calls == 0 {
                            out.push(CallEvent::Content(ready));
                        }
                        return out;
                    }
                }
            }
            match self.held.find(CLOSE_TAG) {
                Some(at) => {
                    let body: String = self.held.drain(..at + CLOSE_TAG.len()).collect();
                    out.extend(self.finish_call(&body[..at]));
                    self.in_call = false;
                }
                None => {
                    out.extend(self.progress());
                    return out;
                }
            }
        }
    }

    /// The end of the output: an unclosed call is finished as far as it was written.
    pub fn finish(&mut self) -> Vec<CallEvent> {
        if self.in_call {
            let body = std::mem::take(&mut self.held);
            self.in_call = false;
            return self.finish_call(&body);
        }
        let rest = std::mem::take(&mut self.held);
        if rest.is_empty() || self.calls > 0 {
            vec![]
        } else {
            vec![CallEvent::Content(rest)]
        }
    }

    /// Name and argument fragments of the open call, as far as its body allows.
    fn progress(&mut self) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let Some((name, args_at)) = head(&self.held) else { return out };
        if !self.named {
            out.push(CallEvent::Start { index: self.calls, name });
            self.named = true;
            self.calls += 1;
        }
        // Everything after `"arguments":` but a possible start of the closing tag, and
        // the last `}` (the body's own, or else released with the next text) with what follows.
        let args = &self.held[args_at..];
        let args = &args[..args.len() - partial_suffix(args, CLOSE_TAG)];
        let end = args.trim_end().strip_suffix('}').map_or(args.len(), str::len);
        if end > self.sent_args {
            out.push(CallEvent::Arguments { index: self.calls - 1, fragment: args[self.sent_args..end].to_string() });
            self.sent_args = end;
        }
        out
    }

    /// The call's last pieces (or the whole call, when its arguments came before its name).
    fn finish_call(&mut self, body: &str) -> Vec<CallEvent> {
        // `progress` reads the call from `held`; what followed the call waits meanwhile.
        let rest = std::mem::replace(&mut self.held, body.to_string());
        let mut out = self.progress();
        if self.named {
            let args = &body[head(body).map_or(body.len(), |(_, at)| at)..];
            let args = args.trim_end().strip_suffix('}').unwrap_or(args);
            if args.len() > self.sent_args {
                out.push(CallEvent::Arguments { index: self.calls - 1, fragment: args[self.sent_args..].to_string() });
            }
        } else if let Ok(call) = serde_json::from_str::<serde_json::Value>(body.trim()) {
            if let Some(name) = call.get("name").and_then(|n| n.as_str()) {
                let arguments = match call.get("arguments").or_else(|| call.get("parameters")) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "{}".into(),
                };
                out.push(CallEvent::Start { index: self.calls, name: name.to_string() });
                out.push(CallEvent::Arguments { index: self.calls, fragment: arguments });
                self.calls += 1;
            }
        }
        self.held = rest;
        out
    }
}

/// A call read from a whole output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// JSON text, as written.
    pub arguments: String,
}

/// The content before the first call, and the calls, of a whole output.
pub fn parse_calls(text: &str) -> (String, Vec<ParsedCall>) {
    let mut parser = CallParser::default();
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<ParsedCall> = Vec::new();
    for event in events {
        match event {
            CallEvent::Content(text) => content.push_str(&text),
            CallEvent::Start { name, .. } => calls.push(ParsedCall { name, arguments: String::new() }),
            CallEvent::Arguments { index, fragment } => calls[index].arguments.push_str(&fragment),
        }
    }
    (content.trim().to_string(), calls)
}

/// The function name, once written, and where the arguments start: `{"name": "x", "arguments": `.
fn head(body: &str) -> Option<(String, usize)> {
    let name_at = body.find("\"name\":")? + "\"name\":".len();
    let rest = body[name_at..].trim_start();
    let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let name = de.next()?.ok()?;
    let after = body.len() - rest.len() + de.byte_offset();
    let args_at = after + body[after..].find(ARGS)? + ARGS.len();
    let args_at = args_at + (body.len() - args_at - body[args_at..].trim_start().len());
    Some((name, args_at))
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1)).rev().find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content, then per call `|name` and its arguments.
    fn run(pieces: &[&str]) -> (String, String) {
        let mut parser = CallParser::default();
        let mut events: Vec<CallEvent> = pieces.iter().flat_map(|p| parser.push(p)).collect();
        events.extend(parser.finish());
        let (mut content, mut calls) = (String::new(), String::new());
        for e in events {
            match e {
                CallEvent::Content(c) => content.push_str(&c),
                CallEvent::Start { name, .. } => calls.push_str(&format!("|{name}|")),
                CallEvent::Arguments { fragment, .. } => calls.push_str(&fragment),
            }
        }
        (content, calls)
    }

    #[test]
    fn every_split_gives_the_same_calls() {
        let text = format!("{CALL_OPEN}{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}{CALL_CLOSE}\n{CALL_OPEN}{{\"name\": \"t\", \"arguments\": {{}}}}{CALL_CLOSE}");
        for step in [1, 2, 3, 7, 1000] {
            let chunks: Vec<String> = text.chars().collect::<Vec<_>>().chunks(step).map(|c| c.iter().collect()).collect();
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            assert_eq!(run(&refs), (String::new(), "|get_weather|{\"city\": \"Paris\"}|t|{}".into()), "step {step}");
        }
        let (content, calls) = parse_calls(&text);
        assert_eq!(content, "");
        assert_eq!(calls[0], ParsedCall { name: "get_weather".into(), arguments: "{\"city\": \"Paris\"}".into() });
        assert_eq!(calls[1].arguments, "{}");
    }

    #[test]
    fn plain_text_is_content_and_unordered_bodies_parse_whole() {
        assert_eq!(run(&["Hello <tool", " not a call"]).0, "Hello <tool not a call");
        let (content, calls) = parse_calls("Sure.\n<tool_call>{\"arguments\": {}, \"name\": \"f\"}</tool_call>");
        assert_eq!((content.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()), ("Sure.", "f", "{}"));
        assert!(parse_calls("plain text").1.is_empty());
        assert!(parse_calls("<tool_call>not json</tool_call>").1.is_empty());
    }
}
