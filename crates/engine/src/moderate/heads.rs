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
    /// Whether the heads read the toxicity logits after the embedding (older files: always).
    #[serde(default = "yes")]
    toxic_logits: bool,
    #[serde(default)]
    chunks: Chunking,
    /// Embedding tokens per context window (`chunks` window or both).
    #[serde(default)]
    window_tokens: usize,
    heads: Vec<Head>,
}

fn yes() -> bool {
    true
}

/// What a text is cut into before scoring; its score is the maximum over them.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Chunking {
    /// Single sentences.
    #[default]
    Sentence,
    /// Windows of several sentences (a short text whole).
    Window,
    /// Both.
    Both,
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
    toxic_logits: bool,
    pub chunking: Chunking,
    pub window_tokens: usize,
}

impl Heads {
    pub fn builtin() -> anyhow::Result<Self> {
        let file: File = serde_json::from_str(HEADS).context("reading the moderation heads")?;
        let names: Vec<&str> = file.heads.iter().map(|h| h.category.as_str()).collect();
        ensure!(names == CATEGORIES, "the moderation heads are for {names:?}");
        let width = file.heads[0].weights.len();
        ensure!(width > 6 && file.heads.iter().all(|h| h.weights.len() == width), "moderation heads of unequal width");
        ensure!(file.chunks == Chunking::Sentence || file.window_tokens > 0, "moderation heads with windows need window_tokens");
        Ok(Self { heads: file.heads, toxic_logits: file.toxic_logits, chunking: file.chunks, window_tokens: file.window_tokens })
    }

    /// Embedding dimensions the heads were trained on.
    pub fn embedding_dims(&self) -> usize {
        self.heads[0].weights.len() - if self.toxic_logits { 6 } else { 0 }
    }

    /// Whether the scores need the toxicity classifier at all.
    pub fn uses_toxic(&self) -> bool {
        self.toxic_logits
    }

    pub fn threshold(&self, category: usize) -> f32 {
        self.heads[category].threshold
    }

    /// Calibrated probabilities of one chunk, in `CATEGORIES` order (`toxic_probs` is
    /// ignored by heads without toxicity features).
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
