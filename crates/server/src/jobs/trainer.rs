//! The seam between the job runner and the trainer (`hearth-train`): what one
//! training run is given, what it reports at each step, what it leaves.
use super::spec::Hyper;
use std::ops::ControlFlow;
use std::path::PathBuf;

#[allow(dead_code)] // read by the trainer (crates/train)
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

#[allow(dead_code)] // trained_tokens: read by progress reporting
#[derive(Debug, Clone)]
pub struct Step {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    pub train_loss: f64,
    pub valid_loss: Option<f64>,
    pub trained_tokens: u64,
}

pub struct Finished {
    pub trained_tokens: u64,
    pub steps: Vec<Step>,
}

/// "auto" hyperparameters made concrete for `examples` training examples.
pub fn resolve(hyper: &Hyper, _examples: usize) -> Hyper {
    hyper.clone()
}

/// Trains; `on_step` is called after every step and may block (yielding to
/// serving) or break (cancel: the result is then `Ok(None)`).
pub fn train(_run: &Run, _on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>) -> anyhow::Result<Option<Finished>> {
    anyhow::bail!("this build of hearth has no trainer")
}
