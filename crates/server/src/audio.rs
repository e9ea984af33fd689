//! `POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart).
//! The uploaded file lives in memory only and is never logged.
use crate::error::ApiError;
use crate::limits::FILE_LIMIT;
use crate::state::AppState;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::audio::{self as wire, AudioRequest, ResponseFormat};
use hearth_catalog::Endpoint;
use hearth_engine::audio::{language_name, SpeechEngine, Task, TranscribeOptions, Transcript};
use std::sync::Arc;

/// Uploads being read at once: each may buffer up to `AUDIO_BODY_LIMIT` before
/// its job is admitted, so this bounds that memory (8 × 26 MB); more get a 429.
const UPLOADS_AT_ONCE: usize = 8;
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(UPLOADS_AT_ONCE);

pub async fn transcriptions(state: State<Arc<AppState>>, form: Result<Multipart, MultipartRejection>) -> Result<Response, ApiError> {
    handle(state, form, Task::Transcribe).await
}

pub async fn translations(state: State<Arc<AppState>>, form: Result<Multipart, MultipartRejection>) -> Result<Response, ApiError> {
    handle(state, form, Task::Translate).await
}

struct Upload {
    bytes: Vec<u8>,
    filename: Option<String>,
}

/// Splits the form into the file and the text fields.
async fn read_form(form: Result<Multipart, MultipartRejection>) -> Result<(Option<Upload>, Vec<(String, String)>), ApiError> {
    let mut form = form?;
    let mut file = None;
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await?;
            if bytes.len() > FILE_LIMIT {
                return Err(ApiError::file_too_large(FILE_LIMIT, Some(bytes.len())));
            }
            file = Some(Upload { bytes: bytes.to_vec(), filename });
        } else {
            fields.push((name, field.text().await?));
        }
    }
    Ok((file, fields))
}

async fn handle(State(state): State<Arc<AppState>>, form: Result<Multipart, MultipartRejection>, task: Task) -> Result<Response, ApiError> {
    let upload = UPLOADS.try_acquire().map_err(|_| ApiError::overloaded())?;
    let (file, fields) = read_form(form).await?;
    drop(upload);
    let req = AudioRequest::parse(&fields)?;
    let endpoint = match task {
        Task::Transcribe => Endpoint::AudioTranscriptions,
        Task::Translate => Endpoint::AudioTranslations,
    };
    let (_, engine) = state.runtime::<SpeechEngine>(&req.model, endpoint)?;
    let Some(file) = file else {
        return Err(ApiError::invalid("you must provide a file parameter", Some("file")));
    };
    if let Some(code) = &req.language {
        if !engine.model().knows_language(code) {
            return Err(ApiError::invalid(format!("Invalid language '{code}'. Language parameter must be specified in ISO-639-1 format."), Some("language")));
        }
    }
    // Subtitles and word granularity take their times from word timing.
    let word_timestamps =
        (req.words && req.response_format == ResponseFormat::VerboseJson) || matches!(req.response_format, ResponseFormat::Srt | ResponseFormat::Vtt);
    let opts = TranscribeOptions {
        task,
        language: req.language.clone(),
        prompt: req.prompt.clone(),
        temperature: req.temperature,
        word_timestamps,
        ..Default::default()
    };
    let transcript = engine.clone().transcribe(file.bytes, file.filename, opts).await?;
    let usage = crate::metering::AudioUsage { model: req.model.clone(), seconds: transcript.duration };
    let mut response = render(&req, task, transcript);
    response.extensions_mut().insert(usage);
    Ok(response)
}

fn render(req: &AudioRequest, task: Task, t: Transcript) -> Response {
    let segments: Vec<wire::Segment> = t
        .segments
        .iter()
        .map(|s| wire::Segment {
            id: s.id,
            seek: s.seek,
            start: round2(s.start),
            end: round2(s.end),
            text: s.text.clone(),
            tokens: s.tokens.clone(),
            temperature: s.temperature,
            avg_logprob: s.avg_logprob,
            compression_ratio: s.compression_ratio,
            no_speech_prob: s.no_speech_prob,
        })
        .collect();
    let plain = |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    match req.response_format {
        ResponseFormat::Json => Json(wire::Transcription { text: t.text }).into_response(),
        ResponseFormat::Text => plain(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => plain(wire::srt(&segments), "text/plain; charset=utf-8"),
        ResponseFormat::Vtt => plain(wire::vtt(&segments), "text/vtt; charset=utf-8"),
        ResponseFormat::VerboseJson => {
            let words = req.words.then(|| {
                t.segments.iter().flat_map(|s| &s.words).map(|w| wire::Word { word: bare_word(&w.word), start: round2(w.start), end: round2(w.end) }).collect()
            });
            Json(wire::VerboseTranscription {
                task: if task == Task::Translate { "translate" } else { "transcribe" },
                language: language_name(&t.language).to_string(),
                duration: round2(t.duration),
                text: t.text,
                segments: req.segments.then_some(segments),
                words,
            })
            .into_response()
        }
    }
}

/// A word as OpenAI lists it: no surrounding space or punctuation (kept
/// inside: "don't"), unless it is nothing but punctuation.
fn bare_word(word: &str) -> String {
    let trimmed = word.trim();
    let bare = trimmed.trim_matches(|c: char| c.is_ascii_punctuation() || "“”¿¡。，！？：、".contains(c));
    if bare.is_empty() { trimmed } else { bare }.to_string()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
