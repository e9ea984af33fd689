//! Uploaded audio → 16 kHz mono f32, in memory only: container and codec
//! decoding with symphonia (Opus with libopus, see opus.rs), channel averaging,
//! windowed-sinc resampling. `AudioReader` yields the 16 kHz samples packet by
//! packet, so a reader holds one packet and the resampler's filter however long
//! the audio; transcription keeps only a window's worth of them (see stream.rs).
//! Reading stops at `MAX_SECONDS`: a tiny file declaring hours of audio (or a
//! long silence, which compresses to almost nothing) is refused there.
use super::mel::SAMPLE_RATE;
use super::opus;
use super::resample::Resampler;
use crate::cancel::{Cancel, Cancelled};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// What the decoder reads.
pub const SUPPORTED_FORMATS: &str = "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, opus, wav, webm/mkv (Opus, Vorbis, FLAC or PCM audio)";

/// Shortest audio accepted, as OpenAI.
pub const MIN_SECONDS: f64 = 0.1;
/// Longest audio accepted (2 hours: a 25 MB upload of 32 kbit/s speech is ~1¾ h).
/// Bounds a request's time; its memory does not grow with the length.
pub const MAX_SECONDS: u32 = 7200;
/// Sample rates accepted: telephone speech (8 kHz) and below, to studio rates.
/// A header declaring 1 Hz or 4 MHz is a lie or an attack, not speech.
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 384_000;
pub const MAX_CHANNELS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("The audio file is empty.")]
    Empty,
    #[error("Invalid file format ({0}). Supported formats: {SUPPORTED_FORMATS}.")]
    Undecodable(String),
    #[error("Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds.")]
    TooShort,
    #[error("Audio file is too long. Maximum audio length is {MAX_SECONDS} seconds.")]
    TooLong,
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

/// Decodes a whole audio file (any supported container/codec) to 16 kHz mono.
/// `filename` only hints at the container; the bytes decide. `cancel` is
/// checked between packets. Transcription reads the file through
/// `AudioReader` instead, a piece at a time; this is for tools and tests.
pub fn decode_audio(bytes: Vec<u8>, filename: Option<&str>, cancel: &Cancel) -> Result<Vec<f32>, AudioError> {
    let mut reader = AudioReader::open(bytes.into(), filename)?;
    let mut samples = Vec::new();
    loop {
        cancel.check()?;
        if !reader.read(&mut samples)? {
            break;
        }
    }
    reader.check_length()?;
    Ok(samples)
}

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::Undecodable(format!("sample rate {rate} Hz is outside {MIN_RATE}–{MAX_RATE} Hz")))
    }
}

fn check_channels(channels: usize) -> Result<(), AudioError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(AudioError::Undecodable(format!("{channels} channels; 1 to {MAX_CHANNELS} are supported")))
    }
}

/// A RIFF/WAVE file's `fmt ` chunk, checked before symphonia reads it.
fn check_wav_header(bytes: &[u8]) -> Result<(), AudioError> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Ok(());
    }
    let bad = |why: &str| AudioError::Undecodable(format!("WAV header: {why}"));
    let mut at = 12usize;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..];
        if id == b"fmt " {
            if size < 16 || body.len() < 16 {
                return Err(bad("the fmt chunk is shorter than 16 bytes"));
            }
            let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
            let channels = u16_at(2) as usize;
            let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            let (block_align, bits) = (u16_at(12), u16_at(14));
            check_channels(channels)?;
            check_rate(rate)?;
            if block_align == 0 {
                return Err(bad("block alignment 0"));
            }
            if bits > 64 {
                return Err(bad(&format!("{bits} bits per sample")));
            }
            return Ok(());
        }
        // Chunks are padded to an even size.
        at = at.saturating_add(8).saturating_add(size).saturating_add(size & 1);
    }
    Err(bad("no fmt chunk"))
}

/// A track's decoder: symphonia's, or libopus for the codec symphonia lacks.
enum Codec {
    Symphonia(Box<dyn symphonia::core::codecs::Decoder>, Option<SampleBuffer<f32>>),
    Opus(opus::Decoder),
}

/// An audio file read forward as 16 kHz mono, one packet at a time: memory
/// stays at a packet and the resampler's filter, however long the audio.
/// Reading the same bytes twice gives the same samples.
pub struct AudioReader {
    format: Box<dyn FormatReader>,
    track: u32,
    codec: Codec,
    resampler: Option<Resampler>,
    /// One packet downmixed, at its own rate.
    mono: Vec<f32>,
    opus_pcm: Vec<f32>,
    /// 16 kHz samples produced so far.
    produced: usize,
    ended: bool,
}

impl AudioReader {
    /// Checks the headers and opens the audio track.
    pub fn open(bytes: Arc<[u8]>, filename: Option<&str>) -> Result<Self, AudioError> {
        if bytes.is_empty() {
            return Err(AudioError::Empty);
        }
        check_wav_header(&bytes)?;
        // symphonia asserts on some impossible header values (a sample rate of 0
        // divides by it); whatever slips past the checks is still a bad file, not a crash.
        guarded(|| Self::open_unguarded(bytes, filename))
    }

    fn open_unguarded(bytes: Arc<[u8]>, filename: Option<&str>) -> Result<Self, AudioError> {
        let mut hint = Hint::new();
        if let Some(ext) = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()) {
            hint.with_extension(&ext);
        }
        let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
        let probed = symphonia::default::get_probe()
            .format(&hint, stream, &FormatOptions::default(), &MetadataOptions::default())
            .map_err(|e| AudioError::Undecodable(format!("not a recognised audio container: {e}")))?;
        let format = probed.format;
        let track = format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL).ok_or_else(|| AudioError::Undecodable("no audio track".into()))?;
        if let Some(rate) = track.codec_params.sample_rate {
            check_rate(rate)?;
        }
        if let Some(channels) = track.codec_params.channels {
            check_channels(channels.count())?;
        }
        let codec = if track.codec_params.codec == CODEC_TYPE_OPUS {
            let header = track.codec_params.extra_data.as_deref().unwrap_or_default();
            Codec::Opus(opus::Decoder::new(header)?)
        } else {
            let decoder = symphonia::default::get_codecs()
                .make(&track.codec_params, &DecoderOptions::default())
                .map_err(|e| AudioError::Undecodable(format!("unsupported audio codec: {e}")))?;
            Codec::Symphonia(decoder, None)
        };
        let track = track.id;
        Ok(Self { format, track, codec, resampler: None, mono: Vec::new(), opus_pcm: Vec::new(), produced: 0, ended: false })
    }

    /// Appends the next piece of 16 kHz samples to `out` (possibly none);
    /// false once the file is exhausted. Past `MAX_SECONDS` it fails.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        if self.ended {
            return Ok(false);
        }
        let before = out.len();
        guarded(|| self.read_packet(out))?;
        self.produced += out.len() - before;
        if self.produced > MAX_SECONDS as usize * SAMPLE_RATE {
            return Err(AudioError::TooLong);
        }
        Ok(true)
    }

    /// After the last `read`: whether the audio is long enough to transcribe.
    pub fn check_length(&self) -> Result<(), AudioError> {
        if self.produced == 0 {
            return Err(AudioError::Undecodable("no decodable audio in the file".into()));
        }
        if (self.produced as f64) < MIN_SECONDS * SAMPLE_RATE as f64 {
            return Err(AudioError::TooShort);
        }
        Ok(())
    }

    fn read_packet(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let packet = match self.format.next_packet() {
            Ok(p) => p,
            // End of stream, or a truncated file: keep what was decoded.
            Err(SymError::IoError(_)) | Err(SymError::ResetRequired) => {
                if let Some(r) = self.resampler.take() {
                    r.finish(out);
                }
                self.ended = true;
                return Ok(());
            }
            Err(e) => return Err(AudioError::Undecodable(e.to_string())),
        };
        if packet.track_id() != self.track {
            return Ok(());
        }
        match &mut self.codec {
            Codec::Opus(decoder) => {
                self.opus_pcm.clear();
                decoder.decode(&packet.data, &mut self.opus_pcm);
                let channels = decoder.channels();
                push(&mut self.resampler, &mut self.mono, &self.opus_pcm, opus::RATE, channels, out)
            }
            Codec::Symphonia(decoder, buffer) => {
                let decoded = match decoder.decode(&packet) {
                    Ok(d) => d,
                    Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => return Ok(()), // a corrupt frame: skip it
                    Err(e) => return Err(AudioError::Undecodable(e.to_string())),
                };
                let spec = *decoded.spec();
                let channels = spec.channels.count();
                let buf = match buffer {
                    Some(b) if b.capacity() >= decoded.capacity() * channels => b,
                    _ => buffer.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
                };
                buf.copy_interleaved_ref(decoded);
                push(&mut self.resampler, &mut self.mono, buf.samples(), spec.rate, channels, out)
            }
        }
    }
}

/// Runs a symphonia call, its panics turned into a bad-file error.
fn guarded<T>(f: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| AudioError::Undecodable("the file's headers are inconsistent".into()))?
}

/// Downmixes one packet and resamples it to 16 kHz onto `out`.
fn push(resampler: &mut Option<Resampler>, mono: &mut Vec<f32>, interleaved: &[f32], rate: u32, channels: usize, out: &mut Vec<f32>) -> Result<(), AudioError> {
    check_rate(rate)?;
    check_channels(channels)?;
    mono.clear();
    mono.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
    if resampler.as_ref().is_some_and(|r| r.from() != rate) {
        // A stream whose rate changes (chained files): finish the first part.
        resampler.take().unwrap().finish(out);
    }
    resampler.get_or_insert_with(|| Resampler::new(rate, SAMPLE_RATE as u32)).push(mono, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_audio() {
        let cancel = Cancel::default();
        assert!(matches!(decode_audio(Vec::new(), Some("a.mp3"), &cancel), Err(AudioError::Empty)));
        let text = b"This is a text file, not an mp3 at all.\n".repeat(50);
        assert!(matches!(decode_audio(text, Some("notes.mp3"), &cancel), Err(AudioError::Undecodable(_))));
    }

    /// A 16-bit mono PCM WAV header declaring `rate`, then `data`.
    fn wav(rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
        let mut w = b"RIFF".to_vec();
        w.extend((36 + data.len() as u32).to_le_bytes());
        w.extend(b"WAVEfmt ");
        w.extend(16u32.to_le_bytes());
        w.extend(1u16.to_le_bytes());
        w.extend(channels.to_le_bytes());
        w.extend(rate.to_le_bytes());
        w.extend((rate * 2 * channels as u32).to_le_bytes());
        w.extend((2 * channels).to_le_bytes());
        w.extend(16u16.to_le_bytes());
        w.extend(b"data");
        w.extend((data.len() as u32).to_le_bytes());
        w.extend(data);
        w
    }

    #[test]
    fn impossible_wav_headers_are_refused() {
        let cancel = Cancel::default();
        let data = vec![0u8; 64_000];
        for (rate, channels) in [(0, 1), (1, 1), (4_000_000, 1), (16_000, 0), (16_000, 200)] {
            let got = decode_audio(wav(rate, channels, &data), Some("a.wav"), &cancel);
            assert!(matches!(got, Err(AudioError::Undecodable(_))), "{rate} Hz {channels} ch: {got:?}");
        }
        assert_eq!(decode_audio(wav(16_000, 1, &data), Some("a.wav"), &cancel).unwrap().len(), 32_000);
    }

    #[test]
    fn a_cancelled_decode_stops() {
        let cancel = Cancel::default();
        cancel.cancel();
        let got = decode_audio(wav(16_000, 1, &[0u8; 64_000]), Some("a.wav"), &cancel);
        assert!(matches!(got, Err(AudioError::Cancelled(_))), "{got:?}");
    }
}
