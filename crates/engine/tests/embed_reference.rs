//! all-MiniLM-L6-v2 and all-mpnet-base-v2 against sentence-transformers: the
//! same token ids, and vectors with cosine >= 0.9999 to the ones PyTorch
//! computed from the same files (fixtures by scripts/record_embedding_reference.py
//! and scripts/record_mpnet_reference.py).
//! Model directories: `all-minilm-l6-v2` and `all-mpnet-base-v2` of the pulled models (`model_support::models_dir`).
mod model_support;

use hearth_engine::embed::{EmbedConfig, EmbedEngine};
use serde_json::Value;

const MINILM: &str = "all-minilm-l6-v2";
const MPNET: &str = "all-mpnet-base-v2";
const MINILM_FIXTURE: &str = include_str!("fixtures/minilm_reference.json");
const MPNET_FIXTURE: &str = include_str!("fixtures/mpnet_reference.json");

fn engine(model_id: &str) -> EmbedEngine {
    let dir = model_support::model_path(model_id);
    EmbedEngine::load(&dir, EmbedConfig::default()).expect("load the embedding model")
}

struct Item {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn fixture(text: &str) -> Vec<Item> {
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
    let engine = engine(MINILM);
    assert_eq!(engine.dimensions(), 384);
    assert_eq!(engine.max_tokens(), 256);
}

#[test]
fn tokens_match_sentence_transformers() {
    tokens_match(MINILM, MINILM_FIXTURE);
}

#[test]
fn vectors_match_sentence_transformers() {
    vectors_match(MINILM, MINILM_FIXTURE);
}

#[test]
fn mpnet_facts_match_the_model() {
    let engine = engine(MPNET);
    assert_eq!(engine.dimensions(), 768);
    assert_eq!(engine.max_tokens(), 384);
}

#[test]
fn mpnet_tokens_match_sentence_transformers() {
    tokens_match(MPNET, MPNET_FIXTURE);
}

#[test]
fn mpnet_vectors_match_sentence_transformers() {
    vectors_match(MPNET, MPNET_FIXTURE);
}

fn tokens_match(model_id: &str, fixture_json: &str) {
    let engine = engine(model_id);
    for item in fixture(fixture_json) {
        // The fixture's ids include [CLS] ... [SEP] (MPNet: <s> ... </s>); tokenize() leaves them out.
        let inner = &item.token_ids[1..item.token_ids.len() - 1];
        assert_eq!(engine.tokenize(&item.text), inner, "tokens of {:?}", item.text);
    }
}

fn vectors_match(model_id: &str, fixture_json: &str) {
    let engine = engine(model_id);
    let items = fixture(fixture_json);
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
    for model_id in [MINILM, MPNET] {
        let engine = engine(model_id);
        let rt = runtime();
        // A full window reads the last position row (MPNet's start two rows in).
        let fits = vec![1996u32; engine.max_tokens() - 2];
        assert_eq!(rt.block_on(engine.embed(vec![fits.clone()])).expect("a full window").len(), 1);
        let mut over = fits;
        over.push(1996);
        assert!(rt.block_on(engine.embed(vec![over])).is_err());
        assert!(rt.block_on(engine.embed(vec![vec![1_000_000]])).is_err());
        assert!(rt.block_on(engine.embed(vec![])).expect("no inputs").is_empty());
    }
}
