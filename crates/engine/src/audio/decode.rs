//! Whisper's long-form decoding: 30 s windows, each decoded with timestamp
//! tokens; the next window starts at the last complete segment's end so
//! segments are seamless; temperature fallback on repetitive (compression
//! ratio > 2.4) or unconfident (average log-probability < −1) windows; windows
//! the model calls silent are skipped; earlier text conditions the next window.
use super::mel::{HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::model::{CrossKv, DecoderCache};
use super::{Segment, Task, TranscribeOptions, Transcript, WhisperEngine};
use anyhow::Result;
use rand::Rng;
use std::io::Write;
use std::time::Instant;

const COMPRESSION_RATIO_LIMIT: f64 = 2.4;
const LOGPROB_LIMIT: f64 = -1.0;
const NO_SPEECH_LIMIT: f64 = 0.6;
const TEMPERATURE_STEP: f32 = 0.2;
/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// The first timestamp may be at most 1 s into the window.
const MAX_INITIAL_TIMESTAMP_TOKENS: u32 = 50;
/// Peak amplitude under which a window is silence without asking the model (−60 dBFS).
const SILENCE_PEAK: f32 = 1e-3;

/// One decoding attempt of one window.
struct Attempt {
    tokens: Vec<u32>,
    temperature: f32,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

impl WhisperEngine {
    pub(super) fn run(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        let tk = &self.tokenizer;
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let mel = self.mel.log_mel(samples)?;
        let content_frames = samples.len() / HOP;
        let mut rng = rand::rng();

        let mut language = match (&opts.language, tk.multilingual()) {
            (_, false) => Some("en".to_string()),
            (Some(code), true) => Some(code.clone()),
            (None, true) => None,
        };
        let mut history: Vec<u32> = match opts.prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => tk.encode(&format!(" {p}"))?,
            _ => Vec::new(),
        };
        let mut prompt_since = 0;
        let mut segments: Vec<Segment> = Vec::new();
        let mut seek = 0usize;
        while seek < content_frames {
            opts.cancel.check()?;
            let segment_frames = WINDOW_FRAMES.min(content_frames - seek);
            let time_offset = seek as f64 * HOP as f64 / SAMPLE_RATE as f64;
            let window_samples = &samples[seek * HOP..((seek + segment_frames) * HOP).min(samples.len())];
            if window_samples.iter().all(|s| s.abs() < SILENCE_PEAK) {
                seek += segment_frames;
                continue;
            }
            let started = Instant::now();
            let audio = self.model.encode(&mel.narrow(1, seek, WINDOW_FRAMES)?)?;
            let cross = self.model.cross_kv(&audio)?;
            let encoded = started.elapsed();
            let lang = match &language {
                Some(l) => l.clone(),
                None => {
                    let detected = self.detect_language(&cross)?;
                    language = Some(detected.clone());
                    detected
                }
            };
            let mut prefix = Vec::new();
            let context = &history[prompt_since..];
            if !context.is_empty() {
                let keep = self.model.dims.text_ctx / 2 - 1;
                prefix.push(tk.sot_prev);
                prefix.extend_from_slice(&context[context.len().saturating_sub(keep)..]);
            }
            let sot_index = prefix.len();
            prefix.push(tk.sot);
            if tk.multilingual() {
                prefix.push(tk.language_token(&lang).unwrap_or(tk.sot + 1));
                prefix.push(if opts.task == Task::Translate { tk.translate } else { tk.transcribe });
            }

            let attempt = self.decode_with_fallback(&cross, &prefix, sot_index, opts.temperature, &mut rng)?;
            tracing::debug!(
                seek,
                encode_ms = encoded.as_millis() as u64,
                decode_ms = (started.elapsed() - encoded).as_millis() as u64,
                tokens = attempt.tokens.len(),
                prefix = prefix.len(),
                temperature = attempt.temperature,
                "whisper window"
            );
            if attempt.no_speech_prob > NO_SPEECH_LIMIT && attempt.avg_logprob < LOGPROB_LIMIT {
                seek += segment_frames;
                continue;
            }

            let tokens = &attempt.tokens;
            let is_ts = |t: u32| t >= tk.timestamp_begin;
            let time_of = |t: u32| (t - tk.timestamp_begin) as f64 * TIME_PRECISION;
            let n = tokens.len();
            let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
            let mut cuts: Vec<usize> = (1..n).filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i])).collect();
            let mut new_segments = Vec::new();
            let advance;
            if !cuts.is_empty() {
                if single_timestamp_ending {
                    cuts.push(n);
                }
                let mut last = 0;
                for &cut in &cuts {
                    let piece = &tokens[last..cut];
                    new_segments.push((time_offset + time_of(piece[0]), time_offset + time_of(piece[piece.len() - 1]), piece.to_vec()));
                    last = cut;
                }
                advance = if single_timestamp_ending { segment_frames } else { (time_of(tokens[last - 1]) * 100.0).round() as usize };
            } else {
                let mut end = segment_frames as f64 * HOP as f64 / SAMPLE_RATE as f64;
                if let Some(&t) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                    if t != tk.timestamp_begin {
                        end = time_of(t);
                    }
                }
                new_segments.push((time_offset, time_offset + end, tokens.clone()));
                advance = segment_frames;
            }
            // A window that ends on <|0.00|> would not move: take it whole.
            seek += if advance == 0 { segment_frames } else { advance.min(segment_frames) };

            for (start, end, seg_tokens) in new_segments {
                let text = tk.decode(&seg_tokens)?;
                if text.trim().is_empty() || start >= end {
                    continue;
                }
                // Timestamps stay in the context (as Whisper does): a text-only
                // context makes the model continue without timestamps, so the
                // next window comes back as one unsplit segment.
                history.extend_from_slice(&seg_tokens);
                segments.push(Segment {
                    id: segments.len(),
                    seek: seek_of(time_offset),
                    start,
                    end: end.min(duration.max(start)),
                    text,
                    tokens: seg_tokens,
                    temperature: attempt.temperature,
                    avg_logprob: attempt.avg_logprob,
                    compression_ratio: attempt.compression_ratio,
                    no_speech_prob: attempt.no_speech_prob,
                });
            }
            if attempt.temperature > 0.5 {
                // Sampled text is a poor context: start the next window fresh.
                prompt_since = history.len();
            }
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        Ok(Transcript { language: language.unwrap_or_else(|| "en".into()), duration, text, segments })
    }

    /// The most likely language token after <|startoftranscript|>.
    fn detect_language(&self, cross: &CrossKv) -> Result<String> {
        let tk = &self.tokenizer;
        let mut cache = DecoderCache::default();
        let logits = self.model.decode(&[tk.sot], &mut cache, cross, &[0])?.swap_remove(0);
        let best = tk.languages.iter().max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]));
        Ok(best.map(|(c, _)| c.clone()).unwrap_or_else(|| "en".into()))
    }

    fn decode_with_fallback(&self, cross: &CrossKv, prefix: &[u32], sot_index: usize, start: f32, rng: &mut impl Rng) -> Result<Attempt> {
        let mut temperature = start.clamp(0.0, 1.0);
        let mut attempts = Vec::new();
        loop {
            let attempt = self.decode_once(cross, prefix, sot_index, temperature, rng)?;
            let poor = attempt.compression_ratio > COMPRESSION_RATIO_LIMIT || attempt.avg_logprob < LOGPROB_LIMIT;
            let silent = attempt.no_speech_prob > NO_SPEECH_LIMIT;
            if !poor || silent {
                return Ok(attempt);
            }
            attempts.push(attempt);
            if temperature + TEMPERATURE_STEP > 1.0 + 1e-6 {
                break;
            }
            temperature += TEMPERATURE_STEP;
        }
        // Every temperature failed: keep the most confident attempt that is not
        // repetitive (high-temperature samples are often gibberish).
        let score = |a: &Attempt| (a.compression_ratio <= COMPRESSION_RATIO_LIMIT, a.avg_logprob);
        Ok(attempts.into_iter().max_by(|a, b| score(a).partial_cmp(&score(b)).unwrap_or(std::cmp::Ordering::Equal)).expect("at least one attempt"))
    }

    fn decode_once(&self, cross: &CrossKv, prefix: &[u32], sot_index: usize, temperature: f32, rng: &mut impl Rng) -> Result<Attempt> {
        let tk = &self.tokenizer;
        let dims = &self.model.dims;
        let max_new = (dims.text_ctx / 2).min(dims.text_ctx - prefix.len());
        let mut cache = DecoderCache::default();
        let mut first = self.model.decode(prefix, &mut cache, cross, &[sot_index, prefix.len() - 1])?;
        let mut logits = first.swap_remove(1);
        let no_speech_prob = softmax(&first[0])[tk.no_speech as usize] as f64;
        let mut tokens: Vec<u32> = Vec::new();
        let mut sum_logprob = 0f64;
        for _ in 0..max_new {
            self.apply_rules(&mut logits, &tokens);
            let logprobs = log_softmax(&logits);
            let next = if temperature == 0.0 { argmax(&logits) } else { sample(&logits, temperature, rng) };
            sum_logprob += logprobs[next as usize] as f64;
            if next == tk.eot {
                break;
            }
            tokens.push(next);
            if cache.len >= dims.text_ctx {
                break;
            }
            logits = self.model.decode(&[next], &mut cache, cross, &[0])?.swap_remove(0);
        }
        let text = tk.decode(&tokens)?;
        Ok(Attempt {
            avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
            compression_ratio: compression_ratio(&text),
            tokens,
            temperature,
            no_speech_prob,
        })
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

/// Frame offset (10 ms units) of a time, as OpenAI's `seek`.
fn seek_of(seconds: f64) -> usize {
    (seconds * 100.0).round() as usize
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

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(x);
    x.iter().map(|v| v - lse).collect()
}

fn softmax(x: &[f32]) -> Vec<f32> {
    log_softmax(x).into_iter().map(f32::exp).collect()
}

fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let probs = softmax(&scaled);
    let mut r: f32 = rng.random();
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// How much zlib shrinks the text: repetitive hallucinations compress well.
fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(text.as_bytes());
    let compressed = enc.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_compresses() {
        assert!(compression_ratio(&"the same words again ".repeat(20)) > COMPRESSION_RATIO_LIMIT);
        assert!(compression_ratio("A short, ordinary sentence about the weather today.") < COMPRESSION_RATIO_LIMIT);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, f32::NEG_INFINITY, 3.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
