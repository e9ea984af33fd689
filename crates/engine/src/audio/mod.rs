//! Speech recognition with Whisper, loaded from CTranslate2 files
//! (`model.bin`, `tokenizer.json`, `config.json` in one directory).
//! `transcribe` is synchronous and CPU heavy: callers run it on a blocking thread.
mod align;
mod attention;
mod ct2;
mod decode;
mod fastmath;
mod gemv;
pub mod input;
mod languages;
mod mel;
mod model;
mod opus;
mod resample;
mod search;
mod stream;
mod tokens;
mod worker;

pub use crate::cancel::{Cancel, Cancelled};
pub use input::{decode_audio, AudioError, AudioReader, MAX_SECONDS};
pub use languages::language_name;
pub use mel::SAMPLE_RATE;
pub use worker::{SpeechEngine, SpeechError};

use anyhow::{Context, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Transcribe,
    /// Into English.
    Translate,
}

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub task: Task,
    /// ISO-639-1 code; None = detect from the first window.
    pub language: Option<String>,
    /// Text the speech continues (names, spelling, style).
    pub prompt: Option<String>,
    /// First temperature tried; fallback raises it by 0.2 up to 1.0.
    pub temperature: f32,
    /// Raised when the client is gone: the window loop stops.
    pub cancel: Cancel,
    /// Beams searched at temperature 0 (1: greedy).
    pub beam_size: usize,
    /// Samples drawn at a temperature above 0, the best kept.
    pub best_of: usize,
    /// Time each word from the model's cross-attention (and fit the
    /// segments' times to their words).
    pub word_timestamps: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            prompt: None,
            temperature: 0.0,
            cancel: Cancel::default(),
            beam_size: 5,
            best_of: 5,
            word_timestamps: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub id: usize,
    /// Start of the window it was decoded in, in 10 ms frames.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    /// With `word_timestamps`: its words, punctuation joined to them.
    pub words: Vec<Word>,
}

#[derive(Debug, Clone)]
pub struct Word {
    /// As the text spells it, with its leading space and punctuation.
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    /// ISO-639-1 code, given or detected.
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub text: String,
    pub segments: Vec<Segment>,
}

pub struct WhisperEngine {
    model: model::Whisper,
    tokenizer: tokens::WhisperTokenizer,
    mel: mel::MelFrontend,
    /// Never produced: config.json's `suppress_ids` plus the task/control tokens.
    suppress: Vec<u32>,
    /// Not allowed as the first token: the space (from `suppress_ids_begin`).
    blank: Vec<u32>,
    /// `(decoder layer, head)` pairs whose cross-attention follows the speech
    /// (config.json's `alignment_heads`): word timing reads them.
    alignment_heads: Vec<(usize, usize)>,
}

impl WhisperEngine {
    pub fn load(dir: &Path) -> Result<Self> {
        let weights = ct2::Ct2Model::load(&dir.join("model.bin"))?;
        let model = model::Whisper::from_ct2(&weights)?;
        drop(weights);
        let tokenizer = tokens::WhisperTokenizer::load(&dir.join("tokenizer.json"), model.dims.vocab)?;
        let config_path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).with_context(|| format!("reading {}", config_path.display()))?)?;
        let ids =
            |key: &str| -> Vec<u32> { config[key].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()).unwrap_or_default() };
        let mut suppress = ids("suppress_ids");
        let t = &tokenizer;
        suppress.extend([t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm, t.no_speech]);
        suppress.retain(|&id| (id as usize) < model.dims.vocab);
        let blank: Vec<u32> = ids("suppress_ids_begin").into_iter().filter(|&id| id != t.eot && (id as usize) < model.dims.vocab).collect();
        let alignment_heads = config["alignment_heads"]
            .as_array()
            .map(|pairs| pairs.iter().filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_u64()? as usize))).filter(|&(_, h)| h < model.dims.heads).collect())
            .unwrap_or_default();
        let mel = mel::MelFrontend::new(model.dims.n_mels)?;
        Ok(Self { model, tokenizer, mel, suppress, blank, alignment_heads })
    }

    /// Whether the model knows languages other than English (and can translate).
    pub fn multilingual(&self) -> bool {
        self.tokenizer.multilingual()
    }

    /// Whether `code` is one of the model's languages.
    pub fn knows_language(&self, code: &str) -> bool {
        if self.multilingual() {
            self.tokenizer.language_token(code).is_some()
        } else {
            code == "en"
        }
    }

    /// Transcribes (or translates) 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        // Run on a rayon worker: a decoder step's ~50 small parallel products
        // then split within the pool instead of each being handed in from
        // outside, with the caller put to sleep and woken every time.
        rayon::scope(|_| self.run(stream::Source::Samples(samples), opts))
    }

    /// Transcribes (or translates) an audio file (any supported format), decoding
    /// it as it goes: memory does not grow with the audio's length. Its
    /// `AudioError`s (bad file, too short or long) come back inside the error.
    pub fn transcribe_file(&self, bytes: std::sync::Arc<[u8]>, filename: Option<&str>, opts: &TranscribeOptions) -> Result<Transcript> {
        rayon::scope(|_| self.run(stream::Source::File { bytes, filename }, opts))
    }
}
