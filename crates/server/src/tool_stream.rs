//! Tool calls in a chat stream, as OpenAI sends them: text inside `<tool_call>` blocks is
//! not content; the first delta of each call carries `index`, `id`, `type` and
//! `function.name`, the following ones fragments of `function.arguments`.
use serde_json::{json, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const ARGS: &str = "\"arguments\":";

/// One stream per choice when the request's tool calls are parsed (`tools` given and
/// `tool_choice` not `none`).
pub fn for_request(req: &hearth_api::chat::ChatCompletionRequest) -> Option<Vec<CallStream>> {
    let none = matches!(&req.tool_choice, Some(Value::String(s)) if s == "none");
    (req.tools.is_some() && !none).then(|| (0..req.n).map(|_| CallStream::default()).collect())
}

/// One piece of a streamed choice.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    /// A `delta.tool_calls` entry (JSON: OpenAI's delta shape).
    Call(Value),
}

/// The stream of one choice.
#[derive(Debug, Default)]
pub struct CallStream {
    /// Text not yet released: a possible start of `<tool_call>`, or a call's body.
    held: String,
    in_call: bool,
    /// Calls started so far.
    calls: usize,
    /// Bytes of the current call body's arguments already sent.
    sent_args: usize,
    /// Whether the current call's first delta (name) went out.
    named: bool,
}

impl CallStream {
    /// Whether any call was made (the finish reason is then `tool_calls`).
    pub fn called(&self) -> bool {
        self.calls > 0
    }

    /// Adds generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if !self.in_call {
                match self.held.find(OPEN) {
                    Some(at) => {
                        let before: String = self.held.drain(..at + OPEN.len()).collect();
                        let before = before[..at].trim_end();
                        if !before.trim().is_empty() && self.calls == 0 {
                            out.push(Piece::Content(before.to_string()));
                        }
                        self.in_call = true;
                        self.named = false;
                        self.sent_args = 0;
                    }
                    None => {
                        // Keep back what may be the start of the tag.
                        let keep = partial_suffix(&self.held, OPEN);
                        let ready: String = self.held.drain(..self.held.len() - keep).collect();
                        if !ready.is_empty() && self.calls == 0 {
                            out.push(Piece::Content(ready));
                        }
                        return out;
                    }
                }
            }
            match self.held.find(CLOSE) {
                Some(at) => {
                    let body: String = self.held.drain(..at + CLOSE.len()).collect();
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

    /// The end of the choice: an unclosed call is finished as far as it parses.
    pub fn finish(&mut self) -> Vec<Piece> {
        if self.in_call {
            let body = std::mem::take(&mut self.held);
            self.in_call = false;
            return self.finish_call(&body);
        }
        let rest = std::mem::take(&mut self.held);
        if rest.is_empty() || self.calls > 0 {
            vec![]
        } else {
            vec![Piece::Content(rest)]
        }
    }

    /// Name and argument fragments of the open call, as far as the body allows.
    fn progress(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let Some((name, args_at)) = head(&self.held) else { return out };
        if !self.named {
            out.push(Piece::Call(json!({
                "index": self.calls, "id": crate::generate::random_id("call_"), "type": "function",
                "function": {"name": name, "arguments": ""}
            })));
            self.named = true;
            self.calls += 1;
        }
        // Everything after `"arguments":` but a possible start of the closing tag, and
        // the last `}` (the call's own, or else sent with the next text) with what follows.
        let args = &self.held[args_at..];
        let args = &args[..args.len() - partial_suffix(args, CLOSE)];
        let end = args.trim_end().strip_suffix('}').map_or(args.len(), str::len);
        if end > self.sent_args {
            out.push(Piece::Call(json!({"index": self.calls - 1, "function": {"arguments": &args[self.sent_args..end]}})));
            self.sent_args = end;
        }
        out
    }

    /// The call's last pieces (or the whole call, when it was not streamed).
    fn finish_call(&mut self, body: &str) -> Vec<Piece> {
        // `progress` reads the call from `held`; what followed the call waits meanwhile.
        let rest = std::mem::replace(&mut self.held, body.to_string());
        let mut out = self.progress();
        if self.named {
            let args = &body[head(body).map_or(body.len(), |(_, at)| at)..];
            let args = args.trim_end().strip_suffix('}').unwrap_or(args);
            if args.len() > self.sent_args {
                out.push(Piece::Call(json!({"index": self.calls - 1, "function": {"arguments": &args[self.sent_args..]}})));
            }
        } else if let Ok(call) = serde_json::from_str::<Value>(body.trim()) {
            // Arguments before the name: one delta with the whole call.
            if let Some(name) = call.get("name").and_then(Value::as_str) {
                let arguments = match call.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "{}".into(),
                };
                out.push(Piece::Call(json!({
                    "index": self.calls, "id": crate::generate::random_id("call_"), "type": "function",
                    "function": {"name": name, "arguments": arguments}
                })));
                self.calls += 1;
            }
        }
        self.held = rest;
        out
    }
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
    use hearth_engine::text::constraint::{CALL_CLOSE, CALL_OPEN};

    fn run(pieces: &[&str]) -> (String, String, Vec<String>) {
        let mut s = CallStream::default();
        let mut out: Vec<Piece> = pieces.iter().flat_map(|p| s.push(p)).collect();
        out.extend(s.finish());
        let mut content = String::new();
        let mut names = Vec::new();
        let mut args = String::new();
        for p in out {
            match p {
                Piece::Content(c) => content.push_str(&c),
                Piece::Call(v) => {
                    if let Some(n) = v["function"]["name"].as_str() {
                        names.push(n.to_string());
                        args.push('|');
                    }
                    args.push_str(v["function"]["arguments"].as_str().unwrap());
                }
            }
        }
        (content, args, names)
    }

    #[test]
    fn calls_stream_name_then_argument_fragments() {
        let text = format!("{CALL_OPEN}{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}{CALL_CLOSE}\n{CALL_OPEN}{{\"name\": \"t\", \"arguments\": {{}}}}{CALL_CLOSE}");
        // Every split of the text gives the same calls.
        for step in [1, 2, 3, 7, 1000] {
            let chunks: Vec<String> = text.chars().collect::<Vec<_>>().chunks(step).map(|c| c.iter().collect()).collect();
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let (content, args, names) = run(&refs);
            assert_eq!(content, "");
            assert_eq!(names, vec!["get_weather", "t"], "step {step}");
            assert_eq!(args, "|{\"city\": \"Paris\"}|{}", "step {step}");
        }
    }

    #[test]
    fn plain_text_is_content() {
        assert_eq!(run(&["Hello <tool", " not a call"]).0, "Hello <tool not a call");
        let (content, _, names) = run(&["Sure.\n<tool_call>{\"arguments\": {}, \"name\": \"f\"}</tool_call>"]);
        assert_eq!((content.as_str(), names), ("Sure.", vec!["f".to_string()]));
    }
}
