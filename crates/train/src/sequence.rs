//! Examples → token sequences with the positions that bear loss. Each piece is encoded
//! on its own, as serving encodes a prompt: the tokens a trained reply follows are
//! exactly those of the prompt the served model will be given.
use crate::{Example, Turn};
use anyhow::{bail, Result};
use hearth_engine::text::{render_chat, Message, ModelInfo, Role, Tokenizer};

/// A training sequence: `tokens[i + 1]` is a target wherever `trained[i + 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub trained: Vec<bool>,
}

impl Sequence {
    /// Positions `i` whose next token is trained, and those targets.
    pub fn targets(&self) -> (Vec<u32>, Vec<u32>) {
        (1..self.tokens.len()).filter(|&i| self.trained[i]).map(|i| ((i - 1) as u32, self.tokens[i])).unzip()
    }

    pub fn trained_tokens(&self) -> usize {
        self.trained.iter().filter(|t| **t).count()
    }

    fn push(&mut self, ids: &[u32], trained: bool) {
        self.tokens.extend_from_slice(ids);
        self.trained.extend(std::iter::repeat_n(trained, ids.len()));
    }
}

/// Tokenizes `example` for the model described by `info`/`tokenizer`, cut to `max_len`.
pub fn tokenize(example: &Example, info: &ModelInfo, tokenizer: &Tokenizer, max_len: usize) -> Result<Sequence> {
    let mut seq = Sequence { tokens: Vec::new(), trained: Vec::new() };
    match example {
        Example::Completion { prompt, completion } => {
            let mut ids = tokenizer.encode(prompt, true)?;
            // As serving reads an empty prompt: the start of a new document.
            if ids.is_empty() {
                ids.extend(info.bos.or(info.stop_tokens.first().copied()));
            }
            seq.push(&ids, false);
            seq.push(&tokenizer.encode(completion, false)?, true);
            // The end-of-text token teaches the model to stop where the completion does.
            if let Some(eos) = tokenizer.eos() {
                seq.push(&[eos], true);
            }
        }
        Example::Chat { messages } => chat(&mut seq, messages, info, tokenizer)?,
    }
    seq.tokens.truncate(max_len);
    seq.trained.truncate(max_len);
    if seq.trained_tokens() == 0 {
        bail!("the example has no trained tokens within the model's context of {max_len}");
    }
    Ok(seq)
}

/// The conversation through the chat template; each trained assistant reply (and the
/// end-of-turn token that closes it) bears loss, everything else is context.
fn chat(seq: &mut Sequence, turns: &[Turn], info: &ModelInfo, tokenizer: &Tokenizer) -> Result<()> {
    let messages: Vec<Message> = turns.iter().map(|t| Message::new(role(&t.role), t.content.clone())).collect();
    let last = turns.iter().rposition(Turn::trained).expect("parse_jsonl keeps only examples with a trained turn");
    let full = render_chat(info, tokenizer, &messages[..=last], &[])?;
    let stop_texts: Vec<String> = info.stop_tokens.iter().map(|&id| tokenizer.token_text(id)).collect();
    let mut done = 0; // bytes of `full` already in `seq`
    for (i, turn) in turns.iter().enumerate().take(last + 1) {
        if !turn.trained() {
            continue;
        }
        // The prompt the served model sees before this reply...
        let prompt = render_chat(info, tokenizer, &messages[..i], &[])?;
        if !full.starts_with(&prompt) || !full[prompt.len()..].starts_with(&turn.content) {
            bail!("the chat template does not render message {} after its predecessors", i + 1);
        }
        // ...then the reply and its end-of-turn marker.
        let mut end = prompt.len() + turn.content.len();
        if let Some(stop) = stop_texts.iter().filter(|s| !s.is_empty()).find(|s| full[end..].starts_with(s.as_str())) {
            end += stop.len();
        }
        seq.push(&tokenizer.encode(&full[done..prompt.len()], done == 0)?, false);
        seq.push(&tokenizer.encode(&full[prompt.len()..end], false)?, true);
        done = end;
    }
    Ok(())
}

fn role(name: &str) -> Role {
    match name {
        "system" => Role::System,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => Role::User,
    }
}
