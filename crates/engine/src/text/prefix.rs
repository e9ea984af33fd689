//! Prefix cache: the KV caches of recent prompts, so that a request sharing a long
//! prefix with one of them (a system prompt, a conversation so far) attends to those
//! positions, shared read-only, instead of prefilling them again.
//! Entries are scoped (by API key): a request reuses only its own scope's
//! prompts, so timing cannot reveal what another client's prompts begin with.
use super::model::{Prefix, SeqCache};

/// Prompts shorter than this are not worth keeping (their prefill is cheap).
pub const MIN_PREFIX: usize = 64;
/// Prompts kept, least recently used dropped first.
const ENTRIES: usize = 4;

struct Entry {
    scope: u64,
    tokens: Vec<u32>,
    prefix: Prefix,
}

#[derive(Default)]
pub struct PrefixStore {
    /// Most recently used last.
    entries: Vec<Entry>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixStore {
    /// Keeps the positions of `cache`, which holds exactly the fully prefilled `prompt`
    /// (they become read-only, shared with the sequence that goes on from them).
    pub fn insert(&mut self, scope: u64, prompt: &[u32], cache: &mut SeqCache) {
        if prompt.len() < MIN_PREFIX || cache.len() != prompt.len() {
            return;
        }
        // An entry this prompt contains (or equals) is superseded by it.
        let mine = |e: &Entry| e.scope == scope;
        if let Some(i) = self.entries.iter().position(|e| mine(e) && common_prefix(&e.tokens, prompt) == e.tokens.len()) {
            self.entries.remove(i);
        } else if let Some(i) = self.entries.iter().position(|e| mine(e) && common_prefix(&e.tokens, prompt) == prompt.len()) {
            // Already covered by a longer entry: mark it used.
            let e = self.entries.remove(i);
            self.entries.push(e);
            return;
        }
        if self.entries.len() == ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(Entry { scope, tokens: prompt.to_vec(), prefix: cache.freeze() });
    }

    /// Fills `cache` (empty) with the longest stored prefix of `prompt`, leaving at least
    /// the last prompt token to prefill (its logits start generation). Returns the number
    /// of positions filled.
    pub fn reuse(&mut self, scope: u64, prompt: &[u32], cache: &mut SeqCache) -> usize {
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.scope == scope)
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            .max_by_key(|&(_, n)| n);
        let Some((i, n)) = best.filter(|&(_, n)| n >= MIN_PREFIX) else { return 0 };
        if cache.start_from(&self.entries[i].prefix, n).is_err() {
            return 0;
        }
        let e = self.entries.remove(i);
        self.entries.push(e);
        n
    }
}
