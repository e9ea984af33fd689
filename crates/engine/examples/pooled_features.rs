//! Mean-pooled hidden states of a GGUF model for each text, for training moderation heads
//! (scripts/moderation/qwen_features.py). Reads one JSON string per line on stdin, writes one
//! JSON array per line on stdout; prints tokens/s to stderr at the end.
//!
//! `cargo run --release -p hearth-engine --example pooled_features -- MODEL.gguf < texts.jsonl`
use candle_core::quantized::gguf_file;
use hearth_engine::text::{load_model, load_vocab};
use std::io::{BufRead, Write};
use std::time::Instant;

/// Longer texts are cut: the features are for sentence windows.
const MAX_TOKENS: usize = 512;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("usage: pooled_features MODEL.gguf < texts.jsonl");
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let model = load_model(&content, &mut file)?;
    let (_, tokenizer) = load_vocab(std::path::Path::new(&path))?;
    let (mut tokens, t) = (0usize, Instant::now());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in std::io::stdin().lock().lines() {
        let text: String = serde_json::from_str(&line?)?;
        let mut ids = tokenizer.encode(&text, true)?;
        ids.truncate(MAX_TOKENS);
        if ids.is_empty() {
            ids = tokenizer.encode(" ", true)?;
        }
        tokens += ids.len();
        let pooled = model.pooled_hidden(&ids)?;
        serde_json::to_writer(&mut out, &pooled)?;
        writeln!(out)?;
        out.flush()?;
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!("{tokens} tokens in {s:.1} s: {:.0} tokens/s", tokens as f64 / s);
    Ok(())
}
