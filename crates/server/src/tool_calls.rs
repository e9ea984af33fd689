//! Tool calls in chat answers, read by the engine's call parser (one parser for streamed
//! and whole answers) and shaped as OpenAI sends them: `tool_calls` (the first delta of
//! each call carries `index`, `id`, `type` and `function.name`, the next ones fragments of
//! `function.arguments`), or, for requests that sent legacy `functions`, one
//! `function_call` (`{name, arguments}`, streamed as `delta.function_call` fragments).
use hearth_api::chat::{ChatCompletionRequest, FunctionCall, ToolCall};
use hearth_engine::text::constraint::{parse_calls, CallEvent, CallParser};
use serde_json::{json, Value};

/// Whether the request's answers are read for calls (`tools` or `functions` given, and
/// `tool_choice`/`function_call` not `none`).
pub fn parsed(req: &ChatCompletionRequest) -> bool {
    let none = matches!(&req.tool_choice, Some(Value::String(s)) if s == "none");
    req.tools.is_some() && !none
}

/// The finish reason of a choice that made calls.
pub fn finish_reason(req: &ChatCompletionRequest) -> &'static str {
    if req.legacy_functions {
        "function_call"
    } else {
        "tool_calls"
    }
}

/// A whole answer's calls: (content before them, `tool_calls`, legacy `function_call`);
/// None when it made none.
pub fn parse(req: &ChatCompletionRequest, text: &str) -> Option<(String, Option<Vec<ToolCall>>, Option<FunctionCall>)> {
    let (content, calls) = parse_calls(text);
    let mut calls = calls.into_iter().map(|c| FunctionCall { name: c.name, arguments: c.arguments });
    if req.legacy_functions {
        // The legacy shape holds one call.
        return calls.next().map(|call| (content, None, Some(call)));
    }
    let calls: Vec<ToolCall> =
        calls.map(|function| ToolCall { index: None, id: crate::generate::random_id("call_"), kind: "function".into(), function }).collect();
    (!calls.is_empty()).then_some((content, Some(calls), None))
}

/// One piece of a streamed choice.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    /// Fields to set in the chunk's `delta` (`tool_calls` or `function_call`), as JSON.
    Delta(Value),
}

/// The calls of one streamed choice.
#[derive(Debug)]
pub struct CallStream {
    parser: CallParser,
    legacy: bool,
}

impl CallStream {
    /// One stream per choice when the request's calls are parsed.
    pub fn for_request(req: &ChatCompletionRequest) -> Option<Vec<CallStream>> {
        parsed(req).then(|| (0..req.n).map(|_| CallStream { parser: CallParser::default(), legacy: req.legacy_functions }).collect())
    }

    /// Whether any call was made (the finish reason is then the calls').
    pub fn called(&self) -> bool {
        self.parser.calls() > 0
    }

    /// Adds generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let events = self.parser.push(text);
        self.pieces(events)
    }

    /// The end of the choice.
    pub fn finish(&mut self) -> Vec<Piece> {
        let events = self.parser.finish();
        self.pieces(events)
    }

    fn pieces(&self, events: Vec<CallEvent>) -> Vec<Piece> {
        events.into_iter().filter_map(|e| self.piece(e)).collect()
    }

    fn piece(&self, event: CallEvent) -> Option<Piece> {
        let delta = match event {
            CallEvent::Content(text) => return Some(Piece::Content(text)),
            // The legacy shape holds one call: later ones are dropped.
            CallEvent::Start { index, .. } | CallEvent::Arguments { index, .. } if self.legacy && index > 0 => return None,
            CallEvent::Start { name, .. } if self.legacy => json!({"function_call": {"name": name, "arguments": ""}}),
            CallEvent::Arguments { fragment, .. } if self.legacy => json!({"function_call": {"arguments": fragment}}),
            CallEvent::Start { index, name } => json!({"tool_calls": [{
                "index": index, "id": crate::generate::random_id("call_"), "type": "function",
                "function": {"name": name, "arguments": ""}
            }]}),
            CallEvent::Arguments { index, fragment } => json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
        };
        Some(Piece::Delta(delta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: Value) -> ChatCompletionRequest {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ChatCompletionRequest::parse(&body).expect("valid")
    }

    const TEXT: &str = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>";

    #[test]
    fn legacy_functions_answer_one_function_call() {
        let req = request(json!({"functions": [{"name": "f", "parameters": {"type": "object"}}]}));
        assert_eq!(finish_reason(&req), "function_call");
        let (content, tools, function) = parse(&req, TEXT).unwrap();
        assert_eq!((content.as_str(), tools), ("", None));
        assert_eq!(function, Some(FunctionCall { name: "f".into(), arguments: "{\"a\": 1}".into() }));
        let mut stream = CallStream::for_request(&req).unwrap().remove(0);
        let mut pieces = stream.push(&TEXT[..30]);
        pieces.extend(stream.push(&TEXT[30..]));
        pieces.extend(stream.finish());
        assert_eq!(pieces[0], Piece::Delta(json!({"function_call": {"name": "f", "arguments": ""}})));
        let args: String = pieces[1..].iter().map(|p| if let Piece::Delta(d) = p { d["function_call"]["arguments"].as_str().unwrap() } else { "" }).collect();
        assert_eq!(args, "{\"a\": 1}");
    }

    #[test]
    fn tools_answer_tool_calls_with_ids() {
        let req = request(json!({"tools": [{"type": "function", "function": {"name": "f"}}]}));
        let (_, tools, function) = parse(&req, TEXT).unwrap();
        let call = &tools.unwrap()[0];
        assert!(call.id.starts_with("call_") && function.is_none());
        assert!(parse(&req, "no call").is_none());
        assert!(!parsed(&request(json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}))));
    }
}
