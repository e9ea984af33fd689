//! Hyperparameters read from GGUF metadata (`{arch}.*` keys).
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "gemma3" => Self::Gemma3,
            other => {
                bail!("unsupported model architecture `{other}` (supported: llama, qwen2, gemma3)")
            }
        })
    }
}

/// How RoPE pairs the dimensions of a head (llama.cpp's rope_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama, whose GGUF q/k weights are permuted for it.
    Interleaved,
    /// Halves (i, i + n/2): qwen2, gemma3.
    Neox,
}

#[derive(Debug, Clone)]
pub struct Hparams {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    /// Position multiplier (1 / linear scaling factor) for global layers.
    pub rope_freq_scale: f32,
    pub rms_eps: f32,
    /// Multiplier applied to q·k before the softmax.
    pub attn_scale: f32,
    /// Sliding-window attention (gemma3 local layers): window size and local rope base.
    pub sliding_window: Option<SlidingWindow>,
    pub final_logit_softcap: Option<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct SlidingWindow {
    pub size: usize,
    /// Every `global_every`-th layer (1-based) attends globally.
    pub global_every: usize,
    pub local_rope_base: f32,
}

impl Hparams {
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = Metadata(content);
        let arch_name = md.string("general.architecture")?;
        let arch = Arch::from_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");

        let n_layer = md.usize(&key("block_count"))?;
        let n_embd = md.usize(&key("embedding_length"))?;
        let n_head = md.usize(&key("attention.head_count"))?;
        let n_head_kv = md.opt_usize(&key("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            bail!("invalid head counts: {n_head} query heads, {n_head_kv} kv heads");
        }
        let head_dim = match md.opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None => n_embd / n_head,
        };
        if let Some(v) = md.opt_usize(&key("attention.value_length"))? {
            if v != head_dim {
                bail!("key length {head_dim} != value length {v} is not supported");
            }
        }
        let n_rot = md.opt_usize(&key("rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            bail!("invalid rope dimension count {n_rot} for head size {head_dim}");
        }
        let rope_base = md.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let rope_freq_scale = rope_freq_scale(&md, &key)?;
        let rms_eps = md.opt_f32(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6);
        let final_logit_softcap = md.opt_f32(&key("final_logit_softcapping"))?.filter(|c| *c > 0.0);

        let (rope_style, sliding_window) = match arch {
            Arch::Llama => (RopeStyle::Interleaved, None),
            Arch::Qwen2 => (RopeStyle::Neox, None),
            Arch::Gemma3 => {
                // llama.cpp: gemma3 uses a 5-local/1-global layer pattern and rope base 10k locally.
                let window = md.opt_usize(&key("attention.sliding_window"))?.unwrap_or(4096);
                let global_every = md.opt_usize(&key("attention.sliding_window_pattern"))?.unwrap_or(6).max(1);
                (RopeStyle::Neox, Some(SlidingWindow { size: window.max(1), global_every, local_rope_base: 10_000.0 }))
            }
        };

        Ok(Self {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_style,
            rope_base,
            rope_freq_scale,
            rms_eps,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window,
            final_logit_softcap,
        })
    }

    /// Whether layer `il` uses sliding-window (local) attention.
    pub fn is_local_layer(&self, il: usize) -> bool {
        match self.sliding_window {
            Some(sw) => !(il + 1).is_multiple_of(sw.global_every),
            None => false,
        }
    }
}

fn rope_freq_scale(md: &Metadata, key: &dyn Fn(&str) -> String) -> Result<f32> {
    if let Some(scale) = md.opt_f32(&key("rope.scale_linear"))? {
        if scale > 0.0 {
            return Ok(1.0 / scale);
        }
    }
    let kind = md.opt_string(&key("rope.scaling.type"))?;
    match kind.as_deref() {
        None | Some("none") => Ok(1.0),
        Some("linear") => {
            let factor = md.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
            Ok(if factor > 0.0 { 1.0 / factor } else { 1.0 })
        }
        Some(other) => bail!("rope scaling `{other}` is not supported"),
    }
}

/// Typed, tolerant reads of GGUF metadata (integers may be stored in any width).
struct Metadata<'a>(&'a Content);

impl Metadata<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.metadata.get(key)
    }

    fn string(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => bail!("metadata `{key}` is not a string"),
            None => bail!("metadata `{key}` is missing"),
        }
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!("metadata `{key}` is not a string"),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(v) => Ok(v),
            None => bail!("metadata `{key}` is missing"),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n: i128 = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            // Per-layer arrays (e.g. head counts): only uniform values are supported.
            Value::Array(items) => {
                let mut it = items.iter();
                let first = match it.next() {
                    Some(Value::U32(x)) => *x,
                    Some(Value::I32(x)) if *x >= 0 => *x as u32,
                    _ => bail!("metadata `{key}` is not an integer array"),
                };
                if !it.all(|v| matches!(v, Value::U32(x) if *x == first) || matches!(v, Value::I32(x) if *x as i64 == first as i64)) {
                    bail!("metadata `{key}` varies per layer, which is not supported");
                }
                first as i128
            }
            _ => bail!("metadata `{key}` is not an integer"),
        };
        usize::try_from(n).map(Some).map_err(|_| candle_core::Error::Msg(format!("metadata `{key}` is out of range")))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        Ok(match self.get(key) {
            None => None,
            Some(Value::F32(x)) => Some(*x),
            Some(Value::F64(x)) => Some(*x as f32),
            Some(_) => bail!("metadata `{key}` is not a float"),
        })
    }
}
