//! Splits text of any length into chunks both models can read whole.
//!
//! Chunks are sentences (the heads were trained on sentences, and a short
//! harmful sentence must not be diluted by pages of harmless text around it).
//! A sentence over either window is halved at a word boundary until it fits;
//! a single word over the embedding window is cut into window-sized id runs.

/// The windows, in each model's own units.
pub struct Limits {
    /// Embedding-model ids per chunk, special tokens excluded.
    pub embed_tokens: usize,
    /// Toxicity-model word ids per chunk.
    pub toxic_words: usize,
}

#[derive(Debug, PartialEq)]
pub struct Chunk {
    pub embed_ids: Vec<u32>,
    pub toxic_ids: Vec<u32>,
}

/// Context windows: consecutive sentence chunks joined while they fit `tokens` embedding ids
/// and the toxicity window; each window starts about half way into the previous one, so a
/// harm spread over adjacent sentences is seen whole. A text that fits is one window.
/// Mirrors `window_chunks` in scripts/moderation/features.py, which the heads were trained on.
pub fn windows(sentences: &[Chunk], tokens: usize, toxic_words: usize) -> Vec<Chunk> {
    let (mut out, mut i) = (Vec::new(), 0);
    while i < sentences.len() {
        let (mut j, mut e, mut t) = (i + 1, sentences[i].embed_ids.len(), sentences[i].toxic_ids.len());
        while j < sentences.len() && e + sentences[j].embed_ids.len() <= tokens && t + sentences[j].toxic_ids.len() <= toxic_words {
            e += sentences[j].embed_ids.len();
            t += sentences[j].toxic_ids.len();
            j += 1;
        }
        out.push(Chunk {
            embed_ids: sentences[i..j].iter().flat_map(|c| c.embed_ids.iter().copied()).collect(),
            toxic_ids: sentences[i..j].iter().flat_map(|c| c.toxic_ids.iter().copied()).collect(),
        });
        if j == sentences.len() {
            break;
        }
        i = (i + 1).max((i + j).div_ceil(2));
    }
    out
}

/// Every text yields at least one chunk (an empty text, an empty one).
pub fn split(text: &str, limits: &Limits, embed_tokenize: impl Fn(&str) -> Vec<u32>, toxic_tokenize: impl Fn(&str) -> Vec<u32>) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for sentence in sentences(text) {
        fit(sentence, limits, &embed_tokenize, &toxic_tokenize, &mut chunks);
    }
    if chunks.is_empty() {
        chunks.push(Chunk { embed_ids: Vec::new(), toxic_ids: Vec::new() });
    }
    chunks
}

fn fit(piece: &str, limits: &Limits, embed_tokenize: &impl Fn(&str) -> Vec<u32>, toxic_tokenize: &impl Fn(&str) -> Vec<u32>, out: &mut Vec<Chunk>) {
    let embed_ids = embed_tokenize(piece);
    let toxic_ids = toxic_tokenize(piece);
    if embed_ids.len() <= limits.embed_tokens && toxic_ids.len() <= limits.toxic_words {
        out.push(Chunk { embed_ids, toxic_ids });
        return;
    }
    let words: Vec<&str> = piece.split_whitespace().collect();
    if words.len() > 1 {
        let (first, second) = halves(piece, words.len() / 2);
        fit(first, limits, embed_tokenize, toxic_tokenize, out);
        fit(second, limits, embed_tokenize, toxic_tokenize, out);
        return;
    }
    // One enormous "word": cut its ids (the toxicity model keeps its last window).
    let toxic_tail = toxic_ids[toxic_ids.len().saturating_sub(limits.toxic_words)..].to_vec();
    for run in embed_ids.chunks(limits.embed_tokens.max(1)) {
        out.push(Chunk { embed_ids: run.to_vec(), toxic_ids: toxic_tail.clone() });
    }
}

/// `piece` split before its `n`-th whitespace-separated word.
fn halves(piece: &str, n: usize) -> (&str, &str) {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in piece.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            if seen == n {
                return (&piece[..i], &piece[i..]);
            }
            seen += 1;
        }
    }
    (piece, "")
}

/// Sentences: ends after `.`, `!` or `?` followed by whitespace, and at line
/// breaks. Pieces with no letters or digits are dropped.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        let end = c == '\n' || (matches!(c, '.' | '!' | '?') && next_is_space);
        if end {
            let stop = i + c.len_utf8();
            out.push(&text[start..stop]);
            start = stop;
        }
    }
    out.push(&text[start..]);
    out.into_iter().map(str::trim).filter(|s| s.chars().any(char::is_alphanumeric)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<u32> {
        s.split_whitespace().map(|w| w.len() as u32).collect()
    }

    #[test]
    fn splits_sentences_and_lines() {
        assert_eq!(sentences("Hello there. How are you?\nFine!  3.14 is pi"), vec!["Hello there.", "How are you?", "Fine!", "3.14 is pi"]);
        assert_eq!(sentences("  ...  "), Vec::<&str>::new());
    }

    #[test]
    fn long_sentences_are_halved_until_they_fit() {
        let text = (0..50).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let chunks = split(&text, &Limits { embed_tokens: 8, toxic_words: 100 }, words, words);
        assert!(chunks.iter().all(|c| c.embed_ids.len() <= 8));
        assert_eq!(chunks.iter().map(|c| c.embed_ids.len()).sum::<usize>(), 50);
    }

    #[test]
    fn windows_pack_sentences_and_overlap_by_half() {
        let chunk = |n: usize| Chunk { embed_ids: vec![n as u32; n], toxic_ids: vec![1; n] };
        let sents: Vec<Chunk> = [3, 3, 3, 3, 3].into_iter().map(chunk).collect();
        // 9 tokens per window: sentences 0-2, then 2-4 (starts half way into the first).
        let w = windows(&sents, 9, 100);
        assert_eq!(w.iter().map(|c| c.embed_ids.len()).collect::<Vec<_>>(), vec![9, 9]);
        assert_eq!(windows(&sents, 100, 100).len(), 1, "a text that fits is one window");
        assert_eq!(windows(&sents, 2, 100).len(), 5, "a sentence over the window is a window of its own");
        assert_eq!(windows(&sents, 100, 7).len(), 4, "the toxicity window bounds windows too");
    }

    #[test]
    fn a_huge_word_is_cut_into_runs_and_empty_text_gives_one_chunk() {
        let each_char = |s: &str| s.chars().map(|c| c as u32).collect::<Vec<_>>();
        let chunks = split(&"x".repeat(25), &Limits { embed_tokens: 10, toxic_words: 100 }, each_char, words);
        assert_eq!(chunks.iter().map(|c| c.embed_ids.len()).collect::<Vec<_>>(), vec![10, 10, 5]);
        assert_eq!(split("", &Limits { embed_tokens: 10, toxic_words: 100 }, words, words).len(), 1);
    }
}
