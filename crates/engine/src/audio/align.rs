//! Word timings from the model, the way the Whisper reference finds them: the
//! window's text is run through the decoder once more (after the task tokens
//! and <|notimestamps|>), the cross-attention of the alignment heads (named
//! in config.json) tells which audio frames each token looks at; those
//! weights, normalised per frame and median-filtered, are averaged over the
//! heads, and dynamic time warping finds the monotonic path through them.
//! A word starts at the first frame of its first token on that path.
use super::model::CrossKv;
use super::{WhisperEngine, Word};
use anyhow::Result;

/// Seconds per encoder frame.
const FRAME_SECONDS: f64 = 0.02;
/// Width of the median filter over frames.
const MEDIAN_WIDTH: usize = 7;
/// Punctuation that joins the word after it, and the word before it.
const PREPENDED: &[&str] = &["\"", "'", "“", "¿", "(", "[", "{", "-"];
const APPENDED: &[&str] = &["\"", "'", ".", "。", ",", "，", "!", "！", "?", "？", ":", "：", "”", ")", "]", "}", "、"];
const SENTENCE_ENDS: &[&str] = &[".", "。", "!", "！", "?", "？"];
/// Languages written without spaces: their words are their characters.
const UNSPACED: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// A word and the text tokens it is made of.
struct Piece {
    text: String,
    tokens: usize,
    start: f64,
    end: f64,
}

impl WhisperEngine {
    /// Times (seconds from the window's start) of the words of `segments`
    /// (each a segment's tokens, timestamps included), one list per segment,
    /// and the median word length.
    /// `sot` is the window's <|startoftranscript|>, language and task tokens;
    /// `frames` the mel frames of the window that hold audio.
    pub(super) fn align_words(&self, cross: &CrossKv, sot: &[u32], segments: &[Vec<u32>], frames: usize, language: &str) -> Result<(Vec<Vec<Word>>, f64)> {
        let tk = &self.tokenizer;
        let texts: Vec<Vec<u32>> = segments.iter().map(|s| s.iter().copied().filter(|&t| t < tk.eot).collect()).collect();
        let text: Vec<u32> = texts.concat();
        let audio_frames = (frames / 2).clamp(1, self.model.dims.audio_ctx);
        if text.is_empty() || self.alignment_heads.is_empty() {
            return Ok((vec![Vec::new(); segments.len()], 0.0));
        }
        let tokens = [sot, &[tk.no_timestamps], &text, &[tk.eot]].concat();
        let scores = self.model.cross_attention_weights(&tokens, cross, &self.alignment_heads)?;
        let rows = tokens.len();
        let mut matrix = vec![0f32; rows * audio_frames];
        for head in &scores {
            let mut w: Vec<f32> = head.chunks_exact(head.len() / rows).flat_map(|r| softmaxed(&r[..audio_frames])).collect();
            standardise_columns(&mut w, rows, audio_frames);
            for (row, acc) in w.chunks_exact(audio_frames).zip(matrix.chunks_exact_mut(audio_frames)) {
                acc.iter_mut().zip(median_filter(row, MEDIAN_WIDTH)).for_each(|(a, v)| *a += v / scores.len() as f32);
            }
        }
        // Row `sot.len()` (<|notimestamps|>) predicts the first text token; the
        // last text token's row predicts <|endoftext|>: one row per text token and one more.
        let first = sot.len();
        let cost: Vec<f32> = matrix[first * audio_frames..(rows - 1) * audio_frames].iter().map(|v| -v).collect();
        let path = dtw(&cost, text.len() + 1, audio_frames);
        let mut jumps = vec![0usize; text.len() + 1];
        let mut last = usize::MAX;
        for (i, j) in path {
            if i != last {
                jumps[i] = j;
                last = i;
            }
        }
        let mut pieces = self.split_words(&text, language)?;
        let mut at = 0;
        for p in &mut pieces {
            p.start = jumps[at] as f64 * FRAME_SECONDS;
            p.end = jumps[at + p.tokens] as f64 * FRAME_SECONDS;
            at += p.tokens;
        }
        let median = shorten_long_words(&mut pieces);
        let pieces = merge_punctuation(pieces);

        // Back to segments, by how many tokens each holds.
        let mut out = Vec::with_capacity(segments.len());
        let mut words = pieces.into_iter().peekable();
        for seg in &texts {
            let mut taken = 0;
            let mut list = Vec::new();
            while taken < seg.len() {
                let Some(p) = words.next() else { break };
                taken += p.tokens;
                list.push(Word { word: p.text, start: p.start, end: p.end });
            }
            out.push(list);
        }
        Ok((out, median))
    }

    /// Text tokens grouped into words: a word starts at a token that begins
    /// with a space or is punctuation (or, unspaced, at every character).
    fn split_words(&self, text: &[u32], language: &str) -> Result<Vec<Piece>> {
        let tk = &self.tokenizer;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut pending: Vec<u32> = Vec::new();
        for &t in text {
            pending.push(t);
            let s = tk.decode(&pending)?;
            if s.contains('\u{FFFD}') {
                continue; // part of a multi-byte character
            }
            let trimmed = s.trim();
            let punctuation = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
            let new_word = pieces.is_empty() || UNSPACED.contains(&language) || s.starts_with(' ') || punctuation;
            if new_word {
                pieces.push(Piece { text: s, tokens: pending.len(), start: 0.0, end: 0.0 });
            } else if let Some(last) = pieces.last_mut() {
                last.text.push_str(&s);
                last.tokens += pending.len();
            }
            pending.clear();
        }
        if !pending.is_empty() {
            let s = tk.decode(&pending)?;
            match pieces.last_mut() {
                Some(last) => {
                    last.text.push_str(&s);
                    last.tokens += pending.len();
                }
                None => pieces.push(Piece { text: s, tokens: pending.len(), start: 0.0, end: 0.0 }),
            }
        }
        Ok(pieces)
    }
}

/// Makes a segment's words and span agree, as the reference does: the first
/// word after a pause (ending more than four median words after the last
/// speech) is cut to twice the median, and the segment's start and end move
/// to its words' unless a word runs half a second past them (and a first
/// word that starts before its segment's timestamp starts with it). `last_speech`
/// is where the previous segment ended.
pub(super) fn fit_segment(words: &mut [Word], start: &mut f64, end: &mut f64, median: f64, last_speech: &mut f64) {
    let max = median * 2.0;
    if let [first, rest @ ..] = words {
        let long_first = first.end - first.start > max || rest.first().is_some_and(|second| second.end - first.start > max * 2.0);
        if first.end - *last_speech > median * 4.0 && long_first {
            if let Some(second) = rest.first_mut() {
                if second.end - second.start > max {
                    let boundary = (second.end / 2.0).max(second.end - max);
                    first.end = boundary;
                    second.start = boundary;
                }
            }
            first.start = (first.end - max).max(0.0);
        }
    }
    if let Some(first) = words.first_mut() {
        if *start < first.end && *start - 0.5 > first.start {
            first.start = (first.end - median).min(*start).max(0.0);
        } else if *start > first.start && *start < first.end {
            // The path tends to enter a word early out of a pause; the
            // segment's own timestamp is the better start.
            first.start = *start;
        } else {
            *start = first.start;
        }
    }
    if let Some(last) = words.last_mut() {
        if *end > last.start && *end + 0.5 < last.end {
            last.end = (last.start + median).max(*end);
        } else {
            *end = last.end;
        }
    }
    *last_speech = *end;
}

/// Moves word edges that fall in silence to where the sound starts (or
/// stops), and a start that lags the sound rising after a pause back to it:
/// the warping path is often a frame or ten off at pauses. Silence is 10 ms whose peak is 40 dB under the audio's.
/// `held` are samples `[offset, offset + held.len())`, reaching the audio's end or
/// past the words; `peak` is the whole audio's loudest sample.
pub(super) fn snap_to_sound(words: &mut [Word], held: &[f32], offset: usize, peak: f32, rate: usize) {
    let step = rate / 100;
    let quiet_at = |t: f64| -> bool {
        let i = ((t.max(0.0) * rate as f64) as usize).saturating_sub(offset);
        held.get(i..(i + step).min(held.len())).is_none_or(|chunk| chunk.iter().all(|s| s.abs() < peak * 0.01))
    };
    let mut previous_end = 0.0;
    for w in words {
        while w.end - w.start > 0.02 && quiet_at(w.start) {
            w.start += 0.01;
        }
        // A start late into sound that rose out of a pause (after the previous
        // word) moves back to where the sound rose, up to half a second.
        let floor = (w.start - 0.5).max(previous_end);
        let mut t = w.start;
        while t - 0.01 >= floor && !quiet_at(t - 0.01) {
            t -= 0.01;
        }
        if t < w.start && t - 0.01 >= floor {
            w.start = t;
        }
        while w.end - w.start > 0.02 && quiet_at(w.end - 0.01) {
            w.end -= 0.01;
        }
        previous_end = w.end;
    }
}

/// Softmax of one row of attention scores over the frames that hold audio.
fn softmaxed(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Each column (frame) of `[rows, cols]` to zero mean and unit deviation
/// across the tokens: a frame every token attends to says nothing.
fn standardise_columns(w: &mut [f32], rows: usize, cols: usize) {
    for c in 0..cols {
        let mean = (0..rows).map(|r| w[r * cols + c]).sum::<f32>() / rows as f32;
        let var = (0..rows).map(|r| (w[r * cols + c] - mean).powi(2)).sum::<f32>() / rows as f32;
        let std = var.sqrt().max(1e-10);
        for r in 0..rows {
            w[r * cols + c] = (w[r * cols + c] - mean) / std;
        }
    }
}

/// Median of each `width` window, the row mirrored at its ends.
fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let half = width / 2;
    let n = row.len();
    if n <= half {
        return row.to_vec();
    }
    let at = |i: isize| -> f32 {
        let j = if i < 0 {
            -i
        } else if i as usize >= n {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        row[j.clamp(0, n as isize - 1) as usize]
    };
    let mut window = vec![0f32; width];
    (0..n as isize)
        .map(|i| {
            for (k, w) in window.iter_mut().enumerate() {
                *w = at(i + k as isize - half as isize);
            }
            window.sort_by(f32::total_cmp);
            window[half]
        })
        .collect()
}

/// The cheapest monotonic path from the top-left to the bottom-right of
/// `cost` (`[n, m]`), moving right, down or diagonally; `(row, column)` pairs in order.
fn dtw(cost: &[f32], n: usize, m: usize) -> Vec<(usize, usize)> {
    let w = m + 1;
    let mut total = vec![f32::INFINITY; (n + 1) * w];
    // How each cell was reached: 0 diagonally, 1 from above, 2 from the left.
    let mut from = vec![0u8; (n + 1) * w];
    total[0] = 0.0;
    for i in 1..=n {
        for j in 1..=m {
            let (diag, up, left) = (total[(i - 1) * w + j - 1], total[(i - 1) * w + j], total[i * w + j - 1]);
            let (best, step) = if diag < up && diag < left {
                (diag, 0)
            } else if up < diag && up < left {
                (up, 1)
            } else {
                (left, 2)
            };
            total[i * w + j] = cost[(i - 1) * m + j - 1] + best;
            from[i * w + j] = step;
        }
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 && j > 0 {
        path.push((i - 1, j - 1));
        match from[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// Caps words that swallowed a pause around a sentence end at twice the
/// median word length (at most 1.4 s); returns the median.
fn shorten_long_words(pieces: &mut [Piece]) -> f64 {
    let mut lengths: Vec<f64> = pieces.iter().map(|p| p.end - p.start).filter(|&d| d > 0.0).collect();
    if lengths.is_empty() {
        return 0.0;
    }
    lengths.sort_by(f64::total_cmp);
    let mid = lengths.len() / 2;
    let median = if lengths.len() % 2 == 1 { lengths[mid] } else { (lengths[mid - 1] + lengths[mid]) / 2.0 };
    let median = median.min(0.7);
    let max = median * 2.0;
    for i in 1..pieces.len() {
        if pieces[i].end - pieces[i].start > max {
            if SENTENCE_ENDS.contains(&pieces[i].text.trim()) {
                pieces[i].end = pieces[i].start + max;
            } else if SENTENCE_ENDS.contains(&pieces[i - 1].text.trim()) {
                pieces[i].start = pieces[i].end - max;
            }
        }
    }
    median
}

/// Opening punctuation joins the next word and closing punctuation the
/// previous one (keeping that word's times), so no word is punctuation alone.
fn merge_punctuation(mut pieces: Vec<Piece>) -> Vec<Piece> {
    for i in (1..pieces.len()).rev() {
        let p = pieces[i - 1].text.trim();
        if pieces[i - 1].text.starts_with(' ') && PREPENDED.contains(&p) {
            let prev = std::mem::take(&mut pieces[i - 1].text);
            pieces[i].text = prev + &pieces[i].text;
            pieces[i].tokens += std::mem::take(&mut pieces[i - 1].tokens);
        }
    }
    for i in 1..pieces.len() {
        if !pieces[i - 1].text.ends_with(' ') && !pieces[i - 1].text.is_empty() && APPENDED.contains(&pieces[i].text.as_str()) {
            let next = std::mem::take(&mut pieces[i].text);
            pieces[i - 1].text.push_str(&next);
            pieces[i - 1].tokens += std::mem::take(&mut pieces[i].tokens);
        }
    }
    // A word emptied into another keeps nothing; one with tokens but no text
    // (an unprintable token) still counts its tokens.
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match (p.text.is_empty(), out.last_mut()) {
            (true, Some(last)) => last.tokens += p.tokens,
            (true, None) if p.tokens == 0 => {}
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal_band() {
        // Three rows whose cheap frames are 0–1, 2–4 and 5.
        let (n, m) = (3, 6);
        let mut cost = vec![1.0f32; n * m];
        for (i, cols) in [(0, 0..2), (1, 2..5), (2, 5..6)] {
            for j in cols {
                cost[i * m + j] = 0.0;
            }
        }
        let path = dtw(&cost, n, m);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        let first_frame = |row: usize| path.iter().find(|p| p.0 == row).unwrap().1;
        assert_eq!((first_frame(0), first_frame(1), first_frame(2)), (0, 2, 5));
    }

    #[test]
    fn median_filter_removes_spikes() {
        let row = [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        assert!(median_filter(&row, 7).iter().all(|&v| v == 0.0));
        assert_eq!(median_filter(&[1.0, 2.0], 7), vec![1.0, 2.0]);
    }

    #[test]
    fn punctuation_joins_its_word() {
        let piece = |t: &str| Piece { text: t.to_string(), tokens: 1, start: 0.0, end: 0.0 };
        let merged = merge_punctuation(vec![piece(" \""), piece("Hello"), piece(","), piece(" world"), piece(".")]);
        let texts: Vec<&str> = merged.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, vec![" \"Hello,", " world."]);
        assert_eq!(merged.iter().map(|p| p.tokens).sum::<usize>(), 5);
    }
}
