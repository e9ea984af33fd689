//! LoRA fine-tuning of the catalog's GGUF base models on the CPU, with candle's autograd.
//!
//! The job runner hands [`train`] a [`TrainSpec`]: the base GGUF, parsed examples
//! ([`parse_jsonl`]), resolved [`Hyperparameters`] ([`Requested::resolve`]) and where to
//! write. Training dequantizes the base to f32, freezes it, and trains low-rank adapters
//! ([`LoraConfig`]) with AdamW; the result is the base with the adapters merged in,
//! written as a GGUF the serving engine loads like any other model.
//!
//! Yielding to serving: `train` runs on the caller's (blocking) thread and calls
//! `on_step` after every optimizer step. The runner may block inside the callback for
//! as long as interactive requests need the cores, or answer `Break` to cancel. The
//! compute itself runs on a private rayon pool of [`TrainSpec::threads`] threads.
mod adamw;
mod checkpoint;
mod data;
mod frozen;
#[cfg(test)]
mod gradcheck;
mod hyper;
mod model;
mod output;
mod run;
mod sequence;

pub use data::{parse_jsonl, Example, LineError, Turn};
pub use hyper::{
    auto_hyperparameters, Api, HyperError, Hyperparameters, Requested, BASE_LEARNING_RATE, BATCH_SIZE_RANGE, MAX_LEARNING_RATE_MULTIPLIER, N_EPOCHS_RANGE,
};

use std::ops::ControlFlow;
use std::path::PathBuf;

/// The low-rank adapters: `W x + (alpha / rank) * B (A x)` on every targeted projection,
/// `A` `[rank, in]` initialised uniform in ±1/sqrt(in), `B` `[out, rank]` zero (so
/// training starts from the base model exactly).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    /// GGUF tensor-name stems of each block the adapters attach to (`attn_q`, `attn_k`,
    /// `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`, `ffn_down`).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, on all attention and MLP projections: on models this small the
    /// adapters stay cheap (<2% of the weights), and adapting the MLPs as well as
    /// attention is what lets a few epochs memorise new facts.
    fn default() -> Self {
        let targets = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
        Self { rank: 8, alpha: 16.0, targets: targets.iter().map(|s| s.to_string()).collect() }
    }
}

/// A fine-tuning run.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// The base model (llama/SmolLM2 or gemma3 architecture), any quantization.
    pub base_gguf: PathBuf,
    pub train: Vec<Example>,
    /// May be empty (no validation metrics).
    pub validation: Vec<Example>,
    pub hyper: Hyperparameters,
    /// Seeds the adapters' initialisation and the order of examples in each epoch.
    pub seed: u64,
    /// Where the merged model is written (its parent directory must exist).
    pub output_gguf: PathBuf,
    /// Holds this run's checkpoints; a run finding one here resumes from the latest.
    pub checkpoint_dir: PathBuf,
    /// Threads of the training pool; None: as many as rayon's global pool.
    pub threads: Option<usize>,
    pub lora: LoraConfig,
    /// A checkpoint every this many steps as well as at the end of every epoch.
    pub checkpoint_every_steps: Option<usize>,
}

impl TrainSpec {
    /// A spec with the default adapters, threads and checkpoint interval (prefer this to
    /// a struct literal: fields may be added).
    pub fn new(
        base_gguf: PathBuf,
        train: Vec<Example>,
        validation: Vec<Example>,
        hyper: Hyperparameters,
        seed: u64,
        output_gguf: PathBuf,
        checkpoint_dir: PathBuf,
    ) -> Self {
        Self {
            base_gguf,
            train,
            validation,
            hyper,
            seed,
            output_gguf,
            checkpoint_dir,
            threads: None,
            lora: LoraConfig::default(),
            checkpoint_every_steps: None,
        }
    }
}

/// Reported after every optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// 1-based; `step == total_steps` on the last.
    pub step: usize,
    pub total_steps: usize,
    /// 1-based epoch this step belongs to.
    pub epoch: usize,
    pub metrics: StepMetrics,
    /// Trained (loss-bearing) tokens so far, this step's included.
    pub trained_tokens: u64,
    /// Set when a checkpoint was written after this step.
    pub checkpoint: Option<Checkpoint>,
}

/// One step's metrics: the row of OpenAI's result file (see [`Outcome::result_csv`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    /// Mean cross-entropy per trained token of this step's batch.
    pub train_loss: f32,
    /// Share of the batch's trained tokens the model predicted (argmax) correctly.
    pub train_accuracy: f32,
    /// The same on one validation batch (the validation set taken in turn).
    pub valid_loss: Option<f32>,
    pub valid_mean_token_accuracy: Option<f32>,
}

/// A checkpoint written during training (OpenAI lists them under `…/checkpoints`).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: usize,
    pub dir: PathBuf,
    pub metrics: StepMetrics,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Loss-bearing tokens over all epochs (OpenAI's `trained_tokens`).
    pub trained_tokens: u64,
    /// Every step's metrics, resumed runs included.
    pub metrics: Vec<StepMetrics>,
    pub output_gguf: PathBuf,
}

impl Outcome {
    /// OpenAI's result file: `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`,
    /// one row per step, empty cells where there is no validation.
    pub fn result_csv(&self) -> String {
        let mut csv = String::from("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n");
        let opt = |v: Option<f32>| v.map(|v| format!("{v:.5}")).unwrap_or_default();
        for m in &self.metrics {
            csv.push_str(&format!("{},{:.5},{:.5},{},{}\n", m.step, m.train_loss, m.train_accuracy, opt(m.valid_loss), opt(m.valid_mean_token_accuracy)));
        }
        csv
    }
}

/// The error `train` returns when `on_step` answered `Break` (test with
/// `err.is::<Cancelled>()`); the checkpoints written so far stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("training was cancelled")]
pub struct Cancelled;

/// Trains `spec` to completion (or cancellation), then writes `spec.output_gguf`.
/// Synchronous and CPU-bound: call it from a blocking thread.
pub fn train(spec: &TrainSpec, on_step: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> anyhow::Result<Outcome> {
    run::train(spec, on_step)
}

/// Ok when `gguf` is a base `train` can fine-tune (llama, qwen2 or gemma3), read from
/// its header only; the error says why not (for the job's 400 or `error`).
pub fn check_base(gguf: &std::path::Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(gguf)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)?;
    model::Shape::from_gguf(&content).map(|_| ())
}

/// A GGUF model run as training runs it (candle, f32, the whole sequence each call):
/// the reference the serving engine's output is checked against.
pub struct Reference(model::Net);

impl Reference {
    pub fn load(gguf: &std::path::Path) -> anyhow::Result<Self> {
        run::load_net(gguf, None, 0).map(Self)
    }

    /// The logits `[vocab]` after the last of `tokens`.
    pub fn last_logits(&self, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
        let h = self.0.hidden(tokens)?;
        let last = h.narrow(0, tokens.len() - 1, 1)?;
        Ok(self.0.logits(&last)?.flatten_all()?.to_vec1()?)
    }

    /// Greedy continuation of `prompt`: up to `max_tokens` ids, ending early (stop token
    /// excluded) at any of `stop`.
    pub fn greedy(&self, prompt: &[u32], max_tokens: usize, stop: &[u32]) -> anyhow::Result<Vec<u32>> {
        let mut tokens = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let logits = self.last_logits(&tokens)?;
            let next = logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0 as u32;
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            tokens.push(next);
        }
        Ok(out)
    }
}
