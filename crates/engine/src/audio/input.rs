//! Uploaded audio → 16 kHz mono f32, in memory only: container and codec
//! decoding with symphonia (Opus with libopus, see opus.rs), channel averaging,
//! windowed-sinc resampling.
use super::mel::SAMPLE_RATE;
use super::opus;
use std::io::Cursor;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// What the decoder reads.
pub const SUPPORTED_FORMATS: &str = "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, opus, wav, webm/mkv (Opus, Vorbis, FLAC or PCM audio)";

/// Shortest audio accepted, as OpenAI.
pub const MIN_SECONDS: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("The audio file is empty.")]
    Empty,
    #[error("Invalid file format ({0}). Supported formats: {SUPPORTED_FORMATS}.")]
    Undecodable(String),
    #[error("Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds.")]
    TooShort,
}

/// Decodes a whole audio file (any supported container/codec) to 16 kHz mono.
/// `filename` only hints at the container; the bytes decide.
pub fn decode_audio(bytes: Vec<u8>, filename: Option<&str>) -> Result<Vec<f32>, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let (samples, rate, channels) = decode_interleaved(bytes, filename)?;
    let mono: Vec<f32> = samples.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
    if (mono.len() as f64) < MIN_SECONDS * rate as f64 {
        return Err(AudioError::TooShort);
    }
    Ok(resample(&mono, rate, SAMPLE_RATE as u32))
}

/// A track's decoder: symphonia's, or libopus for the codec symphonia lacks.
enum Codec {
    Symphonia(Box<dyn symphonia::core::codecs::Decoder>, Option<SampleBuffer<f32>>),
    Opus(opus::Decoder),
}

fn decode_interleaved(bytes: Vec<u8>, filename: Option<&str>) -> Result<(Vec<f32>, u32, usize), AudioError> {
    let mut hint = Hint::new();
    if let Some(ext) = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()) {
        hint.with_extension(&ext);
    }
    let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| AudioError::Undecodable(format!("not a recognised audio container: {e}")))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Undecodable("no audio track".into()))?
        .clone();
    let mut rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut channels = track.codec_params.channels.map(|c| c.count()).unwrap_or(0);
    let mut codec = if track.codec_params.codec == CODEC_TYPE_OPUS {
        let header = track.codec_params.extra_data.as_deref().unwrap_or_default();
        let decoder = opus::Decoder::new(header)?;
        (rate, channels) = (opus::RATE, decoder.channels());
        Codec::Opus(decoder)
    } else {
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| AudioError::Undecodable(format!("unsupported audio codec: {e}")))?;
        Codec::Symphonia(decoder, None)
    };
    let mut samples = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // End of stream, or a truncated file: keep what was decoded.
            Err(SymError::IoError(_)) | Err(SymError::ResetRequired) => break,
            Err(e) => return Err(AudioError::Undecodable(e.to_string())),
        };
        if packet.track_id() != track.id {
            continue;
        }
        let (decoder, buffer) = match &mut codec {
            Codec::Opus(decoder) => {
                decoder.decode(&packet.data, &mut samples);
                continue;
            }
            Codec::Symphonia(decoder, buffer) => (decoder, buffer),
        };
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => continue, // a corrupt frame: skip it
            Err(e) => return Err(AudioError::Undecodable(e.to_string())),
        };
        let spec = *decoded.spec();
        rate = spec.rate;
        channels = spec.channels.count();
        let buf = match buffer {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            _ => buffer.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        samples.extend_from_slice(buf.samples());
    }
    if samples.is_empty() || rate == 0 || channels == 0 {
        return Err(AudioError::Undecodable("no decodable audio in the file".into()));
    }
    Ok((samples, rate, channels))
}

/// Band-limited resampling: a Hann-windowed sinc with 16 zero crossings each
/// side, cut off just under the lower Nyquist frequency, precomputed per phase
/// (the ratio reduced to `up / down`, so each output sample uses one table row).
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let g = gcd(from as u64, to as u64);
    let (up, down) = (to as u64 / g, from as u64 / g);
    let cutoff = 0.97 * (to as f64 / from as f64).min(1.0);
    let half = (16.0 / cutoff).ceil() as i64; // taps each side, in input samples
    let taps = (2 * half) as usize;
    let mut table = vec![0f32; up as usize * taps];
    for phase in 0..up as usize {
        let frac = phase as f64 / up as f64;
        let row = &mut table[phase * taps..(phase + 1) * taps];
        let mut sum = 0.0;
        for (k, w) in row.iter_mut().enumerate() {
            let x = (k as i64 - half + 1) as f64 - frac; // input offset from the output position
            let window = if x.abs() < half as f64 { 0.5 + 0.5 * (std::f64::consts::PI * x / half as f64).cos() } else { 0.0 };
            let v = cutoff * sinc(cutoff * x) * window;
            *w = v as f32;
            sum += v;
        }
        row.iter_mut().for_each(|w| *w = (*w as f64 / sum) as f32);
    }
    let out_len = (input.len() as u64 * up / down) as usize;
    let n = input.len() as i64;
    (0..out_len as u64)
        .map(|j| {
            let pos = j * down;
            let base = (pos / up) as i64;
            let row = &table[(pos % up) as usize * taps..][..taps];
            let first = base - half + 1;
            if first >= 0 && first + taps as i64 <= n {
                let src = &input[first as usize..first as usize + taps];
                src.iter().zip(row).map(|(s, w)| s * w).sum()
            } else {
                row.iter().enumerate().map(|(k, w)| {
                    let i = first + k as i64;
                    if (0..n).contains(&i) { input[i as usize] * w } else { 0.0 }
                }).sum()
            }
        })
        .collect()
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize).map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32).collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_passband_and_removes_aliases() {
        for from in [44_100, 48_000, 22_050, 8_000] {
            let kept = resample(&tone(1000.0, from, 1.0), from, 16_000);
            assert_eq!(kept.len(), 16_000);
            assert!((rms(&kept[1000..15_000]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01, "{from}: 1 kHz level {}", rms(&kept));
            if from > 16_000 {
                // 12 kHz would fold to 4 kHz without the low-pass.
                let alias = resample(&tone(12_000.0, from, 1.0), from, 16_000);
                assert!(rms(&alias[1000..15_000]) < 0.01, "{from}: alias level {}", rms(&alias));
            }
        }
    }

    #[test]
    fn rejects_what_is_not_audio() {
        assert!(matches!(decode_audio(Vec::new(), Some("a.mp3")), Err(AudioError::Empty)));
        let text = b"This is a text file, not an mp3 at all.\n".repeat(50);
        assert!(matches!(decode_audio(text, Some("notes.mp3")), Err(AudioError::Undecodable(_))));
    }
}
