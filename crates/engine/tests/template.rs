//! Chat templates from the real GGUF files, rendered to the exact prompt text.
mod model_support;

use hearth_engine::text::{load_vocab, render_chat, ContentPart, Message, ModelInfo, Role, Tokenizer, ToolCall, ToolSpec};
use serde_json::json;

fn vocab(file: &str) -> (ModelInfo, Tokenizer) {
    load_vocab(&model_support::model_path(file)).unwrap_or_else(|e| panic!("loading {file}: {e:#}"))
}

fn smollm() -> (ModelInfo, Tokenizer) {
    vocab("smollm2-135m-instruct-q4_1.gguf")
}

fn qwen() -> (ModelInfo, Tokenizer) {
    vocab("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

#[test]
fn smollm2_with_and_without_system() {
    let (info, tok) = smollm();
    let with_system = [Message::system("You are terse."), Message::user("Hi")];
    assert_eq!(
        render_chat(&info, &tok, &with_system, &[]).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let without = [Message::user("Hi"), Message::assistant("Hello!"), Message::user("Bye")];
    assert_eq!(
        render_chat(&info, &tok, &without, &[]).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn content_parts_are_flattened_to_text() {
    let (info, tok) = smollm();
    let mut message = Message::user("Hello");
    message.content.push(ContentPart::Text("there".into()));
    let out = render_chat(&info, &tok, &[message], &[]).unwrap();
    assert!(out.ends_with("<|im_start|>user\nHello\nthere<|im_end|>\n<|im_start|>assistant\n"), "{out}");
}

#[test]
fn qwen_default_system_prompt() {
    let (info, tok) = qwen();
    let messages = [Message::user("Write hello world in C")];
    assert_eq!(
        render_chat(&info, &tok, &messages, &[]).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWrite hello world in C<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn qwen_tools_tool_calls_and_tool_results() {
    let (info, tok) = qwen();
    let tools = [ToolSpec { name: "get_weather".into(), description: None, parameters: Some(json!({"type": "object"})), strict: None }];
    let mut call = Message::assistant("");
    call.tool_calls.push(ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: "{\"city\": \"Paris\"}".into() });
    let mut result = Message::new(Role::Tool, "sunny");
    result.tool_call_id = Some("c1".into());
    let messages = [Message::user("Weather?"), call, result];
    // Keys of JSON objects come out sorted (serde_json maps), Python-style separators.
    let expected = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n\
        # Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
        You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
        {\"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}, \"type\": \"function\"}\n</tools>\n\n\
        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
        <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n\
        <|im_start|>user\nWeather?<|im_end|>\n\
        <|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n\
        <|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n\
        <|im_start|>assistant\n";
    assert_eq!(render_chat(&info, &tok, &messages, &tools).unwrap(), expected);
}

#[test]
fn base_model_has_no_template() {
    let (info, tok) = vocab("gemma-3-270m-q4_k_m.gguf");
    let err = render_chat(&info, &tok, &[Message::user("Hi")], &[]).unwrap_err();
    assert_eq!(err.to_string(), "model has no chat template");
}

#[test]
fn python_methods_raise_exception_and_special_tokens() {
    let (mut info, tok) = smollm();
    info.chat_template = Some(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}\
         {{ bos_token }}[{{ messages[0].content.strip().upper() }}]{{ eos_token }}"
            .into(),
    );
    let ok = render_chat(&info, &tok, &[Message::user("  hi  ")], &[]).unwrap();
    assert_eq!(ok, "<|im_start|>[HI]<|im_end|>");
    let err = render_chat(&info, &tok, &[Message::assistant("x")], &[]).unwrap_err();
    assert!(err.to_string().contains("first message must be from the user"), "{err}");
}

/// SmolLM2's template knows no tools: the tools go into the system message and calls and
/// results into the messages, in the format Qwen's template uses (and the parser reads).
#[test]
fn smollm2_gets_tools_calls_and_results_written_in() {
    let (info, tok) = smollm();
    let tools = [ToolSpec { name: "get_weather".into(), description: None, parameters: Some(json!({"type": "object"})), strict: None }];
    let mut call = Message::assistant("");
    call.tool_calls.push(ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: "{\"city\": \"Paris\"}".into() });
    let mut result = Message::new(Role::Tool, "sunny");
    result.tool_call_id = Some("c1".into());
    let messages = [Message::system("Be brief."), Message::user("Weather?"), call, result];
    let expected = "<|im_start|>system\nBe brief.\n\n\
        # Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
        You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
        {\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}\n</tools>\n\n\
        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
        <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n\
        <|im_start|>user\nWeather?<|im_end|>\n\
        <|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n\
        <|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n\
        <|im_start|>assistant\n";
    assert_eq!(render_chat(&info, &tok, &messages, &tools).unwrap(), expected);
}
