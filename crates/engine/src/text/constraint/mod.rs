//! Constrained decoding: at each step, the set of tokens that can continue a valid output
//! (a JSON Schema, any JSON object, a function call), so that sampling only ever picks
//! among them and the result is valid by construction.
//!
//! The automaton is llguidance's: a lexer of derivative-based regexes under an Earley
//! parser, walked over a trie of the vocabulary, with token classes precomputed per
//! lexeme ("slices") so that most of the vocabulary is decided without walking it.
//! [`Grammars`] holds that per-model state; each sequence gets its own [`Constraint`].

mod calls;
mod grammar;
mod vocab;

use std::fmt;
use std::sync::Arc;

use llguidance::{Matcher, ParserFactory};
use toktrie::{SimpleVob, TokEnv, TokTrie};

use super::tokenizer::Tokenizer;

pub use calls::{parse_calls, CallEvent, CallParser, ParsedCall, CALL_CLOSE, CALL_OPEN, OPEN_TAG};
pub use grammar::{ConstraintSpec, Function};

/// Why a constraint could not be compiled. The server answers 400 with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// JSON Schema keywords that are understood but not enforced: refused, never ignored.
    #[error("unsupported JSON Schema keyword{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("invalid schema: {0}")]
    Invalid(String),
}

impl ConstraintError {
    /// The first keyword refused, when that is the reason.
    pub fn keyword(&self) -> Option<&str> {
        match self {
            ConstraintError::Unsupported(k) => k.first().map(String::as_str),
            ConstraintError::Invalid(_) => None,
        }
    }

    /// llguidance reports unimplemented keywords as `Unimplemented keys: ["a", "b"]`.
    fn from_compile(e: &anyhow::Error) -> Self {
        let message = format!("{e:#}");
        const MARK: &str = "Unimplemented keys: ";
        if let Some(at) = message.find(MARK) {
            let rest = &message[at + MARK.len()..];
            let list = &rest[..rest.find(']').map_or(rest.len(), |i| i + 1)];
            if let Ok(keys) = serde_json::from_str::<Vec<String>>(list) {
                if !keys.is_empty() {
                    return ConstraintError::Unsupported(keys);
                }
            }
        }
        ConstraintError::Invalid(message)
    }
}

/// One model's compiled vocabulary: compiles specs into per-sequence constraints.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Builds the vocabulary trie and token classes (once per model; ~0.1-1 s).
    pub fn new(tokenizer: &Tokenizer) -> anyhow::Result<Self> {
        let env = vocab::token_env(tokenizer)?;
        let mut factory = ParserFactory::new_simple(&env)?;
        // Grammar errors are returned to the caller, not printed.
        factory.quiet();
        Ok(Self { factory })
    }

    /// A fresh constraint for one sequence.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = spec.grammar()?;
        let parser = self.factory.create_parser(grammar).map_err(|e| ConstraintError::from_compile(&e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid(e));
        }
        let mask = self.factory.tok_env().tok_trie().alloc_token_set();
        let ends: Arc<[u32]> = self.factory.tok_env().tok_trie().eos_tokens().into();
        let trigger = spec.waits_for_call().then(|| Trigger { env: self.factory.tok_env().clone(), seen: Vec::new() });
        Ok(Constraint { matcher, mask, ends, failed: None, trigger })
    }
}

/// The automaton state of one sequence. Clone it for each of `n` choices.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// The allowed tokens at the current step (reused between steps).
    mask: SimpleVob,
    /// Tokens that end the sequence: allowed only where the output is complete.
    ends: Arc<[u32]>,
    /// Set when the automaton broke (never for a token it allowed); then only ends remain.
    failed: Option<String>,
    /// Some while the output is free, until the model writes `OPEN_TAG`.
    trigger: Option<Trigger>,
}

/// Watches free output for the call-open tag.
#[derive(Clone)]
struct Trigger {
    /// The vocabulary: token bytes, and tokens for what followed the tag in its token.
    env: TokEnv,
    /// The output's last bytes (as many as may hold a partial tag).
    seen: Vec<u8>,
}

impl Trigger {
    /// Adds token `id`'s bytes; once the tag is written, the bytes after it (in the same token).
    fn push(&mut self, id: u32) -> Option<Vec<u8>> {
        let bytes = self.env.tok_trie().token(id);
        // Control tokens are not text: they cannot write the tag.
        if bytes.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
            self.seen.clear();
            return None;
        }
        self.seen.extend_from_slice(bytes);
        let tag = OPEN_TAG.as_bytes();
        if let Some(at) = self.seen.windows(tag.len()).position(|w| w == tag) {
            return Some(self.seen[at + tag.len()..].to_vec());
        }
        let keep = self.seen.len().min(tag.len() - 1);
        self.seen.drain(..self.seen.len() - keep);
        None
    }
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint").field("active", &self.is_active()).field("complete", &self.is_complete()).field("failed", &self.failed).finish()
    }
}

impl Constraint {
    /// Whether the output is held to the grammar now (false while it waits for a call).
    pub fn is_active(&self) -> bool {
        self.trigger.is_none()
    }

    /// Computes the allowed tokens of this step.
    pub fn allowed(&mut self) -> &SimpleVob {
        let mask = if self.failed.is_some() { Err(anyhow::anyhow!("failed")) } else { self.matcher.compute_mask_or_eos() };
        match mask {
            Ok(mask) => self.mask = mask,
            Err(e) => {
                if self.failed.is_none() {
                    tracing::warn!("constraint failed, ending the sequence: {e}");
                    self.failed = Some(e.to_string());
                }
                self.mask.set_all(false);
                for &t in self.ends.iter() {
                    self.mask.allow_token(t);
                }
            }
        }
        &self.mask
    }

    /// Sets every token this step does not allow to -inf (`logits` may be shorter or
    /// longer than the vocabulary: the ids past either end are left out or masked).
    pub fn mask_logits(&mut self, logits: &mut [f32]) {
        if !self.is_active() {
            return;
        }
        let mask = self.allowed();
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Advances past the chosen token.
    pub fn advance(&mut self, id: u32) {
        if let Some(trigger) = &mut self.trigger {
            if let Some(rest) = trigger.push(id) {
                let env = trigger.env.clone();
                self.trigger = None;
                // The tag's own token may have written the start of the call too.
                for t in env.tok_trie().greedy_tokenize(&rest) {
                    self.advance(t);
                }
            }
            return;
        }
        if self.failed.is_some() || self.matcher.is_stopped() {
            return;
        }
        if let Err(e) = self.matcher.consume_token(id) {
            tracing::warn!("constraint rejected token {id}: {e}");
            self.failed = Some(e.to_string());
        }
    }

    /// Whether the output is complete and nothing may follow (the sequence is done).
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether `id` ends the sequence.
    pub fn is_end(&self, id: u32) -> bool {
        self.ends.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_keys_become_keywords() {
        let e = anyhow::anyhow!("Unimplemented keys: [\"not\", \"uniqueItems\"]");
        let e = ConstraintError::from_compile(&e.context("while processing #/properties/a"));
        assert_eq!(e, ConstraintError::Unsupported(vec!["not".into(), "uniqueItems".into()]));
        assert_eq!(e.keyword(), Some("not"));
        assert_eq!(e.to_string(), "unsupported JSON Schema keywords: not, uniqueItems");
        let other = ConstraintError::from_compile(&anyhow::anyhow!("properties must be an object"));
        assert!(matches!(other, ConstraintError::Invalid(ref m) if m.contains("properties must be")));
    }
}
