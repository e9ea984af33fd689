//! Training throughput of hearth-train, for bench/train: LoRA (the library's defaults:
//! rank 8, alpha 16, q/k/v/o/gate/up/down) on a base GGUF and an OpenAI JSONL, batch 1,
//! AdamW at 2e-3, and one JSON line of timings on stdout.
//!
//!   cargo run --release -p hearth-train --example bench -- BASE.gguf DATA.jsonl EPOCHS THREADS WARMUP_STEPS
//!
//! Timed: from the end of step WARMUP_STEPS to the end of the last step (loading the
//! base and writing the merged GGUF are outside); tokens are the loss-bearing ones
//! (OpenAI's `trained_tokens`) of the timed steps.
use hearth_train::{parse_jsonl, train, Hyperparameters, TrainSpec};
use std::ops::ControlFlow;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, data, epochs, threads, warmup] = &args[..] else {
        anyhow::bail!("usage: bench BASE.gguf DATA.jsonl EPOCHS THREADS WARMUP_STEPS");
    };
    let (epochs, threads, warmup): (usize, usize, usize) = (epochs.parse()?, threads.parse()?, warmup.parse()?);
    let examples = parse_jsonl(&std::fs::read(data)?)?;
    let dir = std::env::temp_dir().join(format!("hearth-train-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hyper = Hyperparameters { n_epochs: epochs, batch_size: 1, learning_rate_multiplier: 1.0 };
    let mut spec = TrainSpec::new(base.into(), examples, vec![], hyper, 7, dir.join("model.gguf"), dir.join("checkpoints"));
    spec.threads = Some(threads);

    let started = Instant::now();
    let (mut timed_from, mut tokens_at_warmup, mut last) = (None, 0, (0u64, started.elapsed()));
    let mut losses = Vec::new();
    let mut step_tokens = Vec::new();
    let outcome = train(&spec, &mut |p| {
        let now = started.elapsed();
        losses.push(p.metrics.train_loss);
        step_tokens.push(p.trained_tokens - last.0);
        if p.step == warmup {
            timed_from = Some(now);
            tokens_at_warmup = p.trained_tokens;
        }
        last = (p.trained_tokens, now);
        ControlFlow::Continue(())
    });
    std::fs::remove_dir_all(&dir).ok();
    let outcome = outcome?;
    let from = timed_from.ok_or_else(|| anyhow::anyhow!("fewer steps than the warm-up"))?;
    let seconds = (last.1 - from).as_secs_f64();
    let tokens = outcome.trained_tokens - tokens_at_warmup;
    let report = serde_json::json!({
        "steps": losses.len(),
        "timed_steps": losses.len() - warmup,
        "timed_tokens": tokens,
        "timed_seconds": seconds,
        "tokens_per_s": tokens as f64 / seconds,
        "trained_tokens": outcome.trained_tokens,
        "first_loss": losses.first(),
        "last_loss": losses.last(),
        "step_tokens": step_tokens,
    });
    println!("{report}");
    Ok(())
}
