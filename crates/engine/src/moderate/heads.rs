//! One logistic head per moderation category over [embedding ++ toxicity
//! logits], with its calibrated threshold. Trained and calibrated by
//! scripts/moderation/train_heads.py into models/moderation/heads.json.
use anyhow::{ensure, Context};
use serde::Deserialize;

/// OpenAI's categories, in the order the heads file and `Verdict` use.
pub const CATEGORIES: [&str; 11] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

const HEADS: &str = include_str!("../../../../models/moderation/heads.json");

#[derive(Deserialize)]
struct File {
    heads: Vec<Head>,
}

#[derive(Deserialize)]
struct Head {
    category: String,
    weights: Vec<f32>,
    bias: f32,
    threshold: f32,
}

pub struct Heads {
    heads: Vec<Head>,
}

impl Heads {
    pub fn builtin() -> anyhow::Result<Self> {
        let file: File = serde_json::from_str(HEADS).context("reading the moderation heads")?;
        let names: Vec<&str> = file.heads.iter().map(|h| h.category.as_str()).collect();
        ensure!(names == CATEGORIES, "the moderation heads are for {names:?}");
        let width = file.heads[0].weights.len();
        ensure!(width > 6 && file.heads.iter().all(|h| h.weights.len() == width), "moderation heads of unequal width");
        Ok(Self { heads: file.heads })
    }

    /// Embedding dimensions the heads were trained on.
    pub fn embedding_dims(&self) -> usize {
        self.heads[0].weights.len() - 6
    }

    pub fn threshold(&self, category: usize) -> f32 {
        self.heads[category].threshold
    }

    /// Scores of one chunk, in `CATEGORIES` order.
    pub fn score(&self, embedding: &[f32], toxic_probs: &[f32; 6]) -> [f32; CATEGORIES.len()] {
        let logits = toxic_probs.map(|p| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln()
        });
        std::array::from_fn(|k| {
            let h = &self.heads[k];
            let dims = embedding.len();
            let z = h.bias
                + h.weights[..dims].iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>()
                + h.weights[dims..].iter().zip(&logits).map(|(w, x)| w * x).sum::<f32>();
            1.0 / (1.0 + (-z).exp())
        })
    }
}
