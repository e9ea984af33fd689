//! The model's vocabulary as llguidance sees it: a trie over every token's bytes, with
//! control tokens kept out of text (marked special) and every stop token an "end".

use std::sync::Arc;

use anyhow::{bail, Result};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use super::super::tokenizer::Tokenizer;

/// Builds the token environment of `tokenizer`.
///
/// Control tokens are written `\xFF<text>`, toktrie's marker for special tokens: a grammar
/// never produces them as text. Tokenization inside llguidance (only used for forced
/// tokens) is the trie's greedy one; nothing here depends on it being canonical.
pub fn token_env(tokenizer: &Tokenizer) -> Result<TokEnv> {
    let n = tokenizer.vocab_size();
    let mut words: Vec<Vec<u8>> = (0..n as u32).map(|id| tokenizer.token_bytes(id).unwrap_or_default().to_vec()).collect();
    for &id in tokenizer.control_tokens() {
        if let Some(word) = words.get_mut(id as usize) {
            let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            marked.append(word);
            *word = marked;
        }
    }
    let stops = tokenizer.stop_tokens();
    let Some(&eos) = tokenizer.eos().as_ref().or(stops.first()) else {
        bail!("the vocabulary has no end-of-sequence token");
    };
    let info = TokRxInfo { vocab_size: n as u32, tok_eos: eos, tok_bos: tokenizer.bos(), tok_pad: None, tok_unk: None, tok_end_of_turn: None };
    let mut ends = vec![eos];
    ends.extend(stops.iter().copied().filter(|&s| s != eos));
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&ends);
    Ok(Arc::new(ApproximateTokEnv::new(trie)))
}
