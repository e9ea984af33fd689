//! The training forward pass (candle, dequantized f32 weights) against the serving
//! engine (its quantized kernels, 8-bit activations, f16 KV cache) on the same GGUF:
//! the last position's logits agree to within 3% of their spread and pick the same
//! token.
mod common;
use common::*;
use hearth_train::Reference;

fn check(file: &str, prompt: &str) {
    let path = model(file);
    let (_, tokenizer) = hearth_engine::text::load_vocab(&path).unwrap();
    let tokens = tokenizer.encode(prompt, true).unwrap();
    let ours = Reference::load(&path).unwrap().last_logits(&tokens).unwrap();
    let theirs = engine_last_logits(engine(&path).as_ref(), &tokens);
    assert_eq!(ours.len(), theirs.len());
    let spread = theirs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) - theirs.iter().cloned().fold(f32::INFINITY, f32::min);
    let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    eprintln!("{file}: max |diff| {max_diff} over a spread of {spread} ({:.3}%)", 100.0 * max_diff / spread);
    assert!(max_diff <= 0.03 * spread, "{file}: logits differ by {max_diff} (spread {spread})");
    assert_eq!(argmax(&ours), argmax(&theirs), "{file}: different greedy token");
}

#[test]
fn gemma3_logits_match_the_engine() {
    check(GEMMA, "The three primary colors are red, yellow and");
}

#[test]
fn smollm2_logits_match_the_engine() {
    check(SMOLLM2, "<|im_start|>user\nName a planet.<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn bases_are_checked_before_training() {
    let (gemma, smollm2) = (model(GEMMA), model(SMOLLM2));
    hearth_train::check_base(&gemma).unwrap();
    hearth_train::check_base(&smollm2).unwrap();
    let bogus = std::env::temp_dir().join(format!("hearth-train-not-a-model-{}.gguf", std::process::id()));
    std::fs::write(&bogus, b"not a model").unwrap();
    assert!(hearth_train::check_base(&bogus).is_err());
    std::fs::remove_file(&bogus).unwrap();
}
