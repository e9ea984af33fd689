//! The Rust port of the Keras toxicity classifier against the reference
//! the conversion script recorded (scripts/moderation/convert_toxic.py).
use hearth_engine::moderate::toxic::{ToxicClassifier, LABELS};
use serde_json::Value;

#[test]
fn bilstm_matches_the_keras_reference() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/toxic_reference.json")).unwrap();
    let labels: Vec<&str> = fixture["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(labels, LABELS);
    let model = ToxicClassifier::builtin().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want_ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(model.tokenize(text), want_ids, "tokens of {text:?}");
        let got = model.classify(text);
        for (i, want) in case["probabilities"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap() as f32;
            assert!((got[i] - want).abs() < 1e-4, "{} of {text:?}: {} vs {want}", LABELS[i], got[i]);
        }
    }
}
