//! all-MiniLM-L6-v2 against sentence-transformers: the same token ids, and
//! vectors with cosine >= 0.9999 to the ones PyTorch computed from the same
//! files (fixture by scripts/record_embedding_reference.py).
//! Model directory: `all-minilm-l6-v2` of the pulled models (`model_support::models_dir`).
mod model_support;

use hearth_engine::embed::{EmbedConfig, EmbedEngine};
use serde_json::Value;

const MODEL_ID: &str = "all-minilm-l6-v2";

fn engine() -> EmbedEngine {
    let dir = model_support::model_path(MODEL_ID);
    EmbedEngine::load(&dir, EmbedConfig::default()).expect("load the embedding model")
}

struct Item {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn fixture() -> Vec<Item> {
    let text = include_str!("fixtures/minilm_reference.json");
    let json: Value = serde_json::from_str(text).expect("fixture JSON");
    json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| Item {
            text: item["text"].as_str().expect("text").to_string(),
            token_ids: item["token_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            embedding: item["embedding"].as_array().expect("vector").iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn facts_match_the_model() {
    let engine = engine();
    assert_eq!(engine.dimensions(), 384);
    assert_eq!(engine.max_tokens(), 256);
}

#[test]
fn tokens_match_sentence_transformers() {
    let engine = engine();
    for item in fixture() {
        // The fixture's ids include [CLS] ... [SEP]; tokenize() leaves them out.
        let inner = &item.token_ids[1..item.token_ids.len() - 1];
        assert_eq!(engine.tokenize(&item.text), inner, "tokens of {:?}", item.text);
    }
}

#[test]
fn vectors_match_sentence_transformers() {
    let engine = engine();
    let items = fixture();
    let inputs: Vec<Vec<u32>> = items.iter().map(|i| engine.tokenize(&i.text)).collect();
    let rt = runtime();
    let batched = rt.block_on(engine.embed(inputs.clone())).expect("embed");
    for ((item, ids), vector) in items.iter().zip(&inputs).zip(&batched) {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalised: {norm}");
        let cos = cosine(vector, &item.embedding);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", item.text);
        // Alone or in a batch: the same vector (packing adds no padding to differ by).
        let solo = rt.block_on(engine.embed(vec![ids.clone()])).expect("embed one");
        let same = cosine(&solo[0], vector);
        assert!(same >= 0.999999, "solo vs batched cosine {same} for {:?}", item.text);
    }
}

#[test]
fn rejects_inputs_over_the_window_and_unknown_ids() {
    let engine = engine();
    let rt = runtime();
    let fits = vec![1996u32; engine.max_tokens() - 2];
    assert_eq!(rt.block_on(engine.embed(vec![fits.clone()])).expect("a full window").len(), 1);
    let mut over = fits;
    over.push(1996);
    assert!(rt.block_on(engine.embed(vec![over])).is_err());
    assert!(rt.block_on(engine.embed(vec![vec![1_000_000]])).is_err());
    assert!(rt.block_on(engine.embed(vec![])).expect("no inputs").is_empty());
}
