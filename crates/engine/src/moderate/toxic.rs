//! The Keras toxicity classifier of `toxic-comment-classifier` (MIT), ported:
//! Keras word tokenizer → Embedding 20000×50 → BiLSTM(50) → global max pool →
//! Dense 50 ReLU → Dense 6 sigmoid. Converted once by
//! scripts/moderation/convert_toxic.py; the files are compiled in (4.5 MB).
//! Plain f32 loops: the whole model is 1.1M weights, one text is ~4 MFLOP.
use anyhow::{bail, Context};
use candle_core::{safetensors, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;

pub const LABELS: [&str; 6] = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"];
const WEIGHTS: &[u8] = include_bytes!("../../../../models/moderation/toxic.safetensors");
const VOCAB: &str = include_str!("../../../../models/moderation/toxic_vocab.json");

/// The Keras `Tokenizer` state that matters for `texts_to_sequences`.
#[derive(Deserialize)]
struct Vocab {
    filters: String,
    lower: bool,
    split: String,
    max_len: usize,
    words: HashMap<String, u32>,
}

/// Forward weights of one LSTM direction, Keras layout (gates i, f, c, o).
struct Lstm {
    kernel: Vec<f32>,    // [input, 4*units]
    recurrent: Vec<f32>, // [units, 4*units]
    bias: Vec<f32>,      // [4*units]
}

pub struct ToxicClassifier {
    vocab: Vocab,
    embedding: Vec<f32>, // [vocab, dim]
    dim: usize,
    units: usize,
    forward: Lstm,
    backward: Lstm,
    dense_w: Vec<f32>, // [2*units, hidden]
    dense_b: Vec<f32>,
    out_w: Vec<f32>, // [hidden, 6]
    out_b: Vec<f32>,
}

impl ToxicClassifier {
    /// The compiled-in converted model.
    pub fn builtin() -> anyhow::Result<Self> {
        Self::from_bytes(WEIGHTS, VOCAB)
    }

    pub fn from_bytes(weights: &[u8], vocab_json: &str) -> anyhow::Result<Self> {
        let vocab: Vocab = serde_json::from_str(vocab_json).context("reading the toxicity vocabulary")?;
        let tensors = safetensors::load_buffer(weights, &Device::Cpu).context("reading the toxicity weights")?;
        let get = |name: &str| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
            let t: &Tensor = tensors.get(name).with_context(|| format!("toxicity weights lack `{name}`"))?;
            Ok((t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
        };
        let (emb_shape, embedding) = get("embedding")?;
        let lstm = |dir: &str| -> anyhow::Result<Lstm> {
            Ok(Lstm { kernel: get(&format!("{dir}.kernel"))?.1, recurrent: get(&format!("{dir}.recurrent"))?.1, bias: get(&format!("{dir}.bias"))?.1 })
        };
        let (forward, backward) = (lstm("forward")?, lstm("backward")?);
        let (dim, units) = (emb_shape[1], forward.bias.len() / 4);
        let (dense_shape, dense_w) = get("dense.weight")?;
        let (out_shape, out_w) = get("out.weight")?;
        if forward.kernel.len() != dim * 4 * units || dense_shape[0] != 2 * units || out_shape != [dense_shape[1], LABELS.len()] {
            bail!("toxicity weights have unexpected shapes");
        }
        if vocab.words.values().any(|&id| id as usize >= emb_shape[0]) {
            bail!("toxicity vocabulary has ids beyond the embedding table");
        }
        Ok(Self { vocab, embedding, dim, units, forward, backward, dense_b: get("dense.bias")?.1, dense_w, out_b: get("out.bias")?.1, out_w })
    }

    /// Word ids as Keras `texts_to_sequences` gives them: lowercase, filter
    /// characters become the split character, unknown words are dropped.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let lowered;
        let text = if self.vocab.lower {
            lowered = text.to_lowercase();
            &lowered
        } else {
            text
        };
        let split = self.vocab.split.chars().next().unwrap_or(' ');
        let cleaned: String = text.chars().map(|c| if self.vocab.filters.contains(c) { split } else { c }).collect();
        cleaned.split(split).filter(|w| !w.is_empty()).filter_map(|w| self.vocab.words.get(w).copied()).collect()
    }

    /// The model's window in word ids (longer inputs must be chunked by the caller).
    pub fn max_len(&self) -> usize {
        self.vocab.max_len
    }

    /// The six probabilities (`LABELS` order) for one id sequence. Like Keras'
    /// `pad_sequences`, only the last `max_len` ids count and zeros pad the front.
    pub fn classify_ids(&self, ids: &[u32]) -> [f32; 6] {
        let n = self.vocab.max_len;
        let tail = &ids[ids.len().saturating_sub(n)..];
        let padded: Vec<u32> = std::iter::repeat_n(0, n - tail.len()).chain(tail.iter().copied()).collect();
        let xs: Vec<&[f32]> = padded.iter().map(|&id| &self.embedding[id as usize * self.dim..][..self.dim]).collect();
        let mut pooled = vec![f32::NEG_INFINITY; 2 * self.units];
        self.run_lstm(&self.forward, xs.iter().copied(), &mut pooled[..self.units]);
        // Max over time does not depend on the order the backward outputs are stored in.
        self.run_lstm(&self.backward, xs.iter().rev().copied(), &mut pooled[self.units..]);
        let hidden = dense(&pooled, &self.dense_w, &self.dense_b).into_iter().map(|v| v.max(0.0)).collect::<Vec<_>>();
        let out = dense(&hidden, &self.out_w, &self.out_b);
        std::array::from_fn(|i| sigmoid(out[i]))
    }

    pub fn classify(&self, text: &str) -> [f32; 6] {
        self.classify_ids(&self.tokenize(text))
    }

    /// Runs one direction, writing the max over time of its outputs into `pooled`.
    fn run_lstm<'a>(&self, w: &Lstm, xs: impl Iterator<Item = &'a [f32]>, pooled: &mut [f32]) {
        let u = self.units;
        let (mut h, mut c) = (vec![0f32; u], vec![0f32; u]);
        let mut z = vec![0f32; 4 * u];
        for x in xs {
            z.copy_from_slice(&w.bias);
            accumulate(&mut z, x, &w.kernel);
            accumulate(&mut z, &h, &w.recurrent);
            for j in 0..u {
                let (i, f, g, o) = (sigmoid(z[j]), sigmoid(z[u + j]), z[2 * u + j].tanh(), sigmoid(z[3 * u + j]));
                c[j] = f * c[j] + i * g;
                h[j] = o * c[j].tanh();
                pooled[j] = pooled[j].max(h[j]);
            }
        }
    }
}

/// z += x · W for a row-major W of shape [x.len(), z.len()].
fn accumulate(z: &mut [f32], x: &[f32], w: &[f32]) {
    let cols = z.len();
    for (k, &xk) in x.iter().enumerate() {
        for (zj, wj) in z.iter_mut().zip(&w[k * cols..(k + 1) * cols]) {
            *zj += xk * wj;
        }
    }
}

fn dense(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut z = b.to_vec();
    accumulate(&mut z, x, w);
    z
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
