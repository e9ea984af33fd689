//! `POST /v1/audio/transcriptions` and `/v1/audio/translations`: the form
//! fields (multipart, parsed by the server into name/value pairs) and the five
//! response formats (json, text, srt, verbose_json, vtt).
use crate::schema::Invalid;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    VerboseJson,
    Vtt,
}

const FORMATS: &str = "['json', 'text', 'srt', 'verbose_json', 'vtt']";

impl ResponseFormat {
    fn parse(value: &str) -> Result<Self, Invalid> {
        Ok(match value {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "verbose_json" => Self::VerboseJson,
            "vtt" => Self::Vtt,
            other => return Err(Invalid::new(format!("'{other}' is not one of {FORMATS} - 'response_format'"), Some("response_format"))),
        })
    }
}

/// The form fields other than `file`.
#[derive(Debug, Clone)]
pub struct AudioRequest {
    pub model: String,
    pub prompt: Option<String>,
    pub response_format: ResponseFormat,
    pub temperature: f32,
    /// ISO-639-1 code of the spoken language (transcriptions).
    pub language: Option<String>,
    /// `timestamp_granularities[]` (verbose_json): segment times, word times.
    pub segments: bool,
    pub words: bool,
}

impl AudioRequest {
    /// `fields`: every text part of the form, in order (repeated names allowed).
    pub fn parse(fields: &[(String, String)]) -> Result<Self, Invalid> {
        let one = |name: &str| fields.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.trim().to_string());
        let model = one("model").filter(|m| !m.is_empty()).ok_or_else(|| Invalid::new("you must provide a model parameter", Some("model")))?;
        let response_format = match one("response_format") {
            Some(f) if !f.is_empty() => ResponseFormat::parse(&f)?,
            _ => ResponseFormat::Json,
        };
        let temperature = match one("temperature") {
            Some(t) if !t.is_empty() => {
                let v: f32 = t.parse().map_err(|_| Invalid::new(format!("'{t}' is not a valid number - 'temperature'"), Some("temperature")))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(Invalid::new(format!("{t} is not between 0 and 1 - 'temperature'"), Some("temperature")));
                }
                v
            }
            _ => 0.0,
        };
        let language = one("language").filter(|l| !l.is_empty()).map(|l| l.to_ascii_lowercase());
        let mut segments = false;
        let mut words = false;
        for (_, g) in fields.iter().filter(|(n, _)| n == "timestamp_granularities[]" || n == "timestamp_granularities") {
            match g.trim() {
                "segment" => segments = true,
                "word" => words = true,
                other => {
                    return Err(Invalid::new(
                        format!("'{other}' is not one of ['word', 'segment'] - 'timestamp_granularities'"),
                        Some("timestamp_granularities"),
                    ))
                }
            }
        }
        if !words {
            segments = true; // OpenAI's default granularity
        }
        Ok(Self { model, prompt: one("prompt").filter(|p| !p.is_empty()), response_format, temperature, language, segments, words })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Transcription {
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerboseTranscription {
    /// "transcribe" or "translate".
    pub task: &'static str,
    /// English name, e.g. "english".
    pub language: String,
    pub duration: f64,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<Segment>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// `HH:MM:SS{sep}mmm`.
fn clock(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// SubRip: numbered cues, comma before milliseconds.
pub fn srt(segments: &[Segment]) -> String {
    segments.iter().enumerate().map(|(i, s)| format!("{}\n{} --> {}\n{}\n\n", i + 1, clock(s.start, ','), clock(s.end, ','), s.text.trim())).collect()
}

/// WebVTT: header, then cues with a dot before milliseconds.
pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out.push_str(&format!("{} --> {}\n{}\n\n", clock(s.start, '.'), clock(s.end, '.'), s.text.trim()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parses_the_form() {
        let r = AudioRequest::parse(&fields(&[
            ("model", "whisper-1"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("temperature", "0.2"),
        ]))
        .unwrap();
        assert_eq!(r.response_format, ResponseFormat::VerboseJson);
        assert!(r.words && !r.segments);
        assert_eq!(r.temperature, 0.2);
        let e = AudioRequest::parse(&fields(&[("model", "whisper-1"), ("response_format", "xml")])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        assert!(AudioRequest::parse(&fields(&[("response_format", "json")])).is_err());
        assert!(AudioRequest::parse(&fields(&[("model", "m"), ("temperature", "3")])).is_err());
    }

    #[test]
    fn subtitle_shapes() {
        let seg = |start, end, text: &str| Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
        };
        let segs = [seg(0.0, 2.5, " Hello."), seg(2.5, 3661.042, " World.")];
        assert_eq!(srt(&segs), "1\n00:00:00,000 --> 00:00:02,500\nHello.\n\n2\n00:00:02,500 --> 01:01:01,042\nWorld.\n\n");
        assert_eq!(vtt(&segs), "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello.\n\n00:00:02.500 --> 01:01:01.042\nWorld.\n\n");
    }
}
