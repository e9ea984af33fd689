//! The seam between the job runner and the trainer (`hearth-train`): what one
//! training run is given, what it reports at each step, what it leaves.
use super::spec::Hyper;
use anyhow::anyhow;
use hearth_train::{Api, Cancelled, Hyperparameters, Progress, Requested, TrainSpec};
use std::ops::ControlFlow;
use std::path::PathBuf;

pub struct Run {
    pub base_gguf: PathBuf,
    pub train: Vec<u8>,
    pub validation: Option<Vec<u8>>,
    /// Resolved (no "auto" left): see `resolve`.
    pub hyper: Hyper,
    pub seed: u64,
    pub output_gguf: PathBuf,
    /// Where the trainer keeps its checkpoint: a run given the same directory resumes from it.
    pub checkpoint_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    pub train_loss: f64,
    pub valid_loss: Option<f64>,
    /// A checkpoint was written after this step.
    pub checkpoint: bool,
}

pub struct Finished {
    pub trained_tokens: u64,
    /// OpenAI's result file (`step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`).
    pub result_csv: String,
}

/// "auto" hyperparameters made concrete for `examples` training examples, as
/// OpenAI picks them for this API.
pub fn resolve(hyper: &Hyper, examples: usize, legacy: bool) -> anyhow::Result<Hyper> {
    let requested = Requested {
        n_epochs: hyper.n_epochs.map(i64::from),
        batch_size: hyper.batch_size.map(i64::from),
        learning_rate_multiplier: hyper.learning_rate_multiplier,
    };
    let api = if legacy { Api::LegacyFineTunes } else { Api::FineTuning };
    let h = requested.resolve(examples, api).map_err(|e| anyhow!("{}: {}", e.param, e.message))?;
    Ok(Hyper { n_epochs: Some(h.n_epochs as u32), batch_size: Some(h.batch_size as u32), learning_rate_multiplier: Some(h.learning_rate_multiplier) })
}

fn examples(bytes: &[u8], what: &str) -> anyhow::Result<Vec<hearth_train::Example>> {
    hearth_train::parse_jsonl(bytes).map_err(|e| anyhow!("the {what} file, line {}: {}", e.line, e.message))
}

/// Trains; `on_step` is called after every step and may block (yielding to
/// serving) or break (cancel: the result is then `Ok(None)`).
pub fn train(run: &Run, on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>) -> anyhow::Result<Option<Finished>> {
    let train = examples(&run.train, "training")?;
    let validation = match &run.validation {
        Some(bytes) => examples(bytes, "validation")?,
        None => Vec::new(),
    };
    let hyper = Hyperparameters {
        n_epochs: run.hyper.n_epochs.unwrap_or(1) as usize,
        batch_size: run.hyper.batch_size.unwrap_or(1) as usize,
        learning_rate_multiplier: run.hyper.learning_rate_multiplier.unwrap_or(1.0),
    };
    std::fs::create_dir_all(&run.checkpoint_dir)?;
    if let Some(dir) = run.output_gguf.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let spec = TrainSpec::new(run.base_gguf.clone(), train, validation, hyper, run.seed, run.output_gguf.clone(), run.checkpoint_dir.clone());
    let mut report = |p: &Progress| {
        on_step(&Step {
            step: p.step as u64,
            total_steps: p.total_steps as u64,
            epoch: p.epoch as u64,
            train_loss: p.metrics.train_loss as f64,
            valid_loss: p.metrics.valid_loss.map(f64::from),
            checkpoint: p.checkpoint.is_some(),
        })
    };
    match hearth_train::train(&spec, &mut report) {
        Ok(outcome) => Ok(Some(Finished { trained_tokens: outcome.trained_tokens, result_csv: outcome.result_csv() })),
        Err(e) if e.is::<Cancelled>() => Ok(None),
        Err(e) => Err(e),
    }
}
