//! CLIP's text transformer (transformers' `CLIPTextModel`): token + position
//! embeddings, pre-norm causal self-attention layers, a final layer norm. Its last
//! hidden state conditions the UNet.
use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::TextEncoderConfig;

#[derive(Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct TextEncoder {
    tokens: Embedding,
    positions: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl TextEncoder {
    pub fn new(vb: VarBuilder, c: &TextEncoderConfig) -> Result<Self> {
        let act = match c.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => bail!("text encoder activation {other} is not supported"),
        };
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            bail!("text encoder: hidden_size must divide into heads");
        }
        // transformers 4.x saves `text_model.`-prefixed names (SD 1.5's files); 5.x saves them bare.
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") { vb.pp("text_model") } else { vb };
        let h = c.hidden_size;
        let emb = vb.pp("embeddings");
        let tokens = embedding(c.vocab_size, h, emb.pp("token_embedding"))?;
        let positions = embedding(c.max_position_embeddings, h, emb.pp("position_embedding"))?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(Layer {
                norm1: layer_norm(h, c.layer_norm_eps, l.pp("layer_norm1"))?,
                q: linear(h, h, a.pp("q_proj"))?,
                k: linear(h, h, a.pp("k_proj"))?,
                v: linear(h, h, a.pp("v_proj"))?,
                out: linear(h, h, a.pp("out_proj"))?,
                norm2: layer_norm(h, c.layer_norm_eps, l.pp("layer_norm2"))?,
                fc1: linear(h, c.intermediate_size, l.pp("mlp.fc1"))?,
                fc2: linear(c.intermediate_size, h, l.pp("mlp.fc2"))?,
            });
        }
        let final_norm = layer_norm(h, c.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self { tokens, positions, layers, final_norm, heads: c.num_attention_heads, act })
    }

    /// `ids`: (batch, seq) u32 → last hidden state (batch, seq, hidden).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let device = ids.device();
        let pos = Tensor::arange(0u32, seq as u32, device)?;
        let mut xs = self.tokens.forward(ids)?.broadcast_add(&self.positions.forward(&pos)?)?;
        let mask = causal_mask(seq, device)?;
        let hidden = xs.dim(2)?;
        let head_dim = hidden / self.heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for l in &self.layers {
            let residual = xs.clone();
            let h = l.norm1.forward(&xs)?;
            let split = |t: Tensor| t.reshape((batch, seq, self.heads, head_dim))?.transpose(1, 2)?.contiguous();
            let q = split((l.q.forward(&h)? * scale)?)?;
            let k = split(l.k.forward(&h)?)?;
            let v = split(l.v.forward(&h)?)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, hidden))?;
            xs = (residual + l.out.forward(&attn)?)?;
            let residual = xs.clone();
            let h = l.fc2.forward(&self.act.apply(&l.fc1.forward(&l.norm2.forward(&xs)?)?)?)?;
            xs = (residual + h)?;
        }
        Ok(self.final_norm.forward(&xs)?)
    }
}

fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..seq).flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(values, (seq, seq), device)?.to_dtype(DType::F32)?.unsqueeze(0)?.unsqueeze(0)?)
}
