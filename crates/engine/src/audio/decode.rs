//! Whisper's long-form decoding: 30 s windows, each decoded with timestamp
//! tokens; the next window starts at the last complete segment's end so
//! segments are seamless; temperature fallback on repetitive (compression
//! ratio > 2.4) or unconfident (average log-probability < −1) windows; windows
//! the model calls silent are skipped; earlier text conditions the next window.
//! The audio is read twice, forward, holding a window's worth at a time: once
//! to measure it (length, loudest spectrogram value and sample), once to
//! transcribe it.
use super::align::{fit_segment, snap_to_sound};
use super::mel::{frame_count, normalise, HOP, N_FFT, SAMPLE_RATE, WINDOW_FRAMES};
use super::model::{CrossKv, DecoderCache};
use super::search::softmax;
use super::stream::{Feed, Source};
use super::{Segment, Task, TranscribeOptions, Transcript, WhisperEngine};
use crate::cancel::Cancel;
use anyhow::Result;
use candle_core::{Device, Tensor};
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

/// What a first pass over the audio measures, needed before the first window:
/// the spectrogram's scale follows its loudest value, word timing the loudest sample.
struct Measured {
    len: usize,
    mel_floor: f32,
    peak: f32,
}

/// Samples kept before a window, for word timing (which looks up to 0.5 s back).
const WORD_MARGIN: usize = 2 * SAMPLE_RATE;

impl WhisperEngine {
    /// Reads the audio once, 30 s at a time, keeping only its length and maxima.
    fn measure(&self, source: &Source, cancel: &Cancel) -> Result<Measured> {
        let mut feed = Feed::open(source)?;
        let (mut max, mut peak, mut peaked) = (f32::NEG_INFINITY, 0f32, 0);
        let mut first = 0;
        loop {
            cancel.check()?;
            feed.fill(chunk_end(first), cancel)?;
            let len = feed.ended().then(|| feed.held_end());
            if len.is_some_and(|len| first >= frame_count(len)) {
                break;
            }
            let (fresh, _) = feed.get(peaked, usize::MAX);
            peak = fresh.iter().fold(peak, |m, s| m.max(s.abs()));
            peaked = feed.held_end();
            let (held, offset) = feed.get(chunk_start(first), chunk_end(first));
            max = self.mel.raw_chunk(held, offset, len, first)?.into_iter().fold(max, f32::max);
            first += WINDOW_FRAMES;
            feed.release(chunk_start(first).min(peaked));
        }
        if let Some(reader) = feed.reader() {
            reader.check_length()?;
        }
        Ok(Measured { len: feed.held_end(), mel_floor: max - 8.0, peak })
    }

    /// The window's spectrogram `[n_mels, WINDOW_FRAMES]`: frames `[seek, seek + count)`,
    /// then zeros. Their 30 s chunks are computed once and kept while windows use them.
    fn mel_window(&self, chunks: &mut Vec<(usize, Vec<f32>)>, feed: &Feed, m: &Measured, seek: usize, count: usize) -> Result<Tensor> {
        let n_mels = self.mel.n_mels();
        let mut data = vec![0f32; n_mels * count];
        for i in 0..count {
            let f = seek + i;
            let first = f / WINDOW_FRAMES * WINDOW_FRAMES;
            if !chunks.iter().any(|(c, _)| *c == first) {
                let (held, offset) = feed.get(chunk_start(first), chunk_end(first));
                chunks.push((first, self.mel.raw_chunk(held, offset, Some(m.len), first)?));
            }
            let chunk = &chunks.iter().find(|(c, _)| *c == first).expect("computed above").1;
            for (mel, &v) in chunk[(f - first) * n_mels..][..n_mels].iter().enumerate() {
                data[mel * count + i] = normalise(v, m.mel_floor);
            }
        }
        // Past the audio, the window is zeros (as the reference and
        // faster-whisper pad it), not the log-mel of silence.
        Ok(Tensor::from_vec(data, (n_mels, count), &Device::Cpu)?.pad_with_zeros(1, 0, WINDOW_FRAMES - count)?)
    }

    pub(super) fn run(&self, source: Source, opts: &TranscribeOptions) -> Result<Transcript> {
        let tk = &self.tokenizer;
        let measured = self.measure(&source, &opts.cancel)?;
        let duration = measured.len as f64 / SAMPLE_RATE as f64;
        let content_frames = measured.len / HOP;
        let mut feed = Feed::open(&source)?;
        let mut chunks: Vec<(usize, Vec<f32>)> = Vec::new();
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
            // Hold what this window needs: its spectrogram chunks' samples and word timing's margins.
            let first_chunk = seek / WINDOW_FRAMES * WINDOW_FRAMES;
            chunks.retain(|(c, _)| *c >= first_chunk);
            feed.release(chunk_start(first_chunk).min((seek * HOP).saturating_sub(WORD_MARGIN)));
            let last_chunk = (seek + segment_frames - 1) / WINDOW_FRAMES * WINDOW_FRAMES;
            feed.fill(chunk_end(last_chunk).max((seek + segment_frames) * HOP + WORD_MARGIN), &opts.cancel)?;
            let (window_samples, _) = feed.get(seek * HOP, (seek + segment_frames) * HOP);
            if window_samples.iter().all(|s| s.abs() < SILENCE_PEAK) {
                seek += segment_frames;
                continue;
            }
            let started = Instant::now();
            let window = self.mel_window(&mut chunks, &feed, &measured, seek, segment_frames)?;
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
                    let (held, offset) = feed.get(0, usize::MAX);
                    snap_to_sound(&mut words, held, offset, measured.peak, SAMPLE_RATE);
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

/// The first sample a spectrogram chunk starting at frame `first` reads.
fn chunk_start(first: usize) -> usize {
    (first * HOP).saturating_sub(N_FFT / 2)
}

/// One past the last sample that chunk reads.
fn chunk_end(first: usize) -> usize {
    (first + WINDOW_FRAMES) * HOP + N_FFT / 2
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
