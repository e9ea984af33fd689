//! The training loop: tokenize, build the adapted net, then per step a batch of
//! examples forward and backward (gradients summed over the batch), one AdamW update,
//! metrics, checkpoints, and the caller's `on_step`.
use crate::adamw::AdamW;
use crate::checkpoint::{self, State};
use crate::model::{log_softmax, Net, Shape};
use crate::sequence::{tokenize, Sequence};
use crate::{output, Cancelled, Checkpoint, Example, LoraConfig, Outcome, Progress, StepMetrics, TrainSpec, BASE_LEARNING_RATE};
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::ops::ControlFlow;
use std::path::Path;

/// Longest sequence trained on (tokens past it are cut); bounds the `[heads, T, T]`
/// attention scores.
pub const MAX_SEQUENCE: usize = 2048;

/// Opens a GGUF for training: its shape and its tensors dequantized to f32 (`lora`:
/// adapters to add, seeded by `seed`).
pub fn load_net(path: &Path, lora: Option<&LoraConfig>, seed: u64) -> Result<Net> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = Content::read(&mut file).with_context(|| format!("reading {}", path.display()))?;
    let shape = Shape::from_gguf(&content)?;
    let mut get = |name: &str| -> Result<Option<Tensor>> {
        if !content.tensor_infos.contains_key(name) {
            return Ok(None);
        }
        Ok(Some(content.tensor(&mut file, name, &Device::Cpu)?.dequantize(&Device::Cpu)?))
    };
    let none = LoraConfig { targets: vec![], ..LoraConfig::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Net::build(shape, &mut get, lora.unwrap_or(&none), &mut rng)
}

/// Summed loss, correct predictions and trained tokens of one sequence; with `scale`,
/// also back-propagates `loss * scale` and returns the variables' gradients.
pub(crate) struct Pass {
    pub loss: f64,
    pub correct: usize,
    pub tokens: usize,
    pub grads: Option<candle_core::backprop::GradStore>,
}

pub(crate) fn pass(net: &Net, seq: &Sequence, scale: Option<f64>) -> Result<Pass> {
    let (rows, targets) = seq.targets();
    let h = net.hidden(&seq.tokens[..seq.tokens.len() - 1])?;
    let h = h.index_select(&Tensor::new(rows.as_slice(), &Device::Cpu)?, 0)?;
    let logits = net.logits(&h)?;
    let tgt = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    let nll = log_softmax(&logits)?.gather(&tgt.unsqueeze(1)?, 1)?.neg()?.sum_all()?;
    let correct = logits.argmax(D::Minus1)?.eq(&tgt)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
    let loss = nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let grads = match scale {
        Some(s) => Some((nll * s)?.backward()?),
        None => None,
    };
    Ok(Pass { loss, correct, tokens: targets.len(), grads })
}

pub fn train(spec: &TrainSpec, on_step: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<Outcome> {
    let hp = spec.hyper;
    if hp.n_epochs == 0 || hp.batch_size == 0 || hp.learning_rate_multiplier.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        bail!("invalid hyperparameters {hp:?}");
    }
    if spec.train.is_empty() {
        bail!("the training file has no examples");
    }
    let threads = spec.threads.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("train-{i}")).build()?;

    let (info, tokenizer) = hearth_engine::text::load_vocab(&spec.base_gguf)?;
    let max_len = info.context_length.clamp(2, MAX_SEQUENCE);
    let sequences = |examples: &[Example], file: &str| -> Result<Vec<Sequence>> {
        examples.iter().enumerate().map(|(i, e)| tokenize(e, &info, &tokenizer, max_len).with_context(|| format!("{file} example {}", i + 1))).collect()
    };
    let train_seqs = sequences(&spec.train, "training")?;
    let valid_seqs = sequences(&spec.validation, "validation")?;

    let net = pool.install(|| load_net(&spec.base_gguf, Some(&spec.lora), spec.seed))?;
    let (names, vars): (Vec<String>, Vec<_>) = net.vars().into_iter().unzip();
    let mut opt = AdamW::new(vars, BASE_LEARNING_RATE * hp.learning_rate_multiplier)?;

    let n = train_seqs.len();
    let batch = hp.batch_size.min(n);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = hp.n_epochs * steps_per_epoch;
    let fingerprint =
        fingerprint(&format!("{:?}", (&spec.base_gguf, hp, spec.seed, &spec.lora, train_seqs.iter().map(|s| &s.tokens).collect::<Vec<_>>(), valid_seqs.len())));

    let mut state = State { step: 0, trained_tokens: 0, fingerprint: fingerprint.clone(), metrics: Vec::new() };
    if let Some(path) = checkpoint::latest(&spec.checkpoint_dir)? {
        state = checkpoint::load(&path, &names, &mut opt, &fingerprint)?;
    }

    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch = usize::MAX;
    while state.step < total_steps {
        let epoch = state.step / steps_per_epoch;
        if order_epoch != epoch {
            // Each epoch's order depends only on the seed and the epoch (so a resume sees it again).
            order = (0..n).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(spec.seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1))));
            order_epoch = epoch;
        }
        let b = state.step % steps_per_epoch;
        let members: Vec<&Sequence> = order[b * batch..((b + 1) * batch).min(n)].iter().map(|&i| &train_seqs[i]).collect();
        let batch_tokens: usize = members.iter().map(|s| s.trained_tokens()).sum();

        let (train_loss, train_accuracy) = pool.install(|| -> Result<(f32, f32)> {
            let mut sums: Vec<Option<Tensor>> = vec![None; opt.state.len()];
            let (mut loss, mut correct) = (0.0, 0);
            for seq in &members {
                let p = pass(&net, seq, Some(1.0 / batch_tokens as f64))?;
                loss += p.loss;
                correct += p.correct;
                let grads = p.grads.expect("asked for gradients");
                for (sum, (var, _, _)) in sums.iter_mut().zip(&opt.state) {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        *sum = Some(match sum.take() {
                            Some(s) => (s + g)?,
                            None => g.clone(),
                        });
                    }
                }
            }
            opt.step(&sums)?;
            Ok(((loss / batch_tokens as f64) as f32, correct as f32 / batch_tokens as f32))
        })?;

        let (valid_loss, valid_accuracy) = if valid_seqs.is_empty() {
            (None, None)
        } else {
            let start = state.step * batch % valid_seqs.len();
            let (loss, acc) = pool.install(|| -> Result<(f32, f32)> {
                let (mut loss, mut correct, mut tokens) = (0.0, 0, 0);
                for k in 0..batch.min(valid_seqs.len()) {
                    let p = pass(&net, &valid_seqs[(start + k) % valid_seqs.len()], None)?;
                    (loss, correct, tokens) = (loss + p.loss, correct + p.correct, tokens + p.tokens);
                }
                Ok(((loss / tokens as f64) as f32, correct as f32 / tokens as f32))
            })?;
            (Some(loss), Some(acc))
        };

        state.step += 1;
        state.trained_tokens += batch_tokens as u64;
        let metrics = StepMetrics { step: state.step, train_loss, train_accuracy, valid_loss, valid_mean_token_accuracy: valid_accuracy };
        state.metrics.push(metrics);
        let epoch_done = state.step.is_multiple_of(steps_per_epoch);
        let every = spec.checkpoint_every_steps.is_some_and(|k| k > 0 && state.step.is_multiple_of(k));
        let checkpoint = if epoch_done || every {
            let dir = checkpoint::save(&spec.checkpoint_dir, &names, &opt, &state)?;
            Some(Checkpoint { step: state.step, dir, metrics })
        } else {
            None
        };
        let progress = Progress { step: state.step, total_steps, epoch: epoch + 1, metrics, trained_tokens: state.trained_tokens, checkpoint };
        if on_step(&progress).is_break() {
            return Err(Cancelled.into());
        }
    }

    pool.install(|| output::write_merged(&spec.base_gguf, &net, &spec.output_gguf))?;
    Ok(Outcome { trained_tokens: state.trained_tokens, metrics: state.metrics, output_gguf: spec.output_gguf.clone() })
}

/// FNV-1a of the run's description: stable across builds, unlike `DefaultHasher`.
fn fingerprint(description: &str) -> String {
    let hash = description.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}
