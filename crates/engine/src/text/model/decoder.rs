//! One decoder-only transformer covering llama, qwen2 and gemma3. The three differ
//! only in optional pieces, each switched on by the tensors/metadata the GGUF has:
//! q/k/v biases (qwen2), per-head q/k norms, post-attention/post-FFN norms, scaled
//! embeddings, GELU MLP, sliding-window local layers and logit softcapping (gemma3).
use super::cache::SeqCache;
use super::head::OutputHead;
use super::hparams::{Arch, Hparams};
use super::ops::{add_assign, apply_rope, gelu_mul, rms_norm, rms_norm_into, silu_mul, RopeAngles};
use super::threads::StepThreads;
use super::weights::{Embedding, GgufReader, Linear, MatMul};
use crate::attention;
use candle_core::{bail, Device, Result, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

pub struct Decoder {
    hp: Hparams,
    vocab_size: usize,
    embedding: Embedding,
    /// gemma3 multiplies embeddings by sqrt(n_embd).
    embedding_scale: Option<f32>,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    head: OutputHead,
    /// The pools its steps run in, and how many threads a decode step takes.
    pub(super) step_threads: StepThreads,
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<Vec<f32>>,
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
        let head_weight = if gguf.has("output.weight") { gguf.qtensor("output.weight")? } else { token_embd.clone() };
        let head = OutputHead::new(&head_weight, MatMul::new(Arc::clone(&head_weight))?, hp.final_logit_softcap)?;
        drop(head_weight);
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
        let embedding_scale = (hp.arch == Arch::Gemma3).then(|| (hp.n_embd as f32).sqrt());
        Ok(Self { hp, vocab_size, embedding, embedding_scale, layers, output_norm, head, step_threads: StepThreads::new() })
    }

    pub fn new_cache(&self, capacity: usize) -> Result<SeqCache> {
        SeqCache::new(self.hp.n_layer, self.hp.n_head_kv, self.hp.head_dim, capacity)
    }

    /// Runs `counts[s]` new tokens of sequence `s` (taken in order from `tokens`) through the
    /// model, appending them to `caches[s]`. Returns f32 logits for the rows in `output_rows`
    /// (indices into `tokens`); with None, only fills the caches and returns an empty tensor.
    pub fn forward(&self, tokens: &[u32], counts: &[usize], caches: &mut [&mut SeqCache], output_rows: Option<&[u32]>) -> Result<Tensor> {
        let rows = output_rows.unwrap_or(&[]);
        let h = self.hidden(tokens, counts, caches, rows)?;
        let logits = if rows.is_empty() { Vec::new() } else { self.head.logits(&h)? };
        Tensor::from_vec(logits, (rows.len(), self.vocab_size), &Device::Cpu)
    }

    pub fn head(&self) -> &OutputHead {
        &self.head
    }

    /// Like [`Self::forward`], returning the final-normed hidden states of `output_rows`
    /// (the output head's input).
    pub fn hidden(&self, tokens: &[u32], counts: &[usize], caches: &mut [&mut SeqCache], output_rows: &[u32]) -> Result<Vec<f32>> {
        if counts.len() != caches.len() || counts.iter().sum::<usize>() != tokens.len() || tokens.is_empty() {
            bail!("forward: {} tokens do not split into {} sequences as {counts:?}", tokens.len(), caches.len());
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            bail!("token id {bad} is outside the vocabulary of {} tokens", self.vocab_size);
        }
        let mut positions = Vec::with_capacity(tokens.len());
        for (cache, &n) in caches.iter().zip(counts) {
            if cache.len() + n > cache.capacity() {
                bail!("sequence of {} tokens does not fit its KV cache of {}", cache.len() + n, cache.capacity());
            }
            positions.extend(cache.len()..cache.len() + n);
        }
        let hp = &self.hp;
        let global_angles = RopeAngles::new(&positions, hp.n_rot, hp.rope_base, hp.rope_freq_scale);
        let local_angles = hp.sliding_window.map(|sw| RopeAngles::new(&positions, hp.n_rot, sw.local_rope_base, 1.0));

        let mut x = self.embedding.lookup(tokens)?;
        if let Some(scale) = self.embedding_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut scratch = Scratch::default();
        for (il, layer) in self.layers.iter().enumerate() {
            // gemma3's local layers rotate with their own base.
            let angles = match (layer.window, &local_angles) {
                (Some(_), Some(local)) => local,
                _ => &global_angles,
            };
            if let Err(e) = self.layer_forward(il, layer, &mut x, angles, counts, caches, &mut scratch) {
                caches.iter_mut().for_each(|c| c.rollback());
                return Err(e);
            }
        }
        for (cache, &n) in caches.iter_mut().zip(counts) {
            cache.commit(n);
        }

        let width = hp.n_embd;
        let mut h = Vec::with_capacity(output_rows.len() * width);
        for &r in output_rows {
            h.extend_from_slice(&x[r as usize * width..(r as usize + 1) * width]);
        }
        rms_norm(&mut h, &self.output_norm, hp.rms_eps);
        Ok(h)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        il: usize,
        layer: &Layer,
        x: &mut [f32],
        angles: &RopeAngles,
        counts: &[usize],
        caches: &mut [&mut SeqCache],
        s: &mut Scratch,
    ) -> Result<()> {
        let hp = &self.hp;
        let (hd, nh, nkv) = (hp.head_dim, hp.n_head, hp.n_head_kv);
        rms_norm_into(x, &layer.attn_norm, hp.rms_eps, &mut s.h);
        Linear::forward_many([&layer.q, &layer.k, &layer.v], &s.h, [&mut s.q, &mut s.k, &mut s.v])?;
        if let Some(w) = &layer.q_norm {
            rms_norm(&mut s.q, w, hp.rms_eps);
        }
        if let Some(w) = &layer.k_norm {
            rms_norm(&mut s.k, w, hp.rms_eps);
        }
        apply_rope(&mut s.q, nh, hd, angles, hp.rope_style);
        apply_rope(&mut s.k, nkv, hd, angles, hp.rope_style);

        // New keys/values go into each sequence's cache, then attention reads them there.
        let kv_width = nkv * hd;
        let mut row = 0;
        for (cache, &n) in caches.iter_mut().zip(counts) {
            let rows = row * kv_width..(row + n) * kv_width;
            cache.append(il, &s.k[rows.clone()], &s.v[rows]);
            row += n;
        }
        s.attn.clear();
        s.attn.resize(x.len() / hp.n_embd * nh * hd, 0.0);
        self.attend(il, layer.window, counts, caches, &s.q, &mut s.attn, &mut s.heads);

        layer.o.forward(&s.attn, &mut s.o)?;
        if let Some(w) = &layer.post_attn_norm {
            rms_norm(&mut s.o, w, hp.rms_eps);
        }
        add_assign(x, &s.o, hp.n_embd);

        rms_norm_into(x, &layer.ffn_norm, hp.rms_eps, &mut s.h);
        Linear::forward_many([&layer.gate, &layer.up], &s.h, [&mut s.gate, &mut s.up])?;
        let n_ff = s.gate.len() / (x.len() / hp.n_embd);
        match hp.arch {
            Arch::Gemma3 => gelu_mul(&mut s.gate, &s.up, n_ff),
            Arch::Llama | Arch::Qwen2 => silu_mul(&mut s.gate, &s.up, n_ff),
        }
        layer.down.forward(&s.gate, &mut s.o)?;
        if let Some(w) = &layer.post_ffn_norm {
            rms_norm(&mut s.o, w, hp.rms_eps);
        }
        add_assign(x, &s.o, hp.n_embd);
        Ok(())
    }

    /// Causal (optionally sliding-window) attention of the new rows of every sequence
    /// against its cache (which already holds them). `q`: rows of `n_head * head_dim`;
    /// writes `out` in the same shape. Work is split over (sequence, key/value head, run
    /// of rows, and for a single decode step query heads); the query heads that share a
    /// key/value head are computed together.
    #[allow(clippy::too_many_arguments)]
    fn attend(&self, il: usize, window: Option<usize>, counts: &[usize], caches: &[&mut SeqCache], q: &[f32], out: &mut [f32], heads_out: &mut Vec<f32>) {
        let hp = &self.hp;
        let (hd, nh) = (hp.head_dim, hp.n_head);
        let group = nh / hp.n_head_kv;
        let width = nh * hd;
        // Rows per task: a few dozen tasks per layer, so the pool's threads balance
        // (also when another process takes a core), each long enough to amortise itself.
        let total_rows: usize = counts.iter().sum();
        let nkv = hp.n_head_kv;
        let rows_per_task = (total_rows * nkv / 48).clamp(1, 32);
        // A decode step of one sequence has a task per key/value head: 3 of them
        // (SmolLM2) on 2 threads leave one thread idle for a third of the time. Then
        // each task's query heads are split in two; a query's arithmetic does not depend
        // on which others it is computed with. (Qwen's 2 tasks on 2 threads are not
        // split: both halves would read the head's keys and values.)
        let (threads, heads) = (rayon::current_num_threads(), counts.len() * nkv);
        let uneven = heads < 2 * threads && !heads.is_multiple_of(threads);
        let splits = if uneven && group > 1 { 2 } else { 1 };
        let mut tasks = Vec::new();
        let mut row = 0;
        let mut work = 0;
        for (s, &n) in counts.iter().enumerate() {
            let start = caches[s].len();
            for h in 0..nkv {
                for t0 in (0..n).step_by(rows_per_task) {
                    for part in 0..splits {
                        let heads = group * part / splits..group * (part + 1) / splits;
                        tasks.push(AttentionTask { seq: s, kv_head: h, heads, row0: row + t0, pos0: start + t0, rows: rows_per_task.min(n - t0) });
                    }
                }
            }
            work += n * (start + n) * nh;
            row += n;
        }
        // Each task writes its rows of its heads into its own piece of `heads_out`.
        heads_out.clear();
        heads_out.resize(q.len(), 0.0);
        let mut pieces = Vec::with_capacity(tasks.len());
        let mut rest = heads_out.as_mut_slice();
        for task in &tasks {
            let (piece, tail) = rest.split_at_mut(task.rows * task.columns(group, hd).len());
            pieces.push(piece);
            rest = tail;
        }
        let kv_width = nkv * hd;
        let run = |(task, piece): (&AttentionTask, &mut &mut [f32])| {
            let at = attention::HeadLayout { offset: task.kv_head * hd, stride: kv_width };
            let cols = task.columns(group, hd);
            let span = cols.len();
            // A few positions at a time (their rows of scores stay in L2).
            for t0 in (0..task.rows).step_by(ATTENTION_POSITIONS) {
                let t_end = (t0 + ATTENTION_POSITIONS).min(task.rows);
                // Both ends of the visible keys only move forward with the position.
                let all = visible_keys(task.pos0 + t0, window).start..visible_keys(task.pos0 + t_end - 1, window).end;
                CALL.with_borrow_mut(|(qs, ranges)| {
                    ranges.clear();
                    ranges.extend(
                        (t0..t_end)
                            .map(|t| visible_keys(task.pos0 + t, window))
                            .flat_map(|k| std::iter::repeat_n(k.start - all.start..k.end - all.start, task.heads.len())),
                    );
                    qs.clear();
                    (t0..t_end).for_each(|t| qs.extend_from_slice(&q[(task.row0 + t) * width + cols.start..][..span]));
                    let runs = |f: &mut dyn FnMut(&[half::f16], &[half::f16])| caches[task.seq].runs(il, all.start, all.end, f);
                    attention::attend(qs, hd, ranges, hp.attn_scale, at, runs, &mut piece[t0 * span..t_end * span]);
                });
            }
        };
        // Small problems (a decode step at short context) are not worth a trip through the pool.
        if work * hd < 1 << 18 {
            tasks.iter().zip(pieces.iter_mut()).for_each(run);
        } else {
            tasks.par_iter().zip(pieces.par_iter_mut()).for_each(run);
        }
        for (task, piece) in tasks.iter().zip(&pieces) {
            let cols = task.columns(group, hd);
            for (t, piece) in piece.chunks_exact(cols.len()).enumerate() {
                out[(task.row0 + t) * width..][cols.clone()].copy_from_slice(piece);
            }
        }
    }
}

/// Rows of one sequence attended against one key/value head, by some of its query heads.
struct AttentionTask {
    seq: usize,
    kv_head: usize,
    /// Which of the key/value head's query heads (counted within its group).
    heads: std::ops::Range<usize>,
    /// First row in `q`, and its position in the sequence.
    row0: usize,
    pos0: usize,
    rows: usize,
}

impl AttentionTask {
    /// Where the task's query heads lie in a row of q (and of the attention output).
    fn columns(&self, group: usize, hd: usize) -> std::ops::Range<usize> {
        let first = (self.kv_head * group + self.heads.start) * hd;
        first..first + self.heads.len() * hd
    }
}

/// Positions of a prompt attended together (each key block read once for all of them).
const ATTENTION_POSITIONS: usize = 4;

thread_local! {
    /// The queries of one attention call, gathered side by side, and their key ranges
    /// (reused: no allocation per call).
    static CALL: std::cell::RefCell<(Vec<f32>, Vec<std::ops::Range<usize>>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Key positions a query at `qpos` attends to: none in its future and, with a sliding
/// window, only the last `window` positions (itself included).
fn visible_keys(qpos: usize, window: Option<usize>) -> std::ops::Range<usize> {
    window.map_or(0, |w| (qpos + 1).saturating_sub(w))..qpos + 1
}

/// Buffers a forward pass reuses from layer to layer.
#[derive(Default)]
struct Scratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    /// Attention output grouped by task (head, run of rows) before it is interleaved.
    heads: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::visible_keys;

    #[test]
    fn queries_see_no_future_keys() {
        assert_eq!(visible_keys(0, None), 0..1);
        assert_eq!(visible_keys(4, None), 0..5);
    }

    #[test]
    fn sliding_window_keeps_the_last_window_positions() {
        assert_eq!(visible_keys(10, Some(4)), 7..11);
        assert_eq!(visible_keys(2, Some(4)), 0..3);
    }
}
