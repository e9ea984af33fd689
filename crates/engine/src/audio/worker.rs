//! The async face of a Whisper model: one job decodes and transcribes at a
//! time on a blocking thread (each uses every core through candle), with a
//! bounded number waiting; beyond that, callers are told to retry (`serial`).
use super::{AudioError, TranscribeOptions, Transcript, WhisperEngine};
use crate::admission::Overloaded;
use crate::cancel::Cancelled;
use crate::serial::{SerialError, SerialQueue};
use std::path::Path;
use std::sync::Arc;

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
    /// One job running + `queue_capacity` waiting.
    jobs: SerialQueue,
}

impl SpeechEngine {
    pub fn load(dir: &Path, queue_capacity: usize) -> anyhow::Result<Self> {
        Ok(Self { model: Arc::new(WhisperEngine::load(dir)?), jobs: SerialQueue::new(queue_capacity) })
    }

    pub fn model(&self) -> &WhisperEngine {
        &self.model
    }

    /// Decodes the uploaded file (kept in memory only) and transcribes it.
    /// Dropping the returned future cancels the work.
    pub async fn transcribe(&self, file: Vec<u8>, filename: Option<String>, opts: TranscribeOptions) -> Result<Transcript, SpeechError> {
        let model = self.model.clone();
        let run = self.jobs.run(move |cancel| {
            let mut opts = opts;
            opts.cancel = cancel.clone();
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
        });
        match run.await {
            Ok(result) => result,
            Err(SerialError::Overloaded(_)) => Err(SpeechError::Overloaded),
            Err(SerialError::Lost(e)) => Err(SpeechError::Internal(anyhow::anyhow!(e))),
        }
    }
}
