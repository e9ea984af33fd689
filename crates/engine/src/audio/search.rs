//! Decoding one 30 s window into tokens: beam search at temperature 0 (as the
//! Whisper reference and faster-whisper do by default; a width of 1 is greedy),
//! the best of several samples above it, and Whisper's logit rules.
//! Sequences decoded side by side share each step's weight reads
//! (`Whisper::decode_batch`).
use super::model::{CrossKv, DecoderCache};
use super::WhisperEngine;
use anyhow::Result;
use rand::Rng;

/// The first timestamp may be at most 1 s into the window.
const MAX_INITIAL_TIMESTAMP_TOKENS: u32 = 50;

/// A finished sequence: its tokens (without <|endoftext|>) and the sum of
/// the log-probabilities of those tokens and of the <|endoftext|> that ended it.
pub(super) struct Decoded {
    pub tokens: Vec<u32>,
    pub sum_logprob: f64,
}

impl Decoded {
    /// The reference's ranking: log-probability per token.
    fn score(&self) -> f64 {
        self.sum_logprob / self.tokens.len().max(1) as f64
    }
}

fn best(done: Vec<Decoded>) -> Decoded {
    done.into_iter().max_by(|a, b| a.score().total_cmp(&b.score())).unwrap_or(Decoded { tokens: Vec::new(), sum_logprob: 0.0 })
}

impl WhisperEngine {
    /// Runs `prefix` (ending with the task tokens) once; returns the cache, the
    /// logits for the first new token and the probability of <|nospeech|> read
    /// at <|startoftranscript|> (`sot_index`).
    pub(super) fn start(&self, cross: &CrossKv, prefix: &[u32], sot_index: usize) -> Result<(DecoderCache, Vec<f32>, f64)> {
        let mut cache = DecoderCache::default();
        let mut rows = self.model.decode(prefix, &mut cache, cross, &[sot_index, prefix.len() - 1])?;
        let logits = rows.swap_remove(1);
        let no_speech_prob = softmax(&rows[0])[self.tokenizer.no_speech as usize] as f64;
        Ok((cache, logits, no_speech_prob))
    }

    /// How many tokens a window may add after a prefix of `prefix_len`.
    fn max_new(&self, prefix_len: usize) -> usize {
        let ctx = self.model.dims.text_ctx;
        (ctx / 2).min(ctx - prefix_len)
    }

    /// Beam search of `width` beams: each step keeps the `width` best
    /// continuations by total log-probability; a beam that picks
    /// <|endoftext|> is set aside, and the search ends once `width` are.
    pub(super) fn beam_search(&self, cross: &CrossKv, cache: DecoderCache, logits: Vec<f32>, width: usize) -> Result<Decoded> {
        let eot = self.tokenizer.eot;
        let width = width.max(1);
        let steps = self.max_new(cache.len);
        let mut beams: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
        let mut caches = vec![cache];
        let mut logits = vec![logits];
        let mut done: Vec<Decoded> = Vec::new();
        for _ in 0..steps {
            let mut candidates: Vec<(f64, usize, u32)> = Vec::new();
            for (i, ((tokens, sum), logits)) in beams.iter().zip(logits.iter_mut()).enumerate() {
                self.apply_rules(logits, tokens);
                let logprobs = log_softmax(logits);
                candidates.extend(top_k(&logprobs, width + 1).into_iter().map(|t| (sum + logprobs[t as usize] as f64, i, t)));
            }
            candidates.retain(|c| c.0.is_finite());
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut next: Vec<(usize, u32, f64)> = Vec::new();
            for (sum, parent, token) in candidates {
                if token == eot {
                    done.push(Decoded { tokens: beams[parent].0.clone(), sum_logprob: sum });
                } else {
                    next.push((parent, token, sum));
                    if next.len() == width {
                        break;
                    }
                }
            }
            if done.len() >= width || next.is_empty() || caches[0].len >= self.model.dims.text_ctx {
                beams.clear();
                break;
            }
            // Children of one beam share its cache: the last takes it, the others copy it.
            let mut uses = vec![0usize; beams.len()];
            next.iter().for_each(|&(p, _, _)| uses[p] += 1);
            let mut parents: Vec<Option<DecoderCache>> = caches.into_iter().map(Some).collect();
            caches = next
                .iter()
                .map(|&(p, _, _)| {
                    uses[p] -= 1;
                    if uses[p] == 0 { parents[p].take() } else { parents[p].clone() }.expect("a parent's cache")
                })
                .collect();
            beams = next.iter().map(|&(p, t, sum)| ([beams[p].0.as_slice(), &[t]].concat(), sum)).collect();
            let step: Vec<u32> = next.iter().map(|&(_, t, _)| t).collect();
            logits = self.model.decode_batch(&step, &mut caches, cross)?;
        }
        // Out of room: the unfinished beams compete too.
        beams.sort_by(|a, b| b.1.total_cmp(&a.1));
        done.extend(beams.into_iter().take(width.saturating_sub(done.len())).map(|(tokens, sum_logprob)| Decoded { tokens, sum_logprob }));
        Ok(best(done))
    }

    /// `n` sequences sampled at `temperature`, side by side; the best one wins.
    pub(super) fn best_of(&self, cross: &CrossKv, cache: DecoderCache, logits: Vec<f32>, temperature: f32, n: usize, rng: &mut impl Rng) -> Result<Decoded> {
        let eot = self.tokenizer.eot;
        let steps = self.max_new(cache.len);
        let n = n.max(1);
        let mut alive: Vec<(Decoded, DecoderCache, Vec<f32>)> =
            (0..n).map(|_| (Decoded { tokens: Vec::new(), sum_logprob: 0.0 }, cache.clone(), logits.clone())).collect();
        let mut done = Vec::new();
        for _ in 0..steps {
            let mut next = Vec::new();
            for (mut seq, cache, mut logits) in alive {
                self.apply_rules(&mut logits, &seq.tokens);
                let token = sample(&logits, temperature, rng);
                seq.sum_logprob += log_softmax(&logits)[token as usize] as f64;
                if token == eot || cache.len >= self.model.dims.text_ctx {
                    done.push(seq);
                } else {
                    seq.tokens.push(token);
                    next.push((seq, cache));
                }
            }
            if next.is_empty() {
                alive = Vec::new();
                break;
            }
            let step: Vec<u32> = next.iter().map(|(s, _)| *s.tokens.last().expect("a token")).collect();
            let (seqs, mut caches): (Vec<Decoded>, Vec<DecoderCache>) = next.into_iter().unzip();
            let rows = self.model.decode_batch(&step, &mut caches, cross)?;
            alive = seqs.into_iter().zip(caches).zip(rows).map(|((s, c), l)| (s, c, l)).collect();
        }
        done.extend(alive.into_iter().map(|(s, _, _)| s));
        Ok(best(done))
    }

    /// Whisper's logit filters: no blank start, suppressed tokens, and the
    /// timestamp grammar (pairs close segments, times never go back, the first
    /// token is a timestamp ≤ 1 s, and a timestamp wins when its total
    /// probability beats every single text token).
    fn apply_rules(&self, logits: &mut [f32], sampled: &[u32]) {
        let tk = &self.tokenizer;
        let ninf = f32::NEG_INFINITY;
        let tb = tk.timestamp_begin as usize;
        if sampled.is_empty() {
            for &t in &self.blank {
                logits[t as usize] = ninf;
            }
            logits[tk.eot as usize] = ninf;
        }
        for &t in &self.suppress {
            logits[t as usize] = ninf;
        }
        logits[tk.no_timestamps as usize] = ninf;

        let last_ts = sampled.last().is_some_and(|&t| t >= tk.timestamp_begin);
        let penultimate_ts = sampled.len() < 2 || sampled[sampled.len() - 2] >= tk.timestamp_begin;
        if last_ts {
            if penultimate_ts {
                logits[tb..].fill(ninf);
            } else {
                logits[..tk.eot as usize].fill(ninf);
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|&&t| t >= tk.timestamp_begin) {
            let floor = if last_ts && !penultimate_ts { last } else { last + 1 };
            logits[tb..floor as usize].fill(ninf);
        }
        if sampled.is_empty() {
            logits[..tb].fill(ninf);
            logits[tb + MAX_INITIAL_TIMESTAMP_TOKENS as usize + 1..].fill(ninf);
        }
        let logprobs = log_softmax(logits);
        let ts_mass = log_sum_exp(&logprobs[tb..]);
        let best_text = logprobs[..tb].iter().copied().fold(ninf, f32::max);
        if ts_mass > best_text {
            logits[..tb].fill(ninf);
        }
    }
}

/// The `k` largest entries' indices, largest first.
fn top_k(x: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..x.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| x[b as usize].total_cmp(&x[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]));
    idx
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0)
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

pub(super) fn log_softmax(x: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(x);
    x.iter().map(|v| v - lse).collect()
}

pub(super) fn softmax(x: &[f32]) -> Vec<f32> {
    log_softmax(x).into_iter().map(f32::exp).collect()
}

fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let probs = softmax(&scaled);
    let mut r: f32 = rng.random();
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 && *p > 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, f32::NEG_INFINITY, 3.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn top_k_is_ordered_and_complete() {
        let x = [0.5, -1.0, 3.0, 2.0, f32::NEG_INFINITY, 2.5];
        assert_eq!(top_k(&x, 3), vec![2, 5, 3]);
        assert_eq!(top_k(&x, 10).len(), x.len());
        assert!(top_k(&x, 0).is_empty());
    }
}
