//! The base model as a differentiable candle graph: the same decoder the serving engine
//! runs (llama/SmolLM2, qwen2, gemma3), its weights dequantized and frozen, with LoRA
//! adapters on the targeted projections as the only `Var`s.
use crate::frozen::Frozen;
use crate::LoraConfig;
use anyhow::{anyhow, Context, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor, Var, D};
use hearth_engine::text::{Arch, Hparams, RopeStyle};

/// What the forward pass needs from the GGUF metadata: the engine's `Hparams`, in f64.
#[derive(Debug, Clone)]
pub struct Shape {
    pub gemma: bool,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    /// llama's GGUF q/k are permuted for RoPE on adjacent pairs; qwen2/gemma3 rotate halves.
    pub rope_interleaved: bool,
    pub rope_base: f64,
    pub rope_freq_scale: f64,
    pub rms_eps: f64,
    /// gemma3: (window, every n-th layer global, local rope base).
    pub sliding: Option<(usize, usize, f64)>,
    pub softcap: Option<f64>,
}

impl Shape {
    /// The engine's reading of the GGUF (`Hparams`), as the training graph wants it.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let hp = Hparams::from_gguf(content).map_err(|e| anyhow!("fine-tuning supports llama, qwen2 and gemma3 models: {e}"))?;
        Ok(Self::from(&hp))
    }

    fn is_local(&self, il: usize) -> bool {
        self.sliding.is_some_and(|(_, every, _)| !(il + 1).is_multiple_of(every))
    }
}

impl From<&Hparams> for Shape {
    fn from(hp: &Hparams) -> Self {
        Self {
            gemma: hp.arch == Arch::Gemma3,
            n_layer: hp.n_layer,
            n_embd: hp.n_embd,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hp.head_dim,
            n_rot: hp.n_rot,
            rope_interleaved: hp.rope_style == RopeStyle::Interleaved,
            rope_base: f64::from(hp.rope_base),
            rope_freq_scale: f64::from(hp.rope_freq_scale),
            rms_eps: f64::from(hp.rms_eps),
            sliding: hp.sliding_window.map(|w| (w.size, w.global_every, f64::from(w.local_rope_base))),
            softcap: hp.final_logit_softcap.map(f64::from),
        }
    }
}

/// A low-rank adapter `scale * B A`.
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

/// A projection: frozen weight, optional bias, optional adapter.
pub struct Proj {
    /// The GGUF tensor name of the weight (`blk.3.attn_q.weight`).
    pub name: String,
    pub weight: Frozen,
    bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.weight.forward(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let delta = x.matmul(&l.a.as_tensor().t()?)?.matmul(&l.b.as_tensor().t()?)?;
            y = (y + (delta * l.scale)?)?;
        }
        Ok(y)
    }

    /// `W + scale * B A`: the weight with the adapter merged in.
    pub fn merged(&self) -> Result<Tensor> {
        Ok(match &self.lora {
            Some(l) => (&self.weight.0 + (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?)?,
            None => self.weight.0.clone(),
        })
    }
}

struct Block {
    attn_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
    post_ffn_norm: Option<Tensor>,
    local: bool,
}

pub struct Net {
    pub shape: Shape,
    embed: Tensor,
    head: Frozen,
    output_norm: Tensor,
    blocks: Vec<Block>,
    dtype: DType,
}

/// Where the weights come from: a name → dense tensor (None when absent).
pub type Source<'a> = dyn FnMut(&str) -> Result<Option<Tensor>> + 'a;

impl Net {
    /// Builds the net from `get`'s tensors (GGUF names, `[out, in]` matrices), adding
    /// adapters per `lora` initialised from `rng`.
    pub fn build(shape: Shape, get: &mut Source, lora: &LoraConfig, rng: &mut impl rand::Rng) -> Result<Self> {
        let need = |get: &mut Source, name: &str| -> Result<Tensor> { get(name)?.with_context(|| format!("the model has no tensor `{name}`")) };
        let embed = need(get, "token_embd.weight")?;
        let dtype = embed.dtype();
        let head = Frozen(match get("output.weight")? {
            Some(w) => w,
            None => embed.clone(),
        });
        let output_norm = need(get, "output_norm.weight")?;
        let mut blocks = Vec::with_capacity(shape.n_layer);
        for il in 0..shape.n_layer {
            let mut proj = |stem: &str| -> Result<Proj> {
                let name = format!("blk.{il}.{stem}.weight");
                let weight = get(&name)?.with_context(|| format!("the model has no tensor `{name}`"))?;
                let bias = get(&format!("blk.{il}.{stem}.bias"))?;
                let adapter = if lora.targets.iter().any(|t| t == stem) { Some(new_lora(&weight, lora, rng)?) } else { None };
                Ok(Proj { name, weight: Frozen(weight), bias, lora: adapter })
            };
            let (q, k, v, o) = (proj("attn_q")?, proj("attn_k")?, proj("attn_v")?, proj("attn_output")?);
            let (gate, up, down) = (proj("ffn_gate")?, proj("ffn_up")?, proj("ffn_down")?);
            let mut opt = |n: &str| get(&format!("blk.{il}.{n}.weight"));
            blocks.push(Block {
                attn_norm: opt("attn_norm")?.context("missing attn_norm")?,
                q_norm: opt("attn_q_norm")?,
                k_norm: opt("attn_k_norm")?,
                post_attn_norm: opt("post_attention_norm")?,
                ffn_norm: opt("ffn_norm")?.context("missing ffn_norm")?,
                post_ffn_norm: opt("post_ffw_norm")?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                local: shape.is_local(il),
            });
        }
        Ok(Self { shape, embed, head, output_norm, blocks, dtype })
    }

    /// Every projection, in block order (q, k, v, o, gate, up, down).
    pub fn projections(&self) -> impl Iterator<Item = &Proj> {
        self.blocks.iter().flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])
    }

    /// The trainable tensors, with stable names (`blk.3.attn_q.lora_a`).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for p in self.projections() {
            if let Some(l) = &p.lora {
                let stem = p.name.trim_end_matches(".weight");
                out.push((format!("{stem}.lora_a"), l.a.clone()));
                out.push((format!("{stem}.lora_b"), l.b.clone()));
            }
        }
        out
    }

    /// Final-normed hidden states `[T, n_embd]` of a sequence starting at position 0.
    pub fn hidden(&self, tokens: &[u32]) -> Result<Tensor> {
        let s = &self.shape;
        let t = tokens.len();
        let dev = Device::Cpu;
        let ids = Tensor::new(tokens, &dev)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        if s.gemma {
            x = (x * (s.n_embd as f64).sqrt())?;
        }
        let global = Rope::new(t, s.n_rot, s.rope_base, s.rope_freq_scale, self.dtype)?;
        let local = match s.sliding {
            Some((_, _, base)) => Some(Rope::new(t, s.n_rot, base, 1.0, self.dtype)?),
            None => None,
        };
        let full_mask = mask(t, None, self.dtype)?;
        let local_mask = match s.sliding {
            Some((w, _, _)) => Some(mask(t, Some(w), self.dtype)?),
            None => None,
        };
        for b in &self.blocks {
            let (rope, m) = match (b.local, &local, &local_mask) {
                (true, Some(r), Some(m)) => (r, m),
                _ => (&global, &full_mask),
            };
            x = self.block(b, &x, rope, m)?;
        }
        rms_norm(&x, &self.output_norm, s.rms_eps)
    }

    /// Logits `[rows, vocab]` of hidden states `[rows, n_embd]`.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self.head.forward(h)?;
        Ok(match self.shape.softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn block(&self, b: &Block, x: &Tensor, rope: &Rope, mask: &Tensor) -> Result<Tensor> {
        let s = &self.shape;
        let t = x.dim(0)?;
        let (nh, nkv, hd) = (s.n_head, s.n_head_kv, s.head_dim);
        let h = rms_norm(x, &b.attn_norm, s.rms_eps)?;
        let mut q = b.q.forward(&h)?.reshape((t, nh, hd))?;
        let mut k = b.k.forward(&h)?.reshape((t, nkv, hd))?;
        let v = b.v.forward(&h)?.reshape((t, nkv, hd))?;
        if let Some(w) = &b.q_norm {
            q = rms_norm(&q, w, s.rms_eps)?;
        }
        if let Some(w) = &b.k_norm {
            k = rms_norm(&k, w, s.rms_eps)?;
        }
        let q = rope.apply(&q, s.rope_interleaved)?.transpose(0, 1)?.contiguous()?;
        let k = repeat_kv(&rope.apply(&k, s.rope_interleaved)?.transpose(0, 1)?, nh / nkv)?;
        let v = repeat_kv(&v.transpose(0, 1)?, nh / nkv)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask)?;
        let attn = softmax(&scores)?.matmul(&v)?.transpose(0, 1)?.reshape((t, nh * hd))?;
        let mut o = b.o.forward(&attn)?;
        if let Some(w) = &b.post_attn_norm {
            o = rms_norm(&o, w, s.rms_eps)?;
        }
        let x = (x + o)?;
        let h = rms_norm(&x, &b.ffn_norm, s.rms_eps)?;
        let gate = b.gate.forward(&h)?;
        let act = if s.gemma { gate.gelu()? } else { gate.silu()? };
        let mut d = b.down.forward(&(act * b.up.forward(&h)?)?)?;
        if let Some(w) = &b.post_ffn_norm {
            d = rms_norm(&d, w, s.rms_eps)?;
        }
        Ok((x + d)?)
    }
}

/// PEFT's initialisation: A uniform in ±1/sqrt(in) (kaiming-uniform with a = sqrt(5)),
/// B zero.
fn new_lora(weight: &Tensor, cfg: &LoraConfig, rng: &mut impl rand::Rng) -> Result<Lora> {
    let (out, inp) = weight.dims2()?;
    let bound = 1.0 / (inp as f64).sqrt();
    let a: Vec<f64> = (0..cfg.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
    let a = Tensor::from_vec(a, (cfg.rank, inp), &Device::Cpu)?.to_dtype(weight.dtype())?;
    let b = Tensor::zeros((out, cfg.rank), weight.dtype(), &Device::Cpu)?;
    Ok(Lora { a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scale: cfg.alpha as f64 / cfg.rank as f64 })
}

/// `[H, T, hd]` key/value heads → `[H * group, T, hd]`, query head `h` reading head `h / group`.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x.contiguous()?);
    }
    let (h, t, d) = x.dims3()?;
    Ok(x.unsqueeze(1)?.broadcast_as((h, group, t, d))?.reshape((h * group, t, d))?)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
}

/// Softmax over the last dimension (the max is a constant shift: no gradient through it).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    Ok(shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?)
}

/// Additive causal mask `[T, T]` (0 where visible, -inf elsewhere), optionally limited
/// to the last `window` positions.
fn mask(t: usize, window: Option<usize>, dtype: DType) -> Result<Tensor> {
    let m: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i && window.is_none_or(|w| i - j < w) { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Tensor::from_vec(m, (t, t), &Device::Cpu)?.to_dtype(dtype)?)
}

/// cos/sin of each position's rotation angles, `[T, 1, n_rot / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    n_rot: usize,
}

impl Rope {
    fn new(t: usize, n_rot: usize, base: f64, freq_scale: f64, dtype: DType) -> Result<Self> {
        let half = n_rot / 2;
        let inv: Vec<f64> = (0..half).map(|i| base.powf(-2.0 * i as f64 / n_rot as f64) * freq_scale).collect();
        let angles: Vec<f64> = (0..t).flat_map(|p| inv.iter().map(move |f| p as f64 * f)).collect();
        // Rounded through f32 as the engine computes them.
        let table = |f: fn(f64) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
            Ok(Tensor::from_vec(v, (t, 1, half), &Device::Cpu)?.to_dtype(dtype)?)
        };
        Ok(Self { cos: table(f64::cos)?, sin: table(f64::sin)?, n_rot })
    }

    /// Rotates the first `n_rot` dims of each head of `x` `[T, H, hd]`.
    fn apply(&self, x: &Tensor, interleaved: bool) -> Result<Tensor> {
        let (t, h, hd) = x.dims3()?;
        let half = self.n_rot / 2;
        let rot = x.narrow(2, 0, self.n_rot)?;
        let (x1, x2) = if interleaved {
            let pairs = rot.reshape((t, h, half, 2))?;
            (pairs.narrow(3, 0, 1)?.squeeze(3)?, pairs.narrow(3, 1, 1)?.squeeze(3)?)
        } else {
            (rot.narrow(2, 0, half)?, rot.narrow(2, half, half)?)
        };
        let r1 = (x1.broadcast_mul(&self.cos)? - x2.broadcast_mul(&self.sin)?)?;
        let r2 = (x1.broadcast_mul(&self.sin)? + x2.broadcast_mul(&self.cos)?)?;
        let rotated = if interleaved { Tensor::stack(&[r1, r2], 3)?.reshape((t, h, self.n_rot))? } else { Tensor::cat(&[r1, r2], 2)? };
        if self.n_rot == hd {
            Ok(rotated)
        } else {
            Ok(Tensor::cat(&[rotated, x.narrow(2, self.n_rot, hd - self.n_rot)?], 2)?)
        }
    }
}
