//! The denoising loop: prompt → embeddings (with the empty prompt for classifier-free
//! guidance), initial latents (noise, or a noised encoding of the source picture),
//! DDIM steps through the UNet, then the VAE decoder.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_transformers::models::stable_diffusion::{unet_2d::UNet2DConditionModel, vae::AutoEncoderKL};

use super::scheduler::Ddim;
use super::text_encoder::TextEncoder;
use super::tokenizer::ClipTokenizer;
use super::{config, picture, weights, ImageJob, Picture};

pub struct Pipeline {
    tokenizer: ClipTokenizer,
    text_encoder: TextEncoder,
    unet: UNet2DConditionModel,
    unet_in_channels: usize,
    /// The autoencoder with its log-variance output pinned to -1e30, so `encode(..).sample()`
    /// is exactly the posterior mean (candle keeps the mean private); the pinned layer
    /// is the encoder's last, so decoding is the checkpoint's own.
    vae: AutoEncoderKL,
    latent_channels: usize,
    scaling_factor: f64,
    /// Pixels per latent cell along a side.
    pub vae_scale: usize,
    /// The UNet halves the latent this many times, so latent sides must divide by 2^this.
    pub unet_downsamples: usize,
    /// The side the model was trained at, in pixels, when the config says.
    pub native_size: Option<usize>,
    scheduler: Ddim,
    device: Device,
}

/// One picture's work, beyond the job.
pub struct Start<'a> {
    /// Initial noise, `latent_channels * side * side` values.
    pub noise: &'a [f32],
}

impl Pipeline {
    pub fn load(dir: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let text_cfg = config::text_encoder(dir)?;
        let unet_cfg = config::unet(dir)?;
        let vae_cfg = config::vae(dir)?;
        let sched_cfg = config::scheduler(dir)?;
        if sched_cfg.class_name != "DDIMScheduler" {
            tracing::info!(scheduler = %sched_cfg.class_name, "images: sampling with DDIM on the configured noise schedule");
        }
        let tokenizer = ClipTokenizer::load(&dir.join("tokenizer")).context("loading the tokenizer")?;
        let text_encoder = TextEncoder::new(weights::var_builder(&dir.join("text_encoder"), &device)?, &text_cfg).context("loading the text encoder")?;
        let unet_downsamples = unet_cfg.model.blocks.len() - 1;
        let unet =
            UNet2DConditionModel::new(weights::var_builder(&dir.join("unet"), &device)?, unet_cfg.in_channels, unet_cfg.out_channels, false, unet_cfg.model)
                .context("loading the UNet")?;
        let latent_channels = vae_cfg.model.latent_channels;
        if unet_cfg.in_channels != latent_channels && unet_cfg.in_channels != 2 * latent_channels + 1 {
            anyhow::bail!("unet in_channels {} fits neither a plain nor an inpainting UNet over {latent_channels} latent channels", unet_cfg.in_channels);
        }
        let pinned = pin_log_variance(weights::tensors(&dir.join("vae"), &device)?, latent_channels)?;
        let vb = candle_nn::VarBuilder::from_tensors(pinned, candle_core::DType::F32, &device);
        let vae = AutoEncoderKL::new(vb, vae_cfg.in_channels, vae_cfg.out_channels, vae_cfg.model).context("loading the VAE")?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            unet_in_channels: unet_cfg.in_channels,
            vae,
            latent_channels,
            scaling_factor: vae_cfg.scaling_factor,
            vae_scale: vae_cfg.scale,
            unet_downsamples,
            native_size: unet_cfg.sample_size.map(|s| s * vae_cfg.scale),
            scheduler: Ddim::new(&sched_cfg)?,
            device,
        })
    }

    pub fn latent_len(&self, size: usize) -> usize {
        let side = size / self.vae_scale;
        self.latent_channels * side * side
    }

    /// (uncond, cond) embeddings stacked when guiding, else cond alone.
    fn embeddings(&self, prompt: &str, guided: bool) -> Result<Tensor> {
        let mut ids = Vec::new();
        if guided {
            ids.extend(self.tokenizer.encode("")?);
        }
        ids.extend(self.tokenizer.encode(prompt)?);
        let rows = if guided { 2 } else { 1 };
        let ids = Tensor::from_vec(ids, (rows, self.tokenizer.max_len), &self.device)?;
        self.text_encoder.forward(&ids)
    }

    pub fn prompt_embeddings(&self, prompt: &str) -> Result<(Vec<u32>, Vec<f32>)> {
        let ids = self.tokenizer.encode(prompt)?;
        let hidden = self.embeddings(prompt, false)?;
        Ok((ids, hidden.flatten_all()?.to_vec1()?))
    }

    fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        // The posterior mean rather than a sample: the same request gives the same picture.
        let mean = self.vae.encode(pixels)?.sample()?;
        Ok((mean * self.scaling_factor)?)
    }

    fn decode(&self, latents: &Tensor) -> Result<Picture> {
        let pixels = self.vae.decode(&(latents / self.scaling_factor)?)?;
        picture::from_tensor(&pixels)
    }

    /// Runs one picture of `job`: its final latents and the decoded picture, or `None` when cancelled.
    pub fn run(&self, job: &ImageJob, steps: usize, guidance: f32, start: Start<'_>, cancel: &AtomicBool) -> Result<Option<(Tensor, Picture)>> {
        let size = job.size as usize;
        let side = size / self.vae_scale;
        let guided = guidance > 1.0;
        let context = self.embeddings(&job.prompt, guided)?;
        let noise = Tensor::from_slice(start.noise, (1, self.latent_channels, side, side), &self.device)?;

        let all = self.scheduler.timesteps(steps);
        let source = job.init.as_ref().map(|p| picture::to_tensor(p, &self.device)).transpose()?;
        // With a source picture, `strength` picks how far into the schedule to start (diffusers' img2img rule).
        let partial = source.is_some() && job.strength < 1.0;
        let timesteps: Vec<usize> = if partial {
            let kept = ((steps as f64 * job.strength as f64) as usize).min(steps);
            all[steps - kept..].to_vec()
        } else {
            all
        };
        let image_latents = source.as_ref().map(|p| self.encode(p)).transpose()?;
        let Some(&first) = timesteps.first() else {
            // Strength 0: nothing to denoise, the source comes back through the autoencoder.
            let latents = image_latents.context("no timesteps to run")?;
            let picture = self.decode(&latents)?;
            return Ok(Some((latents, picture)));
        };
        let mut latents = match &image_latents {
            Some(clean) if partial => self.scheduler.add_noise(clean, &noise, first)?,
            _ => noise.clone(),
        };

        let mask = match (&job.mask, &image_latents) {
            (Some(m), Some(_)) => Some(picture::latent_mask(m, size, self.vae_scale, &self.device)?),
            _ => None,
        };
        // An inpainting UNet (9 input channels) sees the mask and the masked picture's latents at every step.
        let inpaint_conditioning = match (&mask, &source, &job.mask) {
            (Some(m), Some(p), Some(pixel_mask)) if self.unet_in_channels != self.latent_channels => {
                let masked = self.encode(&picture::masked(p, pixel_mask, size, &self.device)?)?;
                Some(Tensor::cat(&[m, &masked], 1)?)
            }
            _ => None,
        };

        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let mut input = latents.clone();
            if let Some(cond) = &inpaint_conditioning {
                input = Tensor::cat(&[&input, cond], 1)?;
            }
            if guided {
                input = Tensor::cat(&[&input, &input], 0)?;
            }
            let out = self.unet.forward(&input, t as f64, &context)?;
            let eps = if guided {
                let (uncond, cond) = (out.narrow(0, 0, 1)?, out.narrow(0, 1, 1)?);
                (&uncond + ((cond - &uncond)? * guidance as f64)?)?
            } else {
                out
            };
            latents = self.scheduler.step(&eps, t, &latents, steps)?;
            // A plain UNet inpaints by putting back the kept region, noised to the next step's level.
            if let (Some(m), Some(clean), None) = (&mask, &image_latents, &inpaint_conditioning) {
                let known = match timesteps.get(i + 1) {
                    Some(&next) => self.scheduler.add_noise(clean, &noise, next)?,
                    None => clean.clone(),
                };
                let keep = (1.0 - m)?;
                latents = (known.broadcast_mul(&keep)? + latents.broadcast_mul(m)?)?;
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let picture = self.decode(&latents)?;
        Ok(Some((latents, picture)))
    }
}

/// Zeroes the log-variance half of the layer that produces the posterior's parameters
/// (`quant_conv`, else the encoder's `conv_out`) and biases it to -1e30: std = exp(-5e29) = 0.
fn pin_log_variance(mut t: std::collections::HashMap<String, Tensor>, latent: usize) -> Result<std::collections::HashMap<String, Tensor>> {
    let layer = if t.contains_key("quant_conv.weight") { "quant_conv" } else { "encoder.conv_out" };
    let (w_name, b_name) = (format!("{layer}.weight"), format!("{layer}.bias"));
    let w = t.get(&w_name).with_context(|| format!("vae: no {w_name}"))?;
    let b = t.get(&b_name).with_context(|| format!("vae: no {b_name}"))?;
    let w = Tensor::cat(&[&w.narrow(0, 0, latent)?, &w.narrow(0, latent, latent)?.zeros_like()?], 0)?;
    let b = Tensor::cat(&[&b.narrow(0, 0, latent)?, &(b.narrow(0, latent, latent)?.zeros_like()? - 1e30)?], 0)?;
    t.insert(w_name, w);
    t.insert(b_name, b);
    Ok(t)
}
