//! One decoder-only transformer covering llama, qwen2 and gemma3. The three differ
//! only in optional pieces, each switched on by the tensors/metadata the GGUF has:
//! q/k/v biases (qwen2), per-head q/k norms, post-attention/post-FFN norms, scaled
//! embeddings, GELU MLP, sliding-window local layers and logit softcapping (gemma3).
use super::cache::SeqCache;
use super::hparams::{Arch, Hparams};
use super::ops::{apply_rope, gelu_like_llama_cpp, rms_norm, softmax_last_dim, RopeAngles};
use super::weights::{Embedding, GgufReader, Linear, MatMul};
use candle_core::{bail, DType, Device, Result, Tensor};

pub struct Decoder {
    hp: Hparams,
    vocab_size: usize,
    embedding: Embedding,
    /// gemma3 multiplies embeddings by sqrt(n_embd).
    embedding_scale: Option<f64>,
    layers: Vec<Layer>,
    output_norm: Tensor,
    lm_head: MatMul,
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<Tensor>,
    /// Some(window) on gemma3's local layers.
    window: Option<usize>,
}

impl Decoder {
    pub fn load(hp: Hparams, mut gguf: GgufReader) -> Result<Self> {
        let token_embd = gguf.qtensor("token_embd.weight")?;
        let (vocab_size, hidden) = token_embd.shape().dims2()?;
        if hidden != hp.n_embd {
            bail!("token_embd has width {hidden}, metadata says {}", hp.n_embd);
        }
        // Tied output: the lm_head reuses the (quantized) embedding table.
        let lm_head = if gguf.has("output.weight") {
            gguf.matmul("output.weight")?
        } else {
            MatMul::new(token_embd.clone())?
        };
        let embedding = Embedding::new(token_embd)?;
        let output_norm = gguf.dense("output_norm.weight")?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |name: &str| format!("blk.{il}.{name}");
            layers.push(Layer {
                attn_norm: gguf.dense(&p("attn_norm.weight"))?,
                q: gguf.linear(&p("attn_q"))?,
                k: gguf.linear(&p("attn_k"))?,
                v: gguf.linear(&p("attn_v"))?,
                o: gguf.linear(&p("attn_output"))?,
                q_norm: gguf.opt_dense(&p("attn_q_norm.weight"))?,
                k_norm: gguf.opt_dense(&p("attn_k_norm.weight"))?,
                post_attn_norm: gguf.opt_dense(&p("post_attention_norm.weight"))?,
                ffn_norm: gguf.dense(&p("ffn_norm.weight"))?,
                gate: gguf.linear(&p("ffn_gate"))?,
                up: gguf.linear(&p("ffn_up"))?,
                down: gguf.linear(&p("ffn_down"))?,
                post_ffn_norm: gguf.opt_dense(&p("post_ffw_norm.weight"))?,
                window: match hp.sliding_window {
                    Some(sw) if hp.is_local_layer(il) => Some(sw.size),
                    _ => None,
                },
            });
        }
        let embedding_scale = (hp.arch == Arch::Gemma3).then(|| (hp.n_embd as f32).sqrt() as f64);
        Ok(Self {
            hp,
            vocab_size,
            embedding,
            embedding_scale,
            layers,
            output_norm,
            lm_head,
        })
    }

    pub fn new_cache(&self, capacity: usize) -> Result<SeqCache> {
        SeqCache::new(
            self.hp.n_layer,
            self.hp.n_head_kv,
            self.hp.head_dim,
            capacity,
        )
    }

    /// Runs `counts[s]` new tokens of sequence `s` (taken in order from `tokens`) through the
    /// model, appending them to `caches[s]`. Returns f32 logits for the rows in `output_rows`
    /// (indices into `tokens`); with None, only fills the caches and returns an empty tensor.
    pub fn forward(
        &self,
        tokens: &[u32],
        counts: &[usize],
        caches: &mut [&mut SeqCache],
        output_rows: Option<&[u32]>,
    ) -> Result<Tensor> {
        if counts.len() != caches.len()
            || counts.iter().sum::<usize>() != tokens.len()
            || tokens.is_empty()
        {
            bail!(
                "forward: {} tokens do not split into {} sequences as {counts:?}",
                tokens.len(),
                caches.len()
            );
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab_size
            );
        }
        let mut positions = Vec::with_capacity(tokens.len());
        for (cache, &n) in caches.iter().zip(counts) {
            if cache.len() + n > cache.capacity() {
                bail!(
                    "sequence of {} tokens does not fit its KV cache of {}",
                    cache.len() + n,
                    cache.capacity()
                );
            }
            positions.extend(cache.len()..cache.len() + n);
        }
        let hp = &self.hp;
        let global_angles = RopeAngles::new(&positions, hp.n_rot, hp.rope_base, hp.rope_freq_scale);
        let local_angles = hp
            .sliding_window
            .map(|sw| RopeAngles::new(&positions, hp.n_rot, sw.local_rope_base, 1.0));

        let mut x = self.embedding.lookup(tokens)?;
        if let Some(scale) = self.embedding_scale {
            x = (x * scale)?;
        }
        for (il, layer) in self.layers.iter().enumerate() {
            // gemma3's local layers rotate with their own base.
            let angles = match (layer.window, &local_angles) {
                (Some(_), Some(local)) => local,
                _ => &global_angles,
            };
            x = self.layer_forward(il, layer, &x, angles, counts, caches)?;
        }
        for (cache, &n) in caches.iter_mut().zip(counts) {
            cache.len += n;
        }

        let Some(output_rows) = output_rows else {
            return Tensor::zeros((0, self.vocab_size), DType::F32, &Device::Cpu);
        };
        let rows = Tensor::new(output_rows, &Device::Cpu)?;
        let x = x.index_select(&rows, 0)?;
        let x = rms_norm(&x, &self.output_norm, hp.rms_eps)?;
        let mut logits = self.lm_head.forward(&x)?;
        if let Some(cap) = hp.final_logit_softcap {
            logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
        }
        logits.to_dtype(DType::F32)
    }

    fn layer_forward(
        &self,
        il: usize,
        layer: &Layer,
        x: &Tensor,
        angles: &RopeAngles,
        counts: &[usize],
        caches: &mut [&mut SeqCache],
    ) -> Result<Tensor> {
        let hp = &self.hp;
        let rows = x.dim(0)?;
        let h = rms_norm(x, &layer.attn_norm, hp.rms_eps)?;
        let mut q = layer
            .q
            .forward(&h)?
            .reshape((rows, hp.n_head, hp.head_dim))?;
        let mut k = layer
            .k
            .forward(&h)?
            .reshape((rows, hp.n_head_kv, hp.head_dim))?;
        let v = layer
            .v
            .forward(&h)?
            .reshape((rows, hp.n_head_kv, hp.head_dim))?;
        if let Some(w) = &layer.q_norm {
            q = rms_norm(&q, w, hp.rms_eps)?;
        }
        if let Some(w) = &layer.k_norm {
            k = rms_norm(&k, w, hp.rms_eps)?;
        }
        let q = apply_rope(&q, angles, hp.rope_style)?;
        let k = apply_rope(&k, angles, hp.rope_style)?;

        // Attention is per sequence, against its own cache.
        let mut outs = Vec::with_capacity(caches.len());
        let mut row = 0;
        for (cache, &n) in caches.iter_mut().zip(counts) {
            let out = self.attend(
                il,
                layer.window,
                cache,
                &q.narrow(0, row, n)?,
                &k.narrow(0, row, n)?,
                &v.narrow(0, row, n)?,
            )?;
            outs.push(out);
            row += n;
        }
        let attn = Tensor::cat(&outs, 0)?;
        let mut attn = layer.o.forward(&attn)?;
        if let Some(w) = &layer.post_attn_norm {
            attn = rms_norm(&attn, w, hp.rms_eps)?;
        }
        let x = (x + attn)?;

        let h = rms_norm(&x, &layer.ffn_norm, hp.rms_eps)?;
        let gate = layer.gate.forward(&h)?;
        let gate = match hp.arch {
            Arch::Gemma3 => gelu_like_llama_cpp(&gate)?,
            Arch::Llama | Arch::Qwen2 => gate.silu()?,
        };
        let mut ffn = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
        if let Some(w) = &layer.post_ffn_norm {
            ffn = rms_norm(&ffn, w, hp.rms_eps)?;
        }
        x + ffn
    }

    /// Causal (optionally sliding-window) attention of `n` new rows of one sequence.
    /// `q`: `[n, n_head, head_dim]`, `k`/`v`: `[n, n_head_kv, head_dim]`; returns `[n, n_head * head_dim]`.
    fn attend(
        &self,
        il: usize,
        window: Option<usize>,
        cache: &mut SeqCache,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let hp = &self.hp;
        let n = q.dim(0)?;
        let start = cache.len();
        let end = start + n;
        cache.write(
            il,
            start,
            &k.transpose(0, 1)?.contiguous()?,
            &v.transpose(0, 1)?.contiguous()?,
        )?;

        // The first new row sees keys after `start - window`; later rows are masked below.
        let kv_start = window.map_or(0, |w| (start + 1).saturating_sub(w));
        let kv_len = end - kv_start;
        let (keys, values) = cache.read(il, kv_start, end)?; // [n_head_kv, kv_len, head_dim]

        // Query head h reads kv head h / group: group the query heads under their kv head.
        let group = hp.n_head / hp.n_head_kv;
        let q = q
            .transpose(0, 1)?
            .contiguous()?
            .reshape((hp.n_head_kv, group * n, hp.head_dim))?;
        let mut scores = (q.matmul(&keys.t()?)? * hp.attn_scale as f64)?; // [n_head_kv, group * n, kv_len]
        if n > 1 {
            let mask = causal_mask(start, n, kv_start, kv_len, window)?;
            scores = scores
                .reshape((hp.n_head_kv, group, n, kv_len))?
                .broadcast_add(&mask)?
                .reshape((hp.n_head_kv, group * n, kv_len))?;
        }
        let probs = softmax_last_dim(&scores)?;
        let out = probs.matmul(&values)?; // [n_head_kv, group * n, head_dim]
        out.reshape((hp.n_head, n, hp.head_dim))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, hp.n_head * hp.head_dim))
    }
}

/// `[n, kv_len]` additive mask: row t (position start + t) sees key kv_start + j when it
/// is not in the future and, with a window, closer than `window` positions.
fn causal_mask(
    start: usize,
    n: usize,
    kv_start: usize,
    kv_len: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    let mut mask = vec![0f32; n * kv_len];
    for t in 0..n {
        let qpos = start + t;
        for j in 0..kv_len {
            let kpos = kv_start + j;
            let visible = kpos <= qpos && window.is_none_or(|w| qpos - kpos < w);
            if !visible {
                mask[t * kv_len + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(mask, (n, kv_len), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::causal_mask;

    fn visible(mask: &[Vec<f32>], row: usize) -> Vec<usize> {
        mask[row]
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(j, _)| j)
            .collect()
    }

    #[test]
    fn causal_mask_hides_future_keys() {
        let mask = causal_mask(2, 3, 0, 5, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(visible(&mask, 0), vec![0, 1, 2]);
        assert_eq!(visible(&mask, 2), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn sliding_window_keeps_the_last_window_positions() {
        // Rows at positions 10..13 with window 4; keys start at 10 + 1 - 4 = 7.
        let mask = causal_mask(10, 3, 7, 6, Some(4))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(visible(&mask, 0), vec![0, 1, 2, 3]); // positions 7..=10
        assert_eq!(visible(&mask, 2), vec![2, 3, 4, 5]); // positions 9..=12
    }
}
