//! The moderation runtime's scores for a fixed set of texts, against the fixture that
//! scripts/moderation/record_fixture.py records from the same heads and features in Python.
//! A retrained heads.json changes the fixture, so the change in scores shows in review; a
//! drift in the runtime (chunking, features, heads loading) fails here.
//! Model directory: `hearth-moderation-1` of the pulled models (`model_support::models_dir`).
mod model_support;

use hearth_engine::embed::{EmbedConfig, EmbedEngine};
use hearth_engine::moderate::{ModerationEngine, CATEGORIES};
use serde_json::Value;

/// f32 in Rust against f64 NumPy through a logistic head; the embedding itself agrees
/// to cosine 0.9999 (embed_reference.rs).
const TOLERANCE: f32 = 0.01;

#[test]
fn scores_match_the_recorded_fixture() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/moderation_scores.json")).expect("fixture JSON");
    let items = fixture["items"].as_array().expect("items");
    assert!(items.len() >= 25, "the fixture holds {} texts", items.len());
    let embed = EmbedEngine::load(&model_support::model_path("hearth-moderation-1"), EmbedConfig::default()).expect("load the embedding model");
    let engine = ModerationEngine::new(embed, 8).expect("moderation engine");
    let texts: Vec<String> = items.iter().map(|i| i["text"].as_str().expect("text").to_string()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let verdicts = rt.block_on(engine.moderate(&texts)).expect("moderate");
    let (mut flagged, mut benign) = (0, 0);
    for (item, verdict) in items.iter().zip(&verdicts) {
        for (k, category) in CATEGORIES.iter().enumerate() {
            let want = item["scores"][category].as_f64().expect("score") as f32;
            let got = verdict.scores[k];
            assert!((got - want).abs() <= TOLERANCE, "{:?}: {category} scored {got}, fixture {want}", item["text"]);
            // A flag may only differ where the score sits within the tolerance of its threshold.
            if item["flagged"][category].as_bool() != Some(verdict.flags[k]) {
                let threshold = fixture["thresholds"][category].as_f64().expect("threshold") as f32;
                assert!((got - threshold).abs() <= TOLERANCE, "{:?}: {category} flag {} at {got}, threshold {threshold}", item["text"], verdict.flags[k]);
            }
        }
        if verdict.flagged() {
            flagged += 1;
        } else {
            benign += 1;
        }
    }
    // The fixture mixes harmful and benign texts: both outcomes must occur.
    assert!(flagged > 0 && benign > 0, "{flagged} flagged, {benign} not");
}
