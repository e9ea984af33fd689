//! Our tokenizer against llama.cpp's, id for id, on the three default models.
//! Reference ids: tests/fixtures/tokenizer_llamacpp.json, recorded by
//! scripts/record_tokenizer_fixture.py. Models: those `hearth pull` fetched (`model_support::models_dir`).
mod model_support;

use hearth_engine::text::{load_vocab, ModelInfo, Tokenizer};
use serde_json::Value;

const SMOLLM: &str = "smollm2-135m-instruct-q4_1.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn vocab(file: &str) -> (ModelInfo, Tokenizer) {
    load_vocab(&model_support::model_path(file)).unwrap_or_else(|e| panic!("loading {file}: {e:#}"))
}

fn fixture() -> Value {
    let text = include_str!("fixtures/tokenizer_llamacpp.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn matches_llama_cpp(file: &str) {
    let (_, tok) = vocab(file);
    let fixture = fixture();
    let cases = fixture["models"][file].as_array().expect("model in fixture");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let got = tok.encode(text, false).expect("encode");
        let got_bos = tok.encode(text, true).expect("encode");
        if got != ids(&case["ids"]) || got_bos != ids(&case["ids_with_bos"]) {
            failures.push(format!("{text:?}\n  ours      {got:?}\n  llama.cpp {:?}", ids(&case["ids"])));
        }
    }
    assert!(failures.is_empty(), "{file}: {} of {} texts differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn smollm2_matches_llama_cpp() {
    matches_llama_cpp(SMOLLM);
}

#[test]
fn qwen2_matches_llama_cpp() {
    matches_llama_cpp(QWEN);
}

#[test]
fn gemma3_matches_llama_cpp() {
    matches_llama_cpp(GEMMA);
}

#[test]
fn decode_inverts_encode() {
    for file in [SMOLLM, QWEN, GEMMA] {
        let (_, tok) = vocab(file);
        for text in fixture()["texts"].as_array().expect("texts") {
            let text = text.as_str().expect("text");
            let ids = tok.encode(text, false).expect("encode");
            assert_eq!(tok.decode(&ids).expect("decode"), text, "{file}");
        }
    }
}

#[test]
fn incremental_decoding_holds_back_partial_characters() {
    for file in [SMOLLM, QWEN, GEMMA] {
        let (_, tok) = vocab(file);
        let text = "Emoji: 🙂🚀👩‍👩‍👧‍👦 and 中文字符 ✓";
        let ids = tok.encode(text, false).expect("encode");
        let mut dec = tok.incremental();
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(id);
            assert!(!piece.contains('\u{FFFD}'), "{file}: replacement char in {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text, "{file}");
    }
}

#[test]
fn token_text_shows_partial_bytes_like_openai() {
    let (_, tok) = vocab(SMOLLM);
    let ids = tok.encode("中文字符 🚀", false).expect("encode");
    let texts: Vec<String> = ids.iter().map(|&id| tok.token_text(id)).collect();
    assert!(texts.iter().any(|t| t.starts_with("bytes:\\x")), "{texts:?}");
    assert_eq!(tok.token_text(tok.encode(" hello", false).expect("encode")[0]), " hello");
}

#[test]
fn model_facts_from_metadata() {
    let (smol, tok) = vocab(SMOLLM);
    assert_eq!(smol.arch, "llama");
    assert_eq!(smol.vocab_size, 49152);
    assert!(!smol.add_bos);
    assert!(smol.stop_tokens.contains(&2), "<|im_end|> ends generation");
    assert!(smol.stop_tokens.contains(&0), "<|endoftext|> ends generation");
    assert!(smol.fim.is_none());
    assert!(smol.chat_template.is_some());
    assert_eq!(tok.encode("<|im_start|>", false).expect("encode"), vec![1]);

    let (qwen, _) = vocab(QWEN);
    assert_eq!(qwen.arch, "qwen2");
    assert!(qwen.stop_tokens.contains(&151645) && qwen.stop_tokens.contains(&151643));
    let fim = qwen.fim.expect("Qwen2.5-Coder has FIM tokens");
    assert_eq!((fim.prefix, fim.suffix, fim.middle), (151659, 151661, 151660));

    let (gemma, tok) = vocab(GEMMA);
    assert_eq!(gemma.arch, "gemma3");
    assert!(gemma.add_bos);
    assert_eq!(gemma.bos, Some(2));
    assert!(gemma.stop_tokens.contains(&1) && gemma.stop_tokens.contains(&106));
    assert!(gemma.chat_template.is_none());
    assert_eq!(tok.encode("hi", true).expect("encode")[0], 2);
}
