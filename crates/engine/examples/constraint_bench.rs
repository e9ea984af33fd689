//! The cost of constrained decoding, next to the decode step it rides on. For each model:
//! 1. the same chat prompt generated greedily without and with a JSON Schema, same run:
//!    tokens/s of each (the constrained row also gives up the greedy head's shortcut);
//! 2. the constrained output's tokens replayed through a fresh constraint, timing what the
//!    sampler adds per token: the mask (`allowed`), writing it into a logits row, and the
//!    advance; its share of the constrained time per token.
//!
//! `cargo run --release -p hearth-engine --example constraint_bench -- MODEL.gguf...`
//! Prints a markdown table (copied into BENCHMARKS.md by hand).
use std::time::Instant;

use hearth_engine::text::constraint::{ConstraintSpec, Grammars};
use hearth_engine::text::{Event, GenerateRequest, Message, Role, SamplingParams, TextEngine, TextEngineConfig};
use serde_json::json;

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["admin", "user", "guest"]},
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                "required": ["street", "city"]
            },
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}
        },
        "required": ["name", "age", "role", "address", "tags"],
        "additionalProperties": false
    })
}

/// Generates to the end; returns the token ids and the seconds from submit to finish.
fn generate(engine: &TextEngine, req: GenerateRequest) -> (Vec<u32>, f64) {
    let t = Instant::now();
    let mut rx = engine.submit(req).expect("accepted");
    let mut ids = Vec::new();
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Token { id, .. } => ids.push(id),
            Event::Finished { .. } => break,
            Event::PromptLogprobs(_) => {}
            Event::Error(e) => panic!("{e}"),
        }
    }
    (ids, t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    println!("| model | free tok/s | constrained tok/s | mask µs/token (mean) | p99 µs | share of a constrained token | vocabulary tables (first use) | schema compile |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for path in std::env::args().skip(1) {
        let engine = TextEngine::load(std::path::Path::new(&path), TextEngineConfig::default())?;
        let name = std::path::Path::new(&path).file_stem().unwrap().to_string_lossy().to_string();
        let prompt = engine.prepare_chat(&[Message::new(Role::User, "Describe a person as JSON.")], &[])?.ids;
        let spec = ConstraintSpec::JsonSchema(schema());

        let t = Instant::now();
        engine.constraint(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tables_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let constraint = engine.constraint(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
        let compile_s = t.elapsed().as_secs_f64();

        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        // Both runs generate the constrained output's length: the free one with its stop
        // tokens banned, so that neither stops early.
        let constrained = GenerateRequest {
            prompt: prompt.clone(),
            max_tokens: 200,
            sampling: greedy.clone(),
            stop_tokens: vec![],
            logprobs: None,
            prompt_logprobs: false,
            constraint: Some(constraint),
        };
        // Warm-up (the prompt lands in the prefix cache for both runs).
        generate(&engine, GenerateRequest { constraint: None, max_tokens: 4, ..constrained.clone() });
        let (ids, constrained_s) = generate(&engine, constrained);
        let banned = SamplingParams { logit_bias: engine.info().stop_tokens.iter().map(|&id| (id, -100.0)).collect(), ..greedy };
        let free =
            GenerateRequest { prompt, max_tokens: ids.len(), sampling: banned, stop_tokens: vec![], logprobs: None, prompt_logprobs: false, constraint: None };
        let (free_ids, free_s) = generate(&engine, free);

        // Replay: what the sampler adds per token, on a row the size of the vocabulary.
        let (_, tokenizer) = hearth_engine::text::load_vocab(std::path::Path::new(&path))?;
        let grammars = Grammars::new(&tokenizer)?;
        let mut times = Vec::new();
        let mut row = vec![0.0f32; engine.info().vocab_size];
        for _ in 0..5 {
            let mut c = grammars.compile(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            for &id in &ids {
                let t = Instant::now();
                c.mask_logits(&mut row);
                c.advance(id);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        let per_token_us = constrained_s / ids.len() as f64 * 1e6;
        println!(
            "| {name} | {:.1} | {:.1} | {mean:.0} | {p99:.0} | {:.1}% | {:.0} ms | {:.1} ms |",
            free_ids.len() as f64 / free_s,
            ids.len() as f64 / constrained_s,
            100.0 * mean / per_token_us,
            tables_s * 1e3,
            compile_s * 1e3
        );
        eprintln!("{name}: {} tokens: {}", ids.len(), engine.decode(&ids)?);
    }
    Ok(())
}
