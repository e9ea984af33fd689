//! Whisper on candle: convolutional front end + transformer encoder, and a
//! decoder with a self-attention KV cache and per-window cross-attention K/V.
//! Weights come from a CTranslate2 `WhisperSpec` (see `ct2.rs` for the names).
use super::attention;
use super::ct2::Ct2Model;
use super::fastmath;
use super::gemv::HalfRows;
use crate::linalg::PackedMatrix;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, D};
use rayon::prelude::*;

/// What a linear layer is used for, hence how its weights are kept.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    /// Many rows at once (the encoder, cross-attention K/V): packed for the GEMM.
    Blocks,
    /// Decoder layers: the GEMM for the prompt, f16 rows for one-token steps.
    Both,
    /// One or two rows at a time (the vocabulary projection): f16 rows only.
    Steps,
}

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as in the file.
struct Linear {
    packed: Option<PackedMatrix>,
    step: Option<HalfRows>,
}

impl Linear {
    fn new(w: &Tensor, bias: Option<&Tensor>, used: Use) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
        let step = (used != Use::Blocks).then(|| HalfRows::new(&w, k, bias.as_deref())).flatten();
        let packed = (used != Use::Steps || step.is_none()).then(|| {
            let packed = PackedMatrix::from_cols(&w, n, k);
            match &bias {
                Some(b) => packed.with_bias(b),
                None => packed,
            }
        });
        Ok(Self { packed, step })
    }

    fn load(m: &Ct2Model, prefix: &str, used: Use) -> Result<Self> {
        Self::new(m.tensor(&format!("{prefix}/weight"))?, m.tensors.get(&format!("{prefix}/bias")), used)
    }

    /// Splits a fused projection (rows `[a; b; …]`) into its parts; `biased[i]`
    /// says whether part `i` keeps its bias (key biases are stored as zeros).
    fn split(m: &Ct2Model, prefix: &str, biased: &[bool], used: Use) -> Result<Vec<Self>> {
        let w = m.tensor(&format!("{prefix}/weight"))?;
        let b = m.tensor(&format!("{prefix}/bias"))?;
        let rows = w.dim(0)? / biased.len();
        biased.iter().enumerate().map(|(i, &keep)| Self::new(&w.narrow(0, i * rows, rows)?, keep.then(|| b.narrow(0, i * rows, rows)).transpose()?.as_ref(), used)).collect()
    }

    /// `x`: `[…, in]` → `[…, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(1);
        let m = x.elem_count() / k.max(1);
        let x_data = x.flatten_all()?.to_vec1::<f32>()?;
        let out = match &self.step {
            Some(step) if m == 1 || self.packed.is_none() => {
                dims.push(step.n());
                x_data.chunks_exact(k).flat_map(|row| step.gemv(row)).collect()
            }
            _ => {
                let packed = self.packed.as_ref().context("a linear without weights")?;
                dims.push(packed.n());
                let mut out = vec![0f32; m * packed.n()];
                packed.matmul(&x_data, m, &mut out);
                out
            }
        };
        Ok(Tensor::from_vec(out, dims, x.device())?)
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl LayerNorm {
    fn load(m: &Ct2Model, prefix: &str) -> Result<Self> {
        let vec = |name: &str| -> Result<Vec<f32>> { Ok(m.tensor(&format!("{prefix}/{name}"))?.to_vec1::<f32>()?) };
        Ok(Self { gamma: vec("gamma")?, beta: vec("beta")? })
    }

    /// One fused pass per row: as candle ops it was nine passes and
    /// allocations, which a one-token decoder step pays nineteen times.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.gamma.len();
        let mut data = x.flatten_all()?.to_vec1::<f32>()?;
        let norm = |row: &mut [f32]| {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        };
        if data.len() > 64 * d {
            data.par_chunks_mut(d).for_each(norm);
        } else {
            data.chunks_mut(d).for_each(norm);
        }
        Ok(Tensor::from_vec(data, x.dims(), x.device())?)
    }
}

struct Ffn {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Ffn {
    fn load(m: &Ct2Model, prefix: &str, used: Use) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm::load(m, &format!("{prefix}/layer_norm"))?,
            fc1: Linear::load(m, &format!("{prefix}/linear_0"), used)?,
            fc2: Linear::load(m, &format!("{prefix}/linear_1"), used)?,
        })
    }

    /// Residual included.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = fastmath::gelu(&self.fc1.forward(&self.norm.forward(x)?)?)?;
        Ok((x + self.fc2.forward(&h)?)?)
    }
}

/// `[T, d]` → `[heads, T, head_dim]`.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (t, d) = x.dims2()?;
    Ok(x.reshape((t, heads, d / heads))?.transpose(0, 1)?.contiguous()?)
}

/// `[heads, T, head_dim]` → `[T, d]`.
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (h, t, hd) = x.dims3()?;
    Ok(x.transpose(0, 1)?.contiguous()?.reshape((t, h * hd))?)
}

/// Scaled dot-product attention over `[heads, T, hd]` tensors; `mask` is added to the scores.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f32).sqrt();
    let scores = q.matmul(&k.t()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    Ok(fastmath::softmax_last_dim(&scores, scale)?.matmul(v)?)
}

struct SelfAttention {
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SelfAttention {
    fn load(m: &Ct2Model, prefix: &str, used: Use) -> Result<Self> {
        let mut qkv = Linear::split(m, &format!("{prefix}/linear_0"), &[true, false, true], used)?.into_iter();
        let (q, k, v) = (qkv.next().unwrap(), qkv.next().unwrap(), qkv.next().unwrap());
        Ok(Self { norm: LayerNorm::load(m, &format!("{prefix}/layer_norm"))?, q, k, v, out: Linear::load(m, &format!("{prefix}/linear_1"), used)? })
    }
}

struct EncoderLayer {
    attn: SelfAttention,
    ffn: Ffn,
}

struct CrossAttention {
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

struct DecoderLayer {
    attn: SelfAttention,
    cross: CrossAttention,
    ffn: Ffn,
}

pub struct Dims {
    pub n_mels: usize,
    pub heads: usize,
    pub vocab: usize,
    pub text_ctx: usize,
    pub audio_ctx: usize,
}

pub struct Whisper {
    pub dims: Dims,
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    enc_pos: Tensor,
    enc_layers: Vec<EncoderLayer>,
    enc_norm: LayerNorm,
    embed: Tensor,
    /// The output projection: the embeddings, tied.
    logits: Linear,
    dec_pos: Tensor,
    dec_layers: Vec<DecoderLayer>,
    dec_norm: LayerNorm,
}

fn count_layers(m: &Ct2Model, stack: &str) -> usize {
    (0..).take_while(|i| m.tensors.contains_key(&format!("{stack}/layer_{i}/ffn/linear_0/weight"))).count()
}

impl Whisper {
    pub fn from_ct2(m: &Ct2Model) -> Result<Self> {
        if m.spec != "WhisperSpec" {
            bail!("expected a CTranslate2 WhisperSpec model, found `{}`", m.spec);
        }
        let heads = m.scalar("encoder/num_heads")? as usize;
        let dec_heads = m.scalar("decoder/num_heads")? as usize;
        if heads != dec_heads {
            bail!("encoder and decoder head counts differ ({heads} vs {dec_heads})");
        }
        let conv1_w = m.tensor("encoder/conv1/weight")?.clone();
        let (_, n_mels, _) = conv1_w.dims3()?;
        let embed = m.tensor("decoder/embeddings/weight")?.clone();
        let dec_pos = m.tensor("decoder/position_encodings/encodings")?.clone();
        let enc_pos = m.tensor("encoder/position_encodings/encodings")?.clone();
        let dims = Dims { n_mels, heads, vocab: embed.dim(0)?, text_ctx: dec_pos.dim(0)?, audio_ctx: enc_pos.dim(0)? };
        let enc_layers = (0..count_layers(m, "encoder"))
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer { attn: SelfAttention::load(m, &format!("{p}/self_attention"), Use::Blocks)?, ffn: Ffn::load(m, &format!("{p}/ffn"), Use::Blocks)? })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec_layers = (0..count_layers(m, "decoder"))
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                let mut kv = Linear::split(m, &format!("{p}/attention/linear_1"), &[false, true], Use::Blocks)?.into_iter();
                let (k, v) = (kv.next().unwrap(), kv.next().unwrap());
                let cross = CrossAttention {
                    norm: LayerNorm::load(m, &format!("{p}/attention/layer_norm"))?,
                    q: Linear::load(m, &format!("{p}/attention/linear_0"), Use::Both)?,
                    k,
                    v,
                    out: Linear::load(m, &format!("{p}/attention/linear_2"), Use::Both)?,
                };
                Ok(DecoderLayer { attn: SelfAttention::load(m, &format!("{p}/self_attention"), Use::Both)?, cross, ffn: Ffn::load(m, &format!("{p}/ffn"), Use::Both)? })
            })
            .collect::<Result<Vec<_>>>()?;
        if enc_layers.is_empty() || dec_layers.is_empty() {
            bail!("the model has no encoder or decoder layers");
        }
        Ok(Self {
            dims,
            conv1: (conv1_w, m.tensor("encoder/conv1/bias")?.clone()),
            conv2: (m.tensor("encoder/conv2/weight")?.clone(), m.tensor("encoder/conv2/bias")?.clone()),
            enc_pos,
            enc_layers,
            enc_norm: LayerNorm::load(m, "encoder/layer_norm")?,
            logits: Linear::new(&embed, None, Use::Steps)?,
            embed,
            dec_pos,
            dec_layers,
            dec_norm: LayerNorm::load(m, "decoder/layer_norm")?,
        })
    }

    /// `mel`: `[n_mels, 3000]` → audio features `[1500, d_model]`.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let x = mel.unsqueeze(0)?;
        let x = fastmath::gelu(&x.conv1d(&self.conv1.0, 1, 1, 1, 1)?.broadcast_add(&self.conv1.1.reshape((1, (), 1))?)?)?;
        let x = fastmath::gelu(&x.conv1d(&self.conv2.0, 1, 2, 1, 1)?.broadcast_add(&self.conv2.1.reshape((1, (), 1))?)?)?;
        let x = x.squeeze(0)?.t()?.contiguous()?;
        let frames = x.dim(0)?;
        if frames != self.dims.audio_ctx {
            bail!("the encoder expects {} frames, got {frames}", self.dims.audio_ctx);
        }
        let mut x = (x + &self.enc_pos)?;
        let (h, d) = (self.dims.heads, x.dim(1)?);
        for layer in &self.enc_layers {
            let a = &layer.attn;
            let n = a.norm.forward(&x)?;
            let (q, k, v) = (a.q.forward(&n)?, a.k.forward(&n)?, a.v.forward(&n)?);
            let mixed = if attention::supports(d / h) {
                let vec = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                Tensor::from_vec(attention::attention(&vec(&q)?, &vec(&k)?, &vec(&v)?, frames, d, h), (frames, d), x.device())?
            } else {
                merge_heads(&attend(&split_heads(&q, h)?, &split_heads(&k, h)?, &split_heads(&v, h)?, None)?)?
            };
            x = (&x + a.out.forward(&mixed)?)?;
            x = layer.ffn.forward(&x)?;
        }
        self.enc_norm.forward(&x)
    }

    /// Per-layer cross-attention K/V of one window's audio features.
    pub fn cross_kv(&self, audio: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        let h = self.dims.heads;
        self.dec_layers
            .iter()
            .map(|l| Ok((split_heads(&l.cross.k.forward(audio)?, h)?, split_heads(&l.cross.v.forward(audio)?, h)?)))
            .collect()
    }

    /// Runs `tokens` (positions `cache.len()..`) through the decoder, extending
    /// the cache; returns the logits `[tokens.len(), vocab]` of the rows in `rows`.
    pub fn decode(&self, tokens: &[u32], cache: &mut DecoderCache, cross: &[(Tensor, Tensor)], rows: &[usize]) -> Result<Tensor> {
        let offset = cache.len;
        let t = tokens.len();
        if offset + t > self.dims.text_ctx {
            bail!("decoder context of {} tokens exceeded", self.dims.text_ctx);
        }
        let ids = Tensor::new(tokens, self.embed.device())?;
        let mut x = (self.embed.index_select(&ids, 0)? + self.dec_pos.narrow(0, offset, t)?)?;
        let h = self.dims.heads;
        // Causal mask over [new rows, cached + new columns].
        let mask = (t > 1)
            .then(|| {
                let data: Vec<f32> = (0..t)
                    .flat_map(|i| (0..offset + t).map(move |j| if j > offset + i { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                Tensor::from_vec(data, (t, offset + t), self.embed.device())
            })
            .transpose()?;
        for (i, layer) in self.dec_layers.iter().enumerate() {
            let a = &layer.attn;
            let n = a.norm.forward(&x)?;
            let q = split_heads(&a.q.forward(&n)?, h)?;
            let (k, v) = (split_heads(&a.k.forward(&n)?, h)?, split_heads(&a.v.forward(&n)?, h)?);
            let (k, v) = match cache.kv.get(i) {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 1)?, Tensor::cat(&[cv, &v], 1)?),
                None => (k, v),
            };
            x = (&x + a.out.forward(&merge_heads(&attend(&q, &k, &v, mask.as_ref())?)?)?)?;
            if i < cache.kv.len() {
                cache.kv[i] = (k, v);
            } else {
                cache.kv.push((k, v));
            }
            let c = &layer.cross;
            let q = split_heads(&c.q.forward(&c.norm.forward(&x)?)?, h)?;
            x = (&x + c.out.forward(&merge_heads(&attend(&q, &cross[i].0, &cross[i].1, None)?)?)?)?;
            x = layer.ffn.forward(&x)?;
        }
        cache.len += t;
        let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), x.device())?;
        let x = self.dec_norm.forward(&x.index_select(&idx, 0)?)?;
        self.logits.forward(&x).context("output projection")
    }
}

/// Self-attention keys/values of the tokens decoded so far, per layer `[heads, len, hd]`.
#[derive(Default, Clone)]
pub struct DecoderCache {
    kv: Vec<(Tensor, Tensor)>,
    pub len: usize,
}
