//! DDIM sampling (eta = 0), step for step as diffusers' `DDIMScheduler` computes it,
//! on the noise schedule the pipeline's scheduler config names.
use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::SchedulerConfig;

pub struct Ddim {
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    train_steps: usize,
    steps_offset: usize,
    spacing: Spacing,
    v_prediction: bool,
}

#[derive(Clone, Copy)]
enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Ddim {
    pub fn new(c: &SchedulerConfig) -> Result<Self> {
        let n = c.num_train_timesteps;
        if c.clip_sample {
            bail!("scheduler: clip_sample is not supported (SD 1.x configs leave it off)");
        }
        if n < 2 {
            bail!("scheduler: num_train_timesteps must be at least 2");
        }
        // diffusers builds the betas in float32; rounding them the same way keeps the schedule bit-close.
        let betas: Vec<f64> = match c.beta_schedule.as_str() {
            "scaled_linear" => {
                let (a, b) = (c.beta_start.sqrt(), c.beta_end.sqrt());
                (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).map(|s| ((s as f32) * (s as f32)) as f64).collect()
            }
            "linear" => (0..n).map(|i| (c.beta_start + (c.beta_end - c.beta_start) * i as f64 / (n - 1) as f64) as f32 as f64).collect(),
            other => bail!("scheduler: beta_schedule {other} is not supported"),
        };
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1f32;
        for beta in betas {
            acc *= 1.0 - beta as f32;
            alphas_cumprod.push(acc as f64);
        }
        let final_alpha_cumprod = if c.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let spacing = match c.timestep_spacing.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => bail!("scheduler: timestep_spacing {other} is not supported"),
        };
        let v_prediction = match c.prediction_type.as_str() {
            "epsilon" => false,
            "v_prediction" => true,
            other => bail!("scheduler: prediction_type {other} is not supported"),
        };
        Ok(Self { alphas_cumprod, final_alpha_cumprod, train_steps: n, steps_offset: c.steps_offset, spacing, v_prediction })
    }

    /// The timesteps of an `steps`-step run, noisiest first.
    pub fn timesteps(&self, steps: usize) -> Vec<usize> {
        let n = self.train_steps;
        let mut ts: Vec<usize> = match self.spacing {
            Spacing::Leading => (0..steps).map(|i| i * (n / steps) + self.steps_offset).collect(),
            Spacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                (1..=steps).map(|i| ((i as f64 * ratio).round() as usize).saturating_sub(1)).collect()
            }
            Spacing::Linspace => (0..steps).map(|i| (i as f64 * (n - 1) as f64 / (steps - 1).max(1) as f64).round() as usize).collect(),
        };
        ts.iter_mut().for_each(|t| *t = (*t).min(n - 1));
        ts.reverse();
        ts
    }

    fn alpha(&self, t: isize) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }

    /// One deterministic DDIM step from `t` to the next timestep down.
    pub fn step(&self, model_output: &Tensor, t: usize, sample: &Tensor, steps: usize) -> Result<Tensor> {
        let prev_t = t as isize - (self.train_steps / steps) as isize;
        let (a_t, a_prev) = (self.alpha(t as isize), self.alpha(prev_t));
        let (sqrt_a, sqrt_1ma) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (pred_x0, pred_eps) = if self.v_prediction {
            (((sample * sqrt_a)? - (model_output * sqrt_1ma)?)?, ((model_output * sqrt_a)? + (sample * sqrt_1ma)?)?)
        } else {
            (((sample - (model_output * sqrt_1ma)?)? / sqrt_a)?, model_output.clone())
        };
        Ok(((pred_x0 * a_prev.sqrt())? + (pred_eps * (1.0 - a_prev).sqrt())?)?)
    }

    /// Noises a clean sample to timestep `t` (diffusers' `add_noise`).
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, t: usize) -> Result<Tensor> {
        let a = self.alphas_cumprod[t];
        Ok(((original * a.sqrt())? + (noise * (1.0 - a).sqrt())?)?)
    }
}
