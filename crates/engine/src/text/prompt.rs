//! Prompt preparation: chat messages through the template, or completion text/tokens,
//! to the token ids the scheduler prefills (BOS handling, fill-in-the-middle), with the
//! checks that need the vocabulary. Also the context-window budget.

use super::message::{Message, ToolSpec};
use super::template;
use super::tokenizer::Tokenizer;
use super::ModelInfo;

/// A prompt ready to generate from.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    /// The prompt as text (what completions' `echo` writes).
    pub text: String,
    pub ids: Vec<u32>,
    /// The first id is a BOS the engine added: not shown in echoed logprobs.
    pub hidden_bos: bool,
}

/// One completion prompt as the client sent it.
#[derive(Debug, Clone)]
pub enum CompletionPrompt {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// The chat template failed (or the model has none); the template's own words.
    #[error("{0}")]
    Template(String),
    #[error("the model has no fill-in-the-middle tokens")]
    FimUnsupported,
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfVocabulary { id: u32, vocab_size: usize },
    #[error("the prompt is empty")]
    Empty,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Prompt + completion over the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the context window is {window} tokens; the request needs {prompt} in the prompt and {} to generate", .completion.map_or("at least one".to_string(), |c| c.to_string()))]
pub struct ContextExceeded {
    pub window: usize,
    pub prompt: usize,
    /// The completion length asked for; None when none was (the rest of the window).
    pub completion: Option<usize>,
}

/// Tokens a completion may use: the asked maximum, or the rest of the window.
pub fn completion_budget(window: usize, prompt: usize, asked: Option<usize>) -> Result<usize, ContextExceeded> {
    let exceeded = ContextExceeded { window, prompt, completion: asked };
    match asked {
        Some(c) if prompt.saturating_add(c) > window => Err(exceeded),
        Some(c) => Ok(c),
        None if prompt >= window => Err(exceeded),
        None => Ok(window - prompt),
    }
}

/// The first id outside the vocabulary, if any.
pub fn check_vocabulary(ids: impl IntoIterator<Item = u32>, vocab_size: usize) -> Result<(), PromptError> {
    match ids.into_iter().find(|&id| id as usize >= vocab_size) {
        Some(id) => Err(PromptError::TokenOutOfVocabulary { id, vocab_size }),
        None => Ok(()),
    }
}

/// Template + tokenization of a chat.
pub fn chat(info: &ModelInfo, tokenizer: &Tokenizer, messages: &[Message], tools: &[ToolSpec]) -> Result<PreparedPrompt, PromptError> {
    let text = template::render(info, tokenizer, messages, tools).map_err(|e| PromptError::Template(e.to_string()))?;
    let ids = tokenizer.encode(&text, true).map_err(|e| PromptError::Tokenizer(format!("{e:#}")))?;
    Ok(PreparedPrompt { ids: without_double_bos(ids, info.bos), text, hidden_bos: false })
}

/// Templates that write `{{ bos_token }}` plus a tokenizer that adds BOS would give two.
fn without_double_bos(mut ids: Vec<u32>, bos: Option<u32>) -> Vec<u32> {
    if let (Some(b), [first, second, ..]) = (bos, ids.as_slice()) {
        if *first == b && *second == b {
            ids.remove(0);
        }
    }
    ids
}

/// Completion prompts, each optionally wrapped for fill-in-the-middle with `suffix`.
pub fn completions(info: &ModelInfo, tokenizer: &Tokenizer, prompts: Vec<CompletionPrompt>, suffix: Option<&str>) -> Result<Vec<PreparedPrompt>, PromptError> {
    let fim = match (suffix, info.fim) {
        (None, _) => None,
        (Some(suffix), Some(fim)) => Some((suffix, fim)),
        (Some(_), None) => return Err(PromptError::FimUnsupported),
    };
    let encode = |text: &str| tokenizer.encode(text, false).map_err(|e| PromptError::Tokenizer(format!("{e:#}")));
    // Every prompt is read (and its ids checked) before any is wrapped.
    let mut read = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        read.push(match prompt {
            CompletionPrompt::Text(text) => {
                let ids = encode(&text)?;
                (text, ids, true)
            }
            CompletionPrompt::Tokens(ids) => {
                check_vocabulary(ids.iter().copied(), info.vocab_size)?;
                let text = tokenizer.decode(&ids).map_err(|e| PromptError::Tokenizer(format!("{e:#}")))?;
                (text, ids, false)
            }
        });
    }
    let mut prepared = Vec::with_capacity(read.len());
    for (text, ids, from_text) in read {
        let p = match &fim {
            Some((suffix, fim)) => {
                let mut all = vec![fim.prefix];
                all.extend(ids);
                all.push(fim.suffix);
                all.extend(encode(suffix)?);
                all.push(fim.middle);
                PreparedPrompt { text, ids: all, hidden_bos: false }
            }
            None if from_text || ids.is_empty() => {
                // Like llama.cpp: BOS when the model wants it; an empty prompt starts a new
                // document (OpenAI reads it as <|endoftext|>).
                let start = if info.add_bos || ids.is_empty() { info.bos.or(info.stop_tokens.first().copied()) } else { None };
                match start {
                    Some(b) => PreparedPrompt { text, ids: std::iter::once(b).chain(ids).collect(), hidden_bos: true },
                    None => PreparedPrompt { text, ids, hidden_bos: false },
                }
            }
            None => PreparedPrompt { text, ids, hidden_bos: false },
        };
        if p.ids.is_empty() {
            return Err(PromptError::Empty);
        }
        prepared.push(p);
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_context_errors() {
        assert_eq!(completion_budget(100, 10, None), Ok(90));
        assert_eq!(completion_budget(100, 10, Some(90)), Ok(90));
        assert_eq!(completion_budget(100, 10, Some(91)), Err(ContextExceeded { window: 100, prompt: 10, completion: Some(91) }));
        assert!(completion_budget(100, 100, None).is_err());
    }

    #[test]
    fn double_bos_removed() {
        assert_eq!(without_double_bos(vec![2, 2, 5], Some(2)), vec![2, 5]);
        assert_eq!(without_double_bos(vec![2, 5], Some(2)), vec![2, 5]);
        assert_eq!(without_double_bos(vec![2, 2], None), vec![2, 2]);
    }

    #[test]
    fn vocabulary() {
        assert_eq!(check_vocabulary([1, 2], 3), Ok(()));
        assert_eq!(check_vocabulary([1, 3], 3), Err(PromptError::TokenOutOfVocabulary { id: 3, vocab_size: 3 }));
    }
}
