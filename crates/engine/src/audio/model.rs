//! Whisper on candle: convolutional front end + transformer encoder, and a
//! decoder with a self-attention KV cache and per-window cross-attention K/V.
//! Weights come from a CTranslate2 `WhisperSpec` (see `ct2.rs` for the names).
use super::attention::{self, Layout, Mask};
use super::ct2::Ct2Model;
use super::fastmath;
use super::gemv::{self, HalfRows};
use crate::linalg::PackedMatrix;
use crate::math;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use half::f16;
use rayon::prelude::*;

/// Up to this many rows, a product streams the f16 rows rather than run the GEMM.
const FEW_ROWS: usize = 8;

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
        biased
            .iter()
            .enumerate()
            .map(|(i, &keep)| Self::new(&w.narrow(0, i * rows, rows)?, keep.then(|| b.narrow(0, i * rows, rows)).transpose()?.as_ref(), used))
            .collect()
    }

    fn n(&self) -> usize {
        self.step.as_ref().map_or_else(|| self.packed.as_ref().map_or(0, PackedMatrix::n), HalfRows::n)
    }

    /// `x`: `m` rows of `in` → `m` rows of `out`.
    fn apply(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; m * self.n()];
        self.apply_into(x, m, &mut out)?;
        Ok(out)
    }

    fn apply_into(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        match (&self.step, &self.packed) {
            (Some(step), _) if m == 1 => out.copy_from_slice(&step.gemv(x)),
            // A few rows (beams): stream the f16 rows once for all of them.
            (Some(step), packed) if m <= FEW_ROWS || packed.is_none() => step.gemm_rows(x, m, out),
            (_, Some(packed)) => packed.matmul(x, m, out),
            (_, None) => bail!("a linear without weights"),
        }
        Ok(())
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

    /// In place over rows of `d`, one fused pass per row: as candle ops it was
    /// nine passes and allocations, which a one-token decoder step pays nineteen times.
    fn apply(&self, data: &mut [f32]) {
        let d = self.gamma.len();
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
    }

    /// A normalised copy of `x`.
    fn normed(&self, x: &[f32]) -> Vec<f32> {
        let mut n = x.to_vec();
        self.apply(&mut n);
        n
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

    /// `x += ffn(x)` over `m` rows.
    fn apply(&self, x: &mut [f32], m: usize) -> Result<()> {
        let mut h = self.fc1.apply(&self.norm.normed(x), m)?;
        math::gelu(&mut h);
        add(x, &self.fc2.apply(&h, m)?);
        Ok(())
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
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

/// A decoder layer's self-attention: Q, K and V in one projection (K's bias
/// is zero in the file and kept so).
struct DecoderSelfAttention {
    norm: LayerNorm,
    qkv: Linear,
    out: Linear,
}

struct DecoderLayer {
    attn: DecoderSelfAttention,
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
    enc_pos: Vec<f32>,
    enc_layers: Vec<EncoderLayer>,
    enc_norm: LayerNorm,
    /// Token embeddings `[vocab, d]`.
    embed: Vec<f32>,
    /// The output projection: the embeddings, tied.
    logits: Linear,
    dec_pos: Vec<f32>,
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
                Ok(EncoderLayer {
                    attn: SelfAttention::load(m, &format!("{p}/self_attention"), Use::Blocks)?,
                    ffn: Ffn::load(m, &format!("{p}/ffn"), Use::Blocks)?,
                })
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
                let qkv = format!("{p}/self_attention/linear_0");
                let mut bias = m.tensor(&format!("{qkv}/bias"))?.to_vec1::<f32>()?;
                let third = bias.len() / 3;
                bias[third..2 * third].fill(0.0); // Whisper's key projection has no bias
                let bias = Tensor::from_vec(bias, 3 * third, &candle_core::Device::Cpu)?;
                let attn = DecoderSelfAttention {
                    norm: LayerNorm::load(m, &format!("{p}/self_attention/layer_norm"))?,
                    qkv: Linear::new(m.tensor(&format!("{qkv}/weight"))?, Some(&bias), Use::Both)?,
                    out: Linear::load(m, &format!("{p}/self_attention/linear_1"), Use::Both)?,
                };
                Ok(DecoderLayer { attn, cross, ffn: Ffn::load(m, &format!("{p}/ffn"), Use::Both)? })
            })
            .collect::<Result<Vec<_>>>()?;
        if enc_layers.is_empty() || dec_layers.is_empty() {
            bail!("the model has no encoder or decoder layers");
        }
        Ok(Self {
            dims,
            conv1: (conv1_w, m.tensor("encoder/conv1/bias")?.clone()),
            conv2: (m.tensor("encoder/conv2/weight")?.clone(), m.tensor("encoder/conv2/bias")?.clone()),
            enc_pos: enc_pos.flatten_all()?.to_vec1()?,
            enc_layers,
            enc_norm: LayerNorm::load(m, "encoder/layer_norm")?,
            logits: Linear::new(&embed, None, Use::Steps)?,
            embed: embed.flatten_all()?.to_vec1()?,
            dec_pos: dec_pos.flatten_all()?.to_vec1()?,
            dec_layers,
            dec_norm: LayerNorm::load(m, "decoder/layer_norm")?,
        })
    }

    /// `mel`: `[n_mels, 3000]` → audio features `[1500, d_model]`, row-major.
    pub fn encode(&self, mel: &Tensor) -> Result<Vec<f32>> {
        let x = mel.unsqueeze(0)?;
        let x = fastmath::gelu(&x.conv1d(&self.conv1.0, 1, 1, 1, 1)?.broadcast_add(&self.conv1.1.reshape((1, (), 1))?)?)?;
        let x = fastmath::gelu(&x.conv1d(&self.conv2.0, 1, 2, 1, 1)?.broadcast_add(&self.conv2.1.reshape((1, (), 1))?)?)?;
        let x = x.squeeze(0)?.t()?.contiguous()?;
        let frames = x.dim(0)?;
        if frames != self.dims.audio_ctx {
            bail!("the encoder expects {} frames, got {frames}", self.dims.audio_ctx);
        }
        let mut x = x.flatten_all()?.to_vec1::<f32>()?;
        add(&mut x, &self.enc_pos);
        let (h, d) = (self.dims.heads, x.len() / frames);
        // Activations reused across layers: a fresh 3–12 MB buffer per product
        // cost page faults and copies.
        let buffer = || vec![0f32; frames * d];
        let (mut n, mut q, mut k, mut v, mut y) = (buffer(), buffer(), buffer(), buffer(), buffer());
        let mut hidden = vec![0f32; frames * self.enc_layers[0].ffn.fc1.n()];
        for layer in &self.enc_layers {
            let a = &layer.attn;
            n.copy_from_slice(&x);
            a.norm.apply(&mut n);
            a.q.apply_into(&n, frames, &mut q)?;
            a.k.apply_into(&n, frames, &mut k)?;
            a.v.apply_into(&n, frames, &mut v)?;
            let mixed = attention::attention(&q, &k, &v, frames, frames, d, h, Layout::interleaved(d, h), Mask::All);
            a.out.apply_into(&mixed, frames, &mut y)?;
            add(&mut x, &y);
            let f = &layer.ffn;
            n.copy_from_slice(&x);
            f.norm.apply(&mut n);
            hidden.resize(frames * f.fc1.n(), 0.0);
            f.fc1.apply_into(&n, frames, &mut hidden)?;
            math::gelu(&mut hidden);
            f.fc2.apply_into(&hidden, frames, &mut y)?;
            add(&mut x, &y);
        }
        self.enc_norm.apply(&mut x);
        Ok(x)
    }

    /// Per-layer cross-attention K/V of one window's audio features `[frames, d]`.
    pub fn cross_kv(&self, audio: &[f32]) -> Result<CrossKv> {
        let frames = audio.len() / self.dec_norm.gamma.len();
        let by_head = |x: Vec<f32>| Layout::to_by_head(&x, frames, self.dims.heads).iter().map(|&v| f16::from_f32(v)).collect();
        let layers =
            self.dec_layers.iter().map(|l| Ok((by_head(l.cross.k.apply(audio, frames)?), by_head(l.cross.v.apply(audio, frames)?)))).collect::<Result<_>>()?;
        Ok(CrossKv { layers, frames })
    }

    /// Runs `tokens` (positions `cache.len..`) through the decoder, extending
    /// the cache; returns the logits (`vocab` each) of the rows in `rows`.
    pub fn decode(&self, tokens: &[u32], cache: &mut DecoderCache, cross: &CrossKv, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let x = self.forward(tokens, cache, cross, None)?;
        let d = self.dec_norm.gamma.len();
        rows.iter()
            .map(|&r| {
                let row = x.get(r * d..(r + 1) * d).context("a logits row past the tokens")?;
                self.logits.apply(&self.dec_norm.normed(row), 1).context("output projection")
            })
            .collect()
    }

    /// One decoder step for several sequences at once (beams, samples): token
    /// `i` extends `caches[i]`. The projections run on all rows together, so
    /// the weights are streamed once per step rather than once per sequence.
    pub fn decode_batch(&self, tokens: &[u32], caches: &mut [DecoderCache], cross: &CrossKv) -> Result<Vec<Vec<f32>>> {
        let (b, d, h) = (tokens.len(), self.dec_norm.gamma.len(), self.dims.heads);
        if b != caches.len() || b == 0 {
            bail!("{b} tokens for {} sequences", caches.len());
        }
        if cross.layers.len() != self.dec_layers.len() || caches.iter().any(|c| c.kv.len() != self.dec_layers.len()) {
            bail!("a batch step needs caches filled by `decode` with this model");
        }
        let mut x = Vec::with_capacity(b * d);
        for (&token, cache) in tokens.iter().zip(caches.iter()) {
            if cache.len >= self.dims.text_ctx {
                bail!("the decoder context of {} is full", self.dims.text_ctx);
            }
            let Some(embedding) = self.embed.get(token as usize * d..(token as usize + 1) * d) else { bail!("token {token} is outside the vocabulary") };
            x.extend(embedding.iter().zip(&self.dec_pos[cache.len * d..][..d]).map(|(e, p)| e + p));
        }
        let cross_layout = Layout::by_head(cross.frames, d / h);
        for (l, (layer, (cross_k, cross_v))) in self.dec_layers.iter().zip(&cross.layers).enumerate() {
            let a = &layer.attn;
            let qkv = a.qkv.apply(&a.norm.normed(&x), b)?;
            let mut mixed = vec![0f32; b * d];
            for ((row, cache), out) in qkv.chunks_exact(3 * d).zip(caches.iter_mut()).zip(mixed.chunks_exact_mut(d)) {
                let (keys, values) = &mut cache.kv[l];
                keys.extend_from_slice(&row[d..2 * d]);
                values.extend_from_slice(&row[2 * d..]);
                attention::attention_one(&row[..d], keys, values, cache.len + 1, h, Layout::interleaved(d, h), out);
            }
            add(&mut x, &a.out.apply(&mixed, b)?);
            let c = &layer.cross;
            let q = c.q.apply(&c.norm.normed(&x), b)?;
            for (q, out) in q.chunks_exact(d).zip(mixed.chunks_exact_mut(d)) {
                attention::attention_one(q, cross_k, cross_v, cross.frames, h, cross_layout, out);
            }
            add(&mut x, &c.out.apply(&mixed, b)?);
            layer.ffn.apply(&mut x, b)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.dec_norm.apply(&mut x);
        Ok(self.logits.apply(&x, b)?.chunks_exact(self.dims.vocab).map(<[f32]>::to_vec).collect())
    }

    /// Cross-attention scores (before the softmax) of `heads` (`(layer, head)`
    /// pairs) for `tokens` run from position 0: per head `[tokens, frames]`.
    /// Word timing reads them.
    pub fn cross_attention_weights(&self, tokens: &[u32], cross: &CrossKv, heads: &[(usize, usize)]) -> Result<Vec<Vec<f32>>> {
        let mut captured = vec![Vec::new(); heads.len()];
        self.forward(tokens, &mut DecoderCache::default(), cross, Some((heads, &mut captured)))?;
        Ok(captured)
    }

    /// The decoder stack over `tokens` after the cached ones; returns the
    /// hidden states `[tokens, d]` before the final norm. `capture` collects
    /// the cross-attention weights of some heads.
    fn forward(&self, tokens: &[u32], cache: &mut DecoderCache, cross: &CrossKv, mut capture: Option<Capture>) -> Result<Vec<f32>> {
        let (offset, t) = (cache.len, tokens.len());
        let (d, h) = (self.dec_norm.gamma.len(), self.dims.heads);
        if t == 0 || offset + t > self.dims.text_ctx {
            bail!("{t} tokens do not fit the decoder context of {} after {offset}", self.dims.text_ctx);
        }
        if cross.layers.len() != self.dec_layers.len() {
            bail!("cross-attention K/V of another model");
        }
        let mut x = Vec::with_capacity(t * d);
        for (i, &token) in tokens.iter().enumerate() {
            let Some(embedding) = self.embed.get(token as usize * d..(token as usize + 1) * d) else { bail!("token {token} is outside the vocabulary") };
            x.extend(embedding.iter().zip(&self.dec_pos[(offset + i) * d..][..d]).map(|(e, p)| e + p));
        }
        if cache.kv.is_empty() {
            let empty = || Vec::with_capacity(self.dims.text_ctx * d);
            cache.kv = self.dec_layers.iter().map(|_| (empty(), empty())).collect();
        }
        for (l, ((layer, (keys, values)), (cross_k, cross_v))) in self.dec_layers.iter().zip(&mut cache.kv).zip(&cross.layers).enumerate() {
            let a = &layer.attn;
            let qkv = a.qkv.apply(&a.norm.normed(&x), t)?;
            let mut q = Vec::with_capacity(t * d);
            for row in qkv.chunks_exact(3 * d) {
                q.extend_from_slice(&row[..d]);
                keys.extend_from_slice(&row[d..2 * d]);
                values.extend_from_slice(&row[2 * d..]);
            }
            let mixed = attention::attention(&q, keys, values, t, offset + t, d, h, Layout::interleaved(d, h), Mask::Causal);
            add(&mut x, &a.out.apply(&mixed, t)?);
            let c = &layer.cross;
            let q = c.q.apply(&c.norm.normed(&x), t)?;
            if let Some((heads, out)) = capture.as_mut() {
                for (&(_, head), weights) in heads.iter().zip(out.iter_mut()).filter(|((layer, _), _)| *layer == l) {
                    *weights = cross.head_weights(l, &q, d, head, d / h);
                }
            }
            let mixed = attention::attention(&q, cross_k, cross_v, t, cross.frames, d, h, Layout::by_head(cross.frames, d / h), Mask::All);
            add(&mut x, &c.out.apply(&mixed, t)?);
            layer.ffn.apply(&mut x, t)?;
        }
        cache.len += t;
        Ok(x)
    }
}

/// Heads whose cross-attention scores a forward pass collects, and where.
type Capture<'a> = (&'a [(usize, usize)], &'a mut Vec<Vec<f32>>);

/// Cross-attention keys and values of one window's audio, per decoder layer,
/// head by head (`[heads, frames, hd]`) in f16: every decoder step streams all of them.
pub struct CrossKv {
    layers: Vec<(Vec<f16>, Vec<f16>)>,
    frames: usize,
}

impl CrossKv {
    /// q kᵀ / √hd of head `head` of `layer` for every row of `q` (`[t, d]`,
    /// that layer's queries): `[t, frames]`, before the softmax.
    fn head_weights(&self, layer: usize, q: &[f32], d: usize, head: usize, hd: usize) -> Vec<f32> {
        let keys = &self.layers[layer].0[head * self.frames * hd..][..self.frames * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; q.len() / d * self.frames];
        for (row, weights) in q.chunks_exact(d).zip(out.chunks_exact_mut(self.frames)) {
            let scaled: Vec<f32> = row[head * hd..][..hd].iter().map(|v| v * scale).collect();
            gemv::rows_dot(keys, hd, &scaled, weights);
        }
        out
    }
}

/// Self-attention keys and values of the tokens decoded so far, per layer
/// `[len, d]`, appended to in place.
#[derive(Default, Clone)]
pub struct DecoderCache {
    kv: Vec<(Vec<f32>, Vec<f32>)>,
    pub len: usize,
}
