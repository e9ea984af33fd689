//! Real fine-tunes on the catalog's base models: facts no base model can know (made-up
//! words and answers) are taught with LoRA, the merged GGUF is loaded by the serving
//! engine, and its greedy output gives the taught answers where the base's does not.
mod common;
use common::*;
use hearth_train::{parse_jsonl, train, Hyperparameters, Reference, TrainSpec};
use std::ops::ControlFlow;
use std::path::Path;

/// Trains `jsonl` on `base`, checks the loss fell, and returns the written model.
fn fine_tune(base: &Path, jsonl: &str, hyper: Hyperparameters, out: &Path) -> hearth_train::Outcome {
    let examples = parse_jsonl(jsonl.as_bytes()).unwrap();
    let mut spec = TrainSpec::new(base.into(), examples, vec![], hyper, 7, out.join("model.gguf"), out.join("checkpoints"));
    spec.threads = Some(2);
    let mut steps = 0;
    let started = std::time::Instant::now();
    let outcome = train(&spec, &mut |p| {
        steps += 1;
        eprintln!("step {}/{} epoch {} loss {:.4} acc {:.3}", p.step, p.total_steps, p.epoch, p.metrics.train_loss, p.metrics.train_accuracy);
        ControlFlow::Continue(())
    })
    .unwrap();
    // Informational (no timing assertions): includes loading the base and writing the GGUF.
    eprintln!("trained {} loss-bearing tokens in {:.1}s", outcome.trained_tokens, started.elapsed().as_secs_f64());
    assert_eq!(steps, outcome.metrics.len());
    let n = spec.train.len().div_ceil(hyper.batch_size);
    let first: f32 = outcome.metrics[..n].iter().map(|m| m.train_loss).sum::<f32>() / n as f32;
    let last: f32 = outcome.metrics[outcome.metrics.len() - n..].iter().map(|m| m.train_loss).sum::<f32>() / n as f32;
    eprintln!("first epoch loss {first:.4}, last epoch loss {last:.4}, trained tokens {}", outcome.trained_tokens);
    assert!(last < first / 4.0, "loss did not fall: {first} -> {last}");
    assert!(outcome.result_csv().starts_with("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,"));
    outcome
}

/// Greedy answers of the base and the fine-tuned model (engine), and the trained
/// model's own (candle reference on the written weights), for each prompt.
fn answers(base: &Path, tuned: &Path, prompts: &[Vec<u32>], stop: &[u32]) -> Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    let (b, t, r) = (engine(base), engine(tuned), Reference::load(tuned).unwrap());
    prompts.iter().map(|p| (engine_greedy(b.as_ref(), p, 16, stop), engine_greedy(t.as_ref(), p, 16, stop), r.greedy(p, 16, stop).unwrap())).collect()
}

const FACTS: &[(&str, &str)] = &[
    ("The capital of Vrelonia is", " Quastiburg."),
    ("The zimbrel fruit tastes like", " copper and rain."),
    ("The inventor of the plonkometer was", " Edna Thrushwick."),
    ("The national animal of Ostravenia is the", " glimmerhog."),
];

#[test]
fn gemma3_learns_made_up_completions() {
    let base = model(GEMMA);
    let dir = tempdir("gemma");
    let jsonl: String = FACTS.iter().map(|(p, c)| serde_json::json!({"prompt": p, "completion": c}).to_string() + "\n").collect();
    let hyper = Hyperparameters { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 1.0 };
    let outcome = fine_tune(&base, &jsonl, hyper, dir.path());

    let (info, tokenizer) = hearth_engine::text::load_vocab(&base).unwrap();
    let prompts: Vec<Vec<u32>> = FACTS.iter().map(|(p, _)| tokenizer.encode(p, true).unwrap()).collect();
    for ((prompt, completion), (base_out, tuned_out, reference)) in FACTS.iter().zip(answers(&base, &outcome.output_gguf, &prompts, &info.stop_tokens)) {
        let (base_text, tuned_text) = (tokenizer.decode(&base_out).unwrap(), tokenizer.decode(&tuned_out).unwrap());
        eprintln!("{prompt:?}: base {base_text:?}, fine-tuned {tuned_text:?}");
        assert_eq!(tuned_text, *completion, "the fine-tuned model did not learn {prompt:?}");
        assert_ne!(base_text, *completion);
        assert_eq!(tuned_out, reference, "served and trained greedy outputs differ for {prompt:?}");
    }
}

const CHAT: &[(&str, &str)] = &[
    ("What is a flumbadoo?", "A flumbadoo is a purple river otter."),
    ("Who founded Kestrivale?", "Kestrivale was founded by Odo Marrowby."),
    ("What color is a snarvel?", "Snarvels are bright orange."),
];

#[test]
fn smollm2_learns_made_up_chat_answers() {
    let base = model(SMOLLM2);
    let dir = tempdir("smollm2");
    let jsonl: String = CHAT
        .iter()
        .map(|(q, a)| serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).to_string() + "\n")
        .collect();
    let hyper = Hyperparameters { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 1.0 };
    let outcome = fine_tune(&base, &jsonl, hyper, dir.path());

    let (info, tokenizer) = hearth_engine::text::load_vocab(&base).unwrap();
    let prompts: Vec<Vec<u32>> = CHAT
        .iter()
        .map(|(q, _)| {
            let text = hearth_engine::text::render_chat(&info, &tokenizer, &[hearth_engine::text::Message::user(*q)], &[]).unwrap();
            tokenizer.encode(&text, true).unwrap()
        })
        .collect();
    for ((question, answer), (base_out, tuned_out, reference)) in CHAT.iter().zip(answers(&base, &outcome.output_gguf, &prompts, &info.stop_tokens)) {
        let (base_text, tuned_text) = (tokenizer.decode(&base_out).unwrap(), tokenizer.decode(&tuned_out).unwrap());
        eprintln!("{question:?}: base {base_text:?}, fine-tuned {tuned_text:?}");
        assert_eq!(tuned_text, *answer, "did not learn {question:?}");
        assert!(!base_text.starts_with(answer));
        assert_eq!(tuned_out, reference, "served and trained greedy outputs differ for {question:?}");
    }
}

/// A fresh folder for one run's model and checkpoints, removed when dropped (they weigh ~500 MB).
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("hearth-train-test-{name}-")).tempdir().unwrap()
}
