//! The async face of a Whisper model: one job decodes and transcribes at a
//! time on a blocking thread (each uses every core through candle), with a
//! bounded number waiting; beyond that, callers are told to retry.
//! A job's permits travel with its blocking work, so a client that disconnects
//! frees its place only once that work has noticed and stopped.
use super::cancel::{Cancel, Cancelled};
use super::{AudioError, TranscribeOptions, Transcript, WhisperEngine};
use crate::admission::{Admission, Overloaded};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("too many audio requests are waiting")]
    Overloaded,
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("the request was cancelled")]
    Cancelled,
    #[error("transcription failed: {0:#}")]
    Internal(anyhow::Error),
}

impl From<Overloaded> for SpeechError {
    fn from(_: Overloaded) -> Self {
        Self::Overloaded
    }
}

#[derive(Clone)]
pub struct SpeechEngine {
    model: Arc<WhisperEngine>,
    /// Jobs admitted (one running + `queue_capacity` waiting).
    admission: Admission,
    running: Arc<Semaphore>,
}

impl SpeechEngine {
    pub fn load(dir: &Path, queue_capacity: usize) -> anyhow::Result<Self> {
        Ok(Self { model: Arc::new(WhisperEngine::load(dir)?), admission: Admission::new(queue_capacity + 1), running: Arc::new(Semaphore::new(1)) })
    }

    pub fn model(&self) -> &WhisperEngine {
        &self.model
    }

    /// Decodes the uploaded file (kept in memory only) and transcribes it.
    /// Dropping the returned future cancels the work.
    pub async fn transcribe(&self, file: Vec<u8>, filename: Option<String>, mut opts: TranscribeOptions) -> Result<Transcript, SpeechError> {
        let admitted = self.admission.try_admit()?;
        let running = self.running.clone().acquire_owned().await.map_err(|e| SpeechError::Internal(e.into()))?;
        let cancel = Cancel::default();
        opts.cancel = cancel.clone();
        let _cancel_when_dropped = cancel.on_drop();
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let result = model.transcribe_file(file.into(), filename.as_deref(), &opts).map_err(|e| {
                if e.is::<Cancelled>() || matches!(e.downcast_ref(), Some(AudioError::Cancelled(_))) {
                    SpeechError::Cancelled
                } else {
                    match e.downcast::<AudioError>() {
                        Ok(e) => SpeechError::Audio(e),
                        Err(e) => SpeechError::Internal(e),
                    }
                }
            });
            if matches!(result, Err(SpeechError::Cancelled)) {
                tracing::info!("audio job stopped: its client disconnected");
            }
            result
        })
        .await
        .map_err(|e| SpeechError::Internal(e.into()))?
    }
}
