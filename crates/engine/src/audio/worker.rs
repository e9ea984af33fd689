//! The async face of a Whisper model: one job decodes and transcribes at a
//! time on a blocking thread (each uses every core through candle), with a
//! bounded number waiting; beyond that, callers are told to retry.
use super::{decode_audio, AudioError, Transcript, TranscribeOptions, WhisperEngine};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("too many audio requests are waiting")]
    Overloaded,
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("transcription failed: {0:#}")]
    Internal(anyhow::Error),
}

#[derive(Clone)]
pub struct SpeechEngine {
    model: Arc<WhisperEngine>,
    /// Jobs admitted (running + waiting).
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl SpeechEngine {
    pub fn load(dir: &Path, queue_capacity: usize) -> anyhow::Result<Self> {
        Ok(Self {
            model: Arc::new(WhisperEngine::load(dir)?),
            admitted: Arc::new(Semaphore::new(queue_capacity + 1)),
            running: Arc::new(Semaphore::new(1)),
        })
    }

    pub fn model(&self) -> &WhisperEngine {
        &self.model
    }

    /// Decodes the uploaded file (kept in memory only) and transcribes it.
    pub async fn transcribe(&self, file: Vec<u8>, filename: Option<String>, opts: TranscribeOptions) -> Result<Transcript, SpeechError> {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| SpeechError::Overloaded)?;
        let _running = self.running.clone().acquire_owned().await.map_err(|e| SpeechError::Internal(e.into()))?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let samples = decode_audio(file, filename.as_deref())?;
            model.transcribe(&samples, &opts).map_err(SpeechError::Internal)
        })
        .await
        .map_err(|e| SpeechError::Internal(e.into()))?
    }
}
