//! The async face of an image model: one job runs at a time on a blocking
//! thread (the pipeline uses every core), a bounded number wait, more are told
//! to retry (429): the engine's `SerialQueue`. A client that disconnects frees
//! its place only once the work has noticed (between denoising steps) and stopped.
use super::picture::encode_png;
use crate::error::ApiError;
use axum::http::StatusCode;
use hearth_engine::image::{ImageEngine, ImageError, ImageJob};
use hearth_engine::serial::{SerialError, SerialQueue};

#[derive(Clone)]
pub struct ImageRuntime {
    engine: ImageEngine,
    /// One job running + `queue_capacity` waiting.
    jobs: SerialQueue,
}

impl ImageRuntime {
    pub fn new(engine: ImageEngine, queue_capacity: usize) -> Self {
        Self { engine, jobs: SerialQueue::new(queue_capacity) }
    }

    /// The square sides this model makes, smallest first.
    pub fn sizes(&self) -> Vec<u32> {
        self.engine.sizes()
    }

    /// Runs the job and encodes its pictures as PNG. Dropping the future cancels the work.
    pub async fn generate(&self, job: ImageJob) -> Result<Vec<Vec<u8>>, ApiError> {
        let engine = self.engine.clone();
        let run = self.jobs.run(move |cancel| {
            let pictures = engine.generate(&job, cancel.flag());
            if matches!(pictures, Err(ImageError::Cancelled)) {
                tracing::info!("image job stopped: its client disconnected");
            }
            pictures.map_err(from_engine)?.iter().map(|p| encode_png(p).map_err(|e| ApiError::internal(format!("encoding a PNG: {e:#}")))).collect()
        });
        match run.await {
            Ok(result) => result,
            Err(SerialError::Overloaded(_)) => Err(ApiError::overloaded()),
            Err(SerialError::Lost(e)) => Err(ApiError::internal(format!("the image job: {e}"))),
        }
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
