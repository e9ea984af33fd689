//! Text-to-image runtime: a Stable-Diffusion-family pipeline (text encoder,
//! UNet, VAE, scheduler) loaded from a diffusers-layout directory of
//! safetensors. Generations, inpainting edits and image-to-image variations.
//!
//! The public surface below is the seam the server is written against.
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// An RGB picture, 8 bits per channel, row-major, no padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// One image request, already validated by the server.
#[derive(Clone, Debug)]
pub struct ImageJob {
    pub prompt: String,
    /// How many pictures; each gets its own noise (seed, seed + 1, ...).
    pub n: usize,
    /// Side of the square output in pixels.
    pub size: u32,
    pub seed: u64,
    /// Denoising steps; `None` takes the model's default.
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; `None` takes the model's default.
    pub guidance: Option<f32>,
    /// Edits and variations: the source picture, `size` × `size`.
    pub init: Option<Picture>,
    /// Edits: `size * size` values, 1.0 where the picture is repainted, 0.0 where it is kept.
    pub mask: Option<Vec<f32>>,
    /// Variations: how far the result may move from `init` (0 keeps it, 1 ignores it).
    pub strength: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The caller's cancel flag was raised between steps.
    #[error("cancelled")]
    Cancelled,
    /// The job asks for something this model cannot do (a size it cannot make, say).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A loaded pipeline; cheap to clone (shared weights).
#[derive(Clone)]
pub struct ImageEngine {
    _private: (),
}

impl ImageEngine {
    /// Loads a diffusers-layout directory (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/).
    pub fn load(dir: &Path, _threads: usize) -> anyhow::Result<Self> {
        anyhow::bail!("the image pipeline is not built yet (loading {})", dir.display())
    }

    /// The sizes (square side, pixels) this model makes, smallest first.
    pub fn sizes(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Runs the whole job on the calling thread (the server calls it from a blocking
    /// task behind its admission queue); checks `cancel` between denoising steps.
    pub fn generate(&self, _job: &ImageJob, _cancel: &AtomicBool) -> Result<Vec<Picture>, ImageError> {
        Err(ImageError::Failed(anyhow::anyhow!("the image pipeline is not built yet")))
    }
}
