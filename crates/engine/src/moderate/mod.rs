//! Moderation: scores text for OpenAI's moderation categories with real
//! models. Every chunk of the input gets two feature sets, the bundle's
//! sentence embedding (all-mpnet-base-v2) and (when the heads use them) the six toxicity
//! probabilities of the ported Keras classifier (`toxic`); one logistic head
//! per category (`heads`, trained and Platt-calibrated by
//! scripts/moderation/train_heads.py) turns them into a probability. Chunks
//! are sentences, windows of several sentences, or both, as the heads file
//! says; a text's score is the maximum over its chunks (`chunk`).
//! MODERATION.md says more.
//!
//! Inputs live only in memory: nothing here writes or logs them.
mod chunk;
mod heads;
pub mod toxic;

use heads::Chunking;
pub use heads::CATEGORIES;

use crate::admission::Admission;
use crate::embed::{EmbedEngine, EmbedError};
use std::sync::Arc;

/// One input's result: per category (in `CATEGORIES` order) its score and
/// whether it crossed the calibrated threshold.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub scores: [f32; CATEGORIES.len()],
    pub flags: [bool; CATEGORIES.len()],
}

impl Verdict {
    pub fn flagged(&self) -> bool {
        self.flags.iter().any(|&f| f)
    }
}

/// The moderation runtime: the embedding engine it shares plus the
/// compiled-in toxicity classifier and heads. Cheap to clone.
#[derive(Clone)]
pub struct ModerationEngine {
    embed: EmbedEngine,
    toxic: Arc<toxic::ToxicClassifier>,
    heads: Arc<heads::Heads>,
    /// Requests scoring at once; each also queues its chunks on the shared embedding engine.
    admission: Admission,
}

impl ModerationEngine {
    /// Moderation on `embed`, admitting at most `capacity` requests at once.
    pub fn new(embed: EmbedEngine, capacity: usize) -> anyhow::Result<Self> {
        let heads = heads::Heads::builtin()?;
        anyhow::ensure!(
            heads.embedding_dims() == embed.dimensions(),
            "the moderation heads expect {}-dim embeddings, the model gives {}",
            heads.embedding_dims(),
            embed.dimensions()
        );
        Ok(Self { embed, toxic: Arc::new(toxic::ToxicClassifier::builtin()?), heads: Arc::new(heads), admission: Admission::new(capacity) })
    }

    /// Scores each text; texts of any length are chunked.
    pub async fn moderate(&self, texts: &[String]) -> Result<Vec<Verdict>, EmbedError> {
        // Shared with the blocking work, so the place stays taken until that work ends too.
        let admitted = Arc::new(self.admission.try_admit()?);
        let tokenizing = admitted.clone();
        let limits = chunk::Limits { embed_tokens: self.embed.max_tokens() - 2, toxic_words: self.toxic.max_len() };
        let this = self.clone();
        let owned: Vec<String> = texts.to_vec();
        // Tokenizing and the BiLSTM are CPU work: keep them off the async threads.
        let (owners, chunks) = blocking(move || {
            let _admitted = tokenizing;
            let (mut owners, mut chunks) = (Vec::new(), Vec::new());
            for (i, text) in owned.iter().enumerate() {
                // Nothing to score: an empty text keeps its zero scores, without a model pass.
                if text.trim().is_empty() {
                    continue;
                }
                let sentences = chunk::split(text, &limits, |s| this.embed.tokenize(s), |s| this.toxic.tokenize(s));
                let heads = &this.heads;
                let windows = match heads.chunking {
                    Chunking::Sentence => Vec::new(),
                    Chunking::Window | Chunking::Both => chunk::windows(&sentences, heads.window_tokens, limits.toxic_words),
                };
                let sentences = if heads.chunking == Chunking::Window { Vec::new() } else { sentences };
                for c in sentences.into_iter().chain(windows) {
                    owners.push(i);
                    chunks.push(c);
                }
            }
            (owners, chunks)
        })
        .await?;
        let (embed_ids, toxic_ids): (Vec<_>, Vec<_>) = chunks.into_iter().map(|c| (c.embed_ids, c.toxic_ids)).unzip();
        // The BiLSTM runs while the embedding engine batches the same chunks.
        let (toxic, classifying) = (self.heads.uses_toxic().then(|| self.toxic.clone()), admitted.clone());
        let (embeddings, toxic_probs) = tokio::join!(
            self.embed.embed(embed_ids),
            blocking(move || {
                let _admitted = classifying;
                toxic_ids.iter().map(|ids| toxic.as_ref().map_or([0.0; 6], |t| t.classify_ids(ids))).collect::<Vec<_>>()
            })
        );
        let (embeddings, toxic_probs) = (embeddings?, toxic_probs?);
        let mut verdicts = vec![Verdict { scores: [0.0; CATEGORIES.len()], flags: [false; CATEGORIES.len()] }; texts.len()];
        for ((owner, embedding), probs) in owners.into_iter().zip(&embeddings).zip(&toxic_probs) {
            let scores = self.heads.score(embedding, probs);
            let v = &mut verdicts[owner];
            for (k, s) in scores.into_iter().enumerate() {
                v.scores[k] = v.scores[k].max(s);
            }
        }
        for v in &mut verdicts {
            v.flags = std::array::from_fn(|k| v.scores[k] >= self.heads.threshold(k));
        }
        Ok(verdicts)
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, EmbedError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| EmbedError::Internal(format!("moderation worker failed: {e}")))
}
