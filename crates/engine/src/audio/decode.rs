//! Whisper's long-form decoding: 30 s windows, each decoded with timestamp
//! tokens; the next window starts at the last complete segment's end so
//! segments are seamless; temperature fallback on repetitive (compression
//! ratio > 2.4) or unconfident (average log-probability < −1) windows; windows
//! the model calls silent are skipped; earlier text conditions the next window.
use super::align::{fit_segment, snap_to_sound};
use super::mel::{HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::model::{CrossKv, DecoderCache};
use super::search::softmax;
use super::{Segment, Task, TranscribeOptions, Transcript, WhisperEngine};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;

const COMPRESSION_RATIO_LIMIT: f64 = 2.4;
const LOGPROB_LIMIT: f64 = -1.0;
const NO_SPEECH_LIMIT: f64 = 0.6;
const TEMPERATURE_STEP: f32 = 0.2;
/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
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
        // Fallback samples are seeded: the same audio gives the same transcript.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);

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
        // Where the last segment's speech ended (word timing).
        let mut last_speech = 0.0;
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
            // Past the audio, the window is zeros (as the reference and
            // faster-whisper pad it), not the log-mel of silence.
            let window = mel.narrow(1, seek, segment_frames)?.pad_with_zeros(1, 0, WINDOW_FRAMES - segment_frames)?;
            let audio = self.model.encode(&window)?;
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

            let attempt = self.decode_with_fallback(&cross, &prefix, sot_index, opts, &mut rng)?;
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

            let (mut words, median) = if opts.word_timestamps {
                let pieces: Vec<Vec<u32>> = new_segments.iter().map(|s| s.2.clone()).collect();
                self.align_words(&cross, &prefix[sot_index..], &pieces, segment_frames, &lang)?
            } else {
                (vec![Vec::new(); new_segments.len()], 0.0)
            };
            for ((mut start, mut end, seg_tokens), words) in new_segments.into_iter().zip(words.iter_mut()) {
                let text = tk.decode(&seg_tokens)?;
                if text.trim().is_empty() || start >= end {
                    continue;
                }
                let mut words = std::mem::take(words);
                if opts.word_timestamps {
                    for w in &mut words {
                        w.start += time_offset;
                        w.end += time_offset;
                    }
                    fit_segment(&mut words, &mut start, &mut end, median, &mut last_speech);
                    snap_to_sound(&mut words, samples, SAMPLE_RATE);
                    if let (Some(first), Some(last)) = (words.first(), words.last()) {
                        (start, end) = (first.start, last.end);
                    }
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
                    words,
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

    /// The language whose token is most likely after <|startoftranscript|>,
    /// as Whisper detects it: a softmax over the language tokens alone.
    fn detect_language(&self, cross: &CrossKv) -> Result<String> {
        let tk = &self.tokenizer;
        let mut cache = DecoderCache::default();
        let logits = self.model.decode(&[tk.sot], &mut cache, cross, &[0])?.swap_remove(0);
        let scores: Vec<f32> = tk.languages.iter().map(|&(_, t)| logits[t as usize]).collect();
        let probs = softmax(&scores);
        let mut ranked: Vec<(&str, f32)> = tk.languages.iter().map(|(c, _)| c.as_str()).zip(probs).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        tracing::debug!(top = ?&ranked[..ranked.len().min(3)], "whisper language");
        Ok(ranked.first().map_or("en", |(c, _)| c).to_string())
    }

    fn decode_with_fallback(&self, cross: &CrossKv, prefix: &[u32], sot_index: usize, opts: &TranscribeOptions, rng: &mut impl Rng) -> Result<Attempt> {
        let mut temperature = opts.temperature.clamp(0.0, 1.0);
        let mut attempts = Vec::new();
        loop {
            let attempt = self.decode_once(cross, prefix, sot_index, temperature, opts, rng)?;
            let poor = attempt.compression_ratio > COMPRESSION_RATIO_LIMIT || attempt.avg_logprob < LOGPROB_LIMIT;
            // Silence, which the caller skips, needs no retry. It takes both
            // signs, as the skip does: a confident no-speech token over a
            // confident text is no silence (noise makes greedy loop on
            // "1-2-3-4-4-4..." at no_speech 0.8 and logprob −0.1).
            let silent = attempt.no_speech_prob > NO_SPEECH_LIMIT && attempt.avg_logprob < LOGPROB_LIMIT;
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

    fn decode_once(
        &self,
        cross: &CrossKv,
        prefix: &[u32],
        sot_index: usize,
        temperature: f32,
        opts: &TranscribeOptions,
        rng: &mut impl Rng,
    ) -> Result<Attempt> {
        let (cache, logits, no_speech_prob) = self.start(cross, prefix, sot_index)?;
        let decoded = if temperature == 0.0 {
            self.beam_search(cross, cache, logits, opts.beam_size)?
        } else {
            self.best_of(cross, cache, logits, temperature, opts.best_of, rng)?
        };
        let text = self.tokenizer.decode(&decoded.tokens)?;
        Ok(Attempt {
            avg_logprob: decoded.sum_logprob / (decoded.tokens.len() + 1) as f64,
            compression_ratio: compression_ratio(&text),
            tokens: decoded.tokens,
            temperature,
            no_speech_prob,
        })
    }
}

/// Frame offset (10 ms units) of a time, as OpenAI's `seek`.
fn seek_of(seconds: f64) -> usize {
    (seconds * 100.0).round() as usize
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
}
