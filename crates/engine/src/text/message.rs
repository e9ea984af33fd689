//! A chat conversation as the engine reads it: roles, content parts, tool calls and
//! the tools offered. The server builds these from the wire types; `template` renders
//! them into a prompt. Nothing here knows the OpenAI JSON shapes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (answers a `ToolCall` by its id).
    Tool,
    /// A legacy function result.
    Function,
}

impl Role {
    /// The name chat templates compare against.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
}

/// A call the assistant made earlier in the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (templates get them parsed when they parse).
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// Text parts are joined with newlines for templates that expect one string.
    pub content: Vec<ContentPart>,
    pub name: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: which call this message answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message of one text part.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self { role, content: vec![ContentPart::Text(text.into())], name: None, tool_calls: Vec::new(), tool_call_id: None }
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// The content as one string: text parts joined by newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self.content.iter().map(|ContentPart::Text(t)| t.as_str()).collect();
        texts.join("\n")
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON Schema.
    pub parameters: Option<serde_json::Value>,
    pub strict: Option<bool>,
}
