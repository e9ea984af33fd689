//! Text-to-image runtime: a Stable-Diffusion-family pipeline (text encoder,
//! UNet, VAE, scheduler) loaded from a diffusers-layout directory of
//! safetensors. Generations, inpainting edits and image-to-image variations.
//!
//! The public surface below is the seam the server is written against; the parts
//! live in `config` (diffusers JSON), `tokenizer` + `text_encoder` (CLIP), `scheduler`
//! (DDIM), `pipeline` (guidance, img2img, inpainting), `picture` and `noise`. The UNet
//! and VAE are candle-transformers' Stable Diffusion modules, built from the JSON.
mod config;
mod noise;
mod picture;
mod pipeline;
mod scheduler;
mod text_encoder;
mod tokenizer;
mod weights;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

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

/// Sides offered to clients (OpenAI's DALL·E 2 sizes), where the model can make them.
const OFFERED_SIZES: [u32; 3] = [256, 512, 1024];
/// Steps when the request leaves them open: DDIM reaches a usable picture well before 50 on SD 1.x.
const DEFAULT_STEPS: usize = 30;
const DEFAULT_GUIDANCE: f32 = 7.5;
const MAX_STEPS: usize = 200;

/// A loaded pipeline; cheap to clone (shared weights).
#[derive(Clone)]
pub struct ImageEngine {
    pipeline: Arc<pipeline::Pipeline>,
    pool: Arc<rayon::ThreadPool>,
}

/// What one picture's run leaves: the final latents (for cross-checks) and the picture.
#[doc(hidden)]
pub struct Traced {
    pub latents: Vec<f32>,
    pub picture: Picture,
}

impl ImageEngine {
    /// Loads a diffusers-layout directory (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/).
    pub fn load(dir: &Path, threads: usize) -> anyhow::Result<Self> {
        if !dir.join("model_index.json").exists() {
            anyhow::bail!("{} is not a diffusers pipeline directory (no model_index.json)", dir.display());
        }
        let pipeline = pipeline::Pipeline::load(dir).with_context(|| format!("loading the image pipeline in {}", dir.display()))?;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).thread_name(|i| format!("image-{i}")).build()?;
        Ok(Self { pipeline: Arc::new(pipeline), pool: Arc::new(pool) })
    }

    /// The sizes (square side, pixels) this model makes, smallest first.
    pub fn sizes(&self) -> Vec<u32> {
        let unit = (self.pipeline.vae_scale << self.pipeline.unet_downsamples) as u32;
        OFFERED_SIZES.into_iter().filter(|s| s % unit == 0).collect()
    }

    /// The side the model was trained at, when its config says (512 for SD 1.5).
    pub fn native_size(&self) -> Option<u32> {
        self.pipeline.native_size.map(|s| s as u32)
    }

    /// Runs the whole job on the calling thread (the server calls it from a blocking
    /// task behind its admission queue); checks `cancel` between denoising steps.
    pub fn generate(&self, job: &ImageJob, cancel: &AtomicBool) -> Result<Vec<Picture>, ImageError> {
        self.check(job)?;
        let len = self.pipeline.latent_len(job.size as usize);
        let noises: Vec<Vec<f32>> = (0..job.n as u64).map(|i| noise::gaussian(job.seed.wrapping_add(i), len)).collect();
        Ok(self.generate_from_noise(job, &noises, cancel)?.into_iter().map(|t| t.picture).collect())
    }

    /// `generate` with each picture's initial noise given (`latent channels × (size/8)²` values
    /// for SD 1.x): the diffusers cross-check passes the latents diffusers started from.
    #[doc(hidden)]
    pub fn generate_from_noise(&self, job: &ImageJob, noises: &[Vec<f32>], cancel: &AtomicBool) -> Result<Vec<Traced>, ImageError> {
        self.check(job)?;
        let len = self.pipeline.latent_len(job.size as usize);
        if noises.len() != job.n || noises.iter().any(|n| n.len() != len) {
            return Err(ImageError::Invalid(format!("expected {} noise tensors of {len} values", job.n)));
        }
        let steps = job.steps.unwrap_or(DEFAULT_STEPS);
        let guidance = job.guidance.unwrap_or(DEFAULT_GUIDANCE);
        self.pool.install(|| {
            let mut out = Vec::with_capacity(job.n);
            for noise in noises {
                let run = self.pipeline.run(job, steps, guidance, pipeline::Start { noise }, cancel)?;
                let Some((latents, picture)) = run else { return Err(ImageError::Cancelled) };
                let latents = latents.flatten_all().and_then(|t| t.to_vec1()).map_err(anyhow::Error::from)?;
                out.push(Traced { latents, picture });
            }
            Ok(out)
        })
    }

    /// The prompt's token ids and the text encoder's last hidden state for it (cross-checks).
    #[doc(hidden)]
    pub fn prompt_embeddings(&self, prompt: &str) -> anyhow::Result<(Vec<u32>, Vec<f32>)> {
        self.pool.install(|| self.pipeline.prompt_embeddings(prompt))
    }

    fn check(&self, job: &ImageJob) -> Result<(), ImageError> {
        let invalid = |m: String| Err(ImageError::Invalid(m));
        let sizes = self.sizes();
        if !sizes.contains(&job.size) {
            let list: Vec<String> = sizes.iter().map(|s| format!("{s}x{s}")).collect();
            return invalid(format!("size {0}x{0} is not supported by this model; it makes {1}", job.size, list.join(", ")));
        }
        if job.n == 0 {
            return invalid("n must be at least 1".into());
        }
        if let Some(steps) = job.steps {
            if steps == 0 || steps > MAX_STEPS {
                return invalid(format!("steps must be between 1 and {MAX_STEPS}"));
            }
        }
        if job.guidance.is_some_and(|g| !g.is_finite() || g < 0.0) {
            return invalid("guidance must be a non-negative number".into());
        }
        if !(0.0..=1.0).contains(&job.strength) {
            return invalid("strength must be between 0 and 1".into());
        }
        let pixels = (job.size * job.size) as usize;
        if let Some(p) = &job.init {
            if p.width != job.size || p.height != job.size || p.rgb.len() != pixels * 3 {
                return invalid(format!("the source image must be {0}x{0} RGB", job.size));
            }
        }
        match (&job.mask, &job.init) {
            (Some(_), None) => return invalid("a mask needs a source image".into()),
            (Some(m), Some(_)) if m.len() != pixels => return invalid(format!("the mask must have {pixels} values")),
            _ => {}
        }
        Ok(())
    }
}
