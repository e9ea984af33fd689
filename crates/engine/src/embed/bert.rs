//! BERT encoder over packed sequences. The inputs of a batch are laid end to end
//! as rows of one `[tokens, hidden]` matrix, so every dense layer is a single
//! GEMM with no padding; only attention looks at sequence boundaries. MPNet runs
//! on the same layers, with the differences mpnet.rs holds.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};

use super::mpnet::{self, RelativeBias};
use super::ops::{self, Norm};
use crate::linalg::PackedMatrix;

/// The fields of a Hugging Face BERT or MPNet `config.json` the forward pass needs.
#[derive(Debug, Clone, serde::Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f32,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    /// `bert` or `mpnet`.
    #[serde(default = "default_model_type")]
    model_type: String,
    /// MPNet's positions start after it.
    #[serde(default)]
    pad_token_id: usize,
    #[serde(default)]
    relative_attention_num_buckets: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_model_type() -> String {
    "bert".into()
}

/// BERT's attention tensors of a layer: query, key, value, output projection, and the norm after attention.
const BERT_ATTENTION_NAMES: [&str; 5] =
    ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "attention.output.LayerNorm"];

struct Layer {
    /// Query, key and value projections in one `[hidden, 3 * hidden]` matrix.
    qkv: PackedMatrix,
    attn_out: PackedMatrix,
    attn_norm: Norm,
    up: PackedMatrix,
    down: PackedMatrix,
    out_norm: Norm,
}

/// One forward pass's activations, `[rows, width]` each, kept from batch to
/// batch so that the steady state allocates nothing (the high-water mark is
/// about 17 KB per token of the largest batch: 140 MB at 8,192 tokens).
#[derive(Default)]
struct Buffers {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    up: Vec<f32>,
}

/// The first `len` values of `buf`, grown (never shrunk) to hold them.
fn prefix(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

pub(super) struct Bert {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token `i` of a sequence reads position row `i + position_offset` (MPNet's start after the padding id).
    position_offset: usize,
    /// Row 0 of the token-type table: every input is a single segment (zeros for MPNet, which has none).
    segment: Vec<f32>,
    /// MPNet's relative position bias, added to every layer's attention scores.
    relative_bias: Option<RelativeBias>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    buffers: Buffers,
}

impl Bert {
    pub(super) fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: BertConfig = serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?)
            .with_context(|| format!("parsing {}", config_path.display()))?;
        ensure!(config.hidden_act == "gelu", "activation `{}` is not supported (only gelu)", config.hidden_act);
        ensure!(config.position_embedding_type == "absolute", "position embeddings `{}` are not supported (only absolute)", config.position_embedding_type);
        ensure!(config.hidden_size.is_multiple_of(config.num_attention_heads), "hidden size not divisible by the head count");
        let is_mpnet = match config.model_type.as_str() {
            "bert" => false,
            "mpnet" => true,
            other => bail!("model type `{other}` is not supported (bert or mpnet)"),
        };

        let weights_path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).with_context(|| format!("reading {}", weights_path.display()))?;
        // Checkpoints saved from BertForX carry a `bert.` prefix; sentence-transformers' do not.
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .cloned()
                .with_context(|| format!("tensor `{name}` missing from {}", weights_path.display()))
        };
        let vec = |name: &str| -> Result<Vec<f32>> { Ok(get(name)?.flatten_all()?.to_vec1::<f32>()?) };
        let norm = |prefix: &str| -> Result<Norm> {
            Ok(Norm { weight: vec(&format!("{prefix}.weight"))?, bias: vec(&format!("{prefix}.bias"))?, eps: config.layer_norm_eps })
        };
        // Linear weights are `[out, in]`; fused projections stack their outputs.
        let dense = |prefixes: &[String]| -> Result<PackedMatrix> {
            let (mut weight, mut bias) = (Vec::new(), Vec::new());
            for p in prefixes {
                weight.extend(vec(&format!("{p}.weight"))?);
                bias.extend(vec(&format!("{p}.bias"))?);
            }
            ensure!(!bias.is_empty() && weight.len() % bias.len() == 0, "`{}` weight and bias do not match", prefixes[0]);
            let k = weight.len() / bias.len().max(1);
            Ok(PackedMatrix::from_cols(&weight, bias.len(), k).with_bias(&bias))
        };

        let h = config.hidden_size;
        let word = vec("embeddings.word_embeddings.weight")?;
        let position = vec("embeddings.position_embeddings.weight")?;
        let segment = if is_mpnet { vec![0.0; h] } else { vec("embeddings.token_type_embeddings.weight")? };
        ensure!(word.len() == config.vocab_size * h, "word embeddings do not match vocab_size x hidden_size");
        ensure!(position.len() == config.max_position_embeddings * h, "position embeddings do not match the config");
        ensure!(segment.len() >= h, "token type embeddings are empty");
        let position_offset = if is_mpnet { config.pad_token_id + 1 } else { 0 };
        ensure!(position_offset < config.max_position_embeddings, "no positions after the padding id");
        let relative_bias = if is_mpnet {
            let table = vec(mpnet::RELATIVE_BIAS_NAME)?;
            let positions = config.max_position_embeddings - position_offset;
            Some(RelativeBias::new(&table, config.relative_attention_num_buckets, config.num_attention_heads, positions)?)
        } else {
            None
        };
        let names = if is_mpnet { mpnet::ATTENTION_NAMES } else { BERT_ATTENTION_NAMES };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv = [names[0], names[1], names[2]].map(|n| format!("{p}.{n}"));
            layers.push(Layer {
                qkv: dense(&qkv)?,
                attn_out: dense(&[format!("{p}.{}", names[3])])?,
                attn_norm: norm(&format!("{p}.{}", names[4]))?,
                up: dense(&[format!("{p}.intermediate.dense")])?,
                down: dense(&[format!("{p}.output.dense")])?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let embed_norm = norm("embeddings.LayerNorm")?;
        Ok(Self { word, position, position_offset, segment: segment[..h].to_vec(), relative_bias, embed_norm, layers, config, buffers: Buffers::default() })
    }

    pub(super) fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    pub(super) fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    /// The longest sequence (special tokens included) the position table holds.
    pub(super) fn max_positions(&self) -> usize {
        self.config.max_position_embeddings - self.position_offset
    }

    /// Mean-pooled, L2-normalised embeddings of complete sequences (special tokens included).
    pub(super) fn embed(&mut self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.config.hidden_size;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for seq in seqs {
            if seq.len() > self.max_positions() {
                bail!("a sequence of {} tokens exceeds the {} positions", seq.len(), self.max_positions());
            }
            spans.push((rows, seq.len()));
            rows += seq.len();
        }
        let b = &mut self.buffers;
        let hidden = prefix(&mut b.hidden, rows * h);
        for (seq, &(start, _)) in seqs.iter().zip(&spans) {
            for (pos, &id) in seq.iter().enumerate() {
                let id = id as usize;
                ensure!(id < self.config.vocab_size, "token id {id} is outside the vocabulary");
                let (word, position) = (&self.word[id * h..][..h], &self.position[(pos + self.position_offset) * h..][..h]);
                let row = &mut hidden[(start + pos) * h..][..h];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = word[i] + position[i] + self.segment[i];
                }
            }
        }
        ops::layer_norm(hidden, &self.embed_norm);

        let heads = self.config.num_attention_heads;
        let qkv = prefix(&mut b.qkv, rows * 3 * h);
        let context = prefix(&mut b.context, rows * h);
        let attended = prefix(&mut b.attended, rows * h);
        for layer in &self.layers {
            let up = prefix(&mut b.up, rows * layer.up.n());
            layer.qkv.matmul(hidden, rows, qkv);
            match &self.relative_bias {
                Some(bias) => ops::attention_with_bias(qkv, &spans, heads, h / heads, bias, context),
                None => ops::attention(qkv, &spans, heads, h / heads, context),
            }
            layer.attn_out.matmul(context, rows, attended);
            ops::residual_norm(attended, hidden, &layer.attn_norm);
            layer.up.matmul(attended, rows, up);
            ops::gelu(up);
            // The layer's input is spent: its output takes its place.
            layer.down.matmul(up, rows, hidden);
            ops::residual_norm(hidden, attended, &layer.out_norm);
        }
        Ok(spans.iter().map(|&(start, len)| ops::mean_pool_normalized(&hidden[start * h..(start + len) * h], h)).collect())
    }
}
