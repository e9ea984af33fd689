//! The async face of an image model: one job runs at a time on a blocking
//! thread (the pipeline uses every core), a bounded number wait (the engine's
//! `Admission`), more are told to retry (429). The permits travel with the
//! blocking work, so a client that disconnects frees its place only once the
//! work has noticed (between denoising steps) and stopped.
use super::picture::encode_png;
use crate::error::ApiError;
use axum::http::StatusCode;
use hearth_engine::admission::Admission;
use hearth_engine::image::{ImageEngine, ImageError, ImageJob};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct ImageRuntime {
    engine: ImageEngine,
    /// Jobs admitted (running + waiting).
    admission: Admission,
    running: Arc<Semaphore>,
}

/// Raises the job's cancel flag when the request's future is dropped (its client left).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ImageRuntime {
    pub fn new(engine: ImageEngine, queue_capacity: usize) -> Self {
        Self { engine, admission: Admission::new(queue_capacity + 1), running: Arc::new(Semaphore::new(1)) }
    }

    /// The square sides this model makes, smallest first.
    pub fn sizes(&self) -> Vec<u32> {
        self.engine.sizes()
    }

    /// Runs the job and encodes its pictures as PNG. Dropping the future cancels the work.
    pub async fn generate(&self, job: ImageJob) -> Result<Vec<Vec<u8>>, ApiError> {
        let admitted = self.admission.try_admit().map_err(|_| ApiError::overloaded())?;
        let running = self.running.clone().acquire_owned().await.map_err(ApiError::internal)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_when_dropped = CancelOnDrop(cancel.clone());
        let engine = self.engine.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let pictures = engine.generate(&job, &cancel);
            if matches!(pictures, Err(ImageError::Cancelled)) {
                tracing::info!("image job stopped: its client disconnected");
            }
            pictures.map_err(from_engine)?.iter().map(|p| encode_png(p).map_err(|e| ApiError::internal(format!("encoding a PNG: {e:#}")))).collect()
        })
        .await;
        result.map_err(|e| ApiError::internal(format!("the image job: {e}")))?
    }
}

fn from_engine(e: ImageError) -> ApiError {
    match e {
        ImageError::Invalid(message) => ApiError::invalid(message, None),
        // Nobody reads this: the client is gone.
        ImageError::Cancelled => {
            ApiError::new(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST), "The request was cancelled.", crate::error::INVALID_REQUEST, None, None)
        }
        ImageError::Failed(e) => ApiError::internal(format!("image generation failed: {e:#}")),
    }
}
