//! Row kernels on `[rows, width]` f32 matrices, in place on a GEMM's output
//! (which already carries its bias): residual + layer norm, GELU, attention,
//! pooling. Work is split across the rayon pool the GEMMs use, so no second
//! set of threads competes.

use rayon::prelude::*;

use crate::math::{exp, simd_fn};
pub(super) use crate::math::gelu;

/// Rows handed to one rayon task: enough work to outweigh the task's overhead.
const ROWS_PER_TASK: usize = 16;

pub(super) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

/// In place: every row becomes `(x - mean) / sqrt(var + eps) * weight + bias`.
pub(super) fn layer_norm(x: &mut [f32], norm: &Norm) {
    let width = norm.weight.len();
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|rows| normalize_rows(rows, None, norm));
}

/// In place: `x = layer_norm(x + residual)`.
pub(super) fn residual_norm(x: &mut [f32], residual: &[f32], norm: &Norm) {
    let width = norm.weight.len();
    x.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(residual.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(rows, res)| normalize_rows(rows, Some(res), norm));
}

simd_fn! {
    fn normalize_rows(rows: &mut [f32], residual: Option<&[f32]>, norm: &Norm) {
        let width = norm.weight.len();
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            if let Some(res) = residual {
                row.iter_mut().zip(&res[i * width..][..width]).for_each(|(v, r)| *v += r);
            }
            let n = width as f32;
            let mean = sum(row) / n;
            row.iter_mut().for_each(|v| *v -= mean);
            let var = sum_squares(row) / n;
            let inv = 1.0 / (var + norm.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
                *v = *v * inv * w + b;
            }
        }
    }
}

/// Sums in 8 lanes: a float sum in order is one long dependency chain.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    lanes(x, |acc, c| acc.iter_mut().zip(c).for_each(|(a, v)| *a += v))
}

#[inline(always)]
fn sum_squares(x: &[f32]) -> f32 {
    lanes(x, |acc, c| acc.iter_mut().zip(c).for_each(|(a, v)| *a += v * v))
}

#[inline(always)]
fn lanes(x: &[f32], add: impl Fn(&mut [f32; 8], &[f32])) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    chunks.for_each(|c| add(&mut acc, c));
    add(&mut acc, rest);
    acc.iter().sum()
}

/// Multi-head self-attention of packed sequences. `qkv` rows are
/// `[q | k | v]` (`3 * heads * head_dim` wide); `spans` are each sequence's
/// `(first row, length)`. Every token attends to all tokens of its own
/// sequence (no padding exists to mask). Writes the `[rows, heads * head_dim]`
/// context; each (sequence, head) pair is one task.
pub(super) fn attention(qkv: &[f32], spans: &[(usize, usize)], heads: usize, head_dim: usize, context: &mut [f32]) {
    let hidden = heads * head_dim;
    assert_eq!(context.len() * 3, qkv.len());
    assert!(spans.iter().all(|&(start, len)| (start + len) * hidden <= context.len()));
    let out = SendPtr(context.as_mut_ptr());
    (0..spans.len() * heads).into_par_iter().for_each(|t| {
        let ((start, len), h) = (spans[t / heads], t % heads);
        let out = &out;
        let qkv = &qkv[start * 3 * hidden..(start + len) * 3 * hidden];
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            head_attention(qkv, len, h, heads, head_dim, &mut s);
            for (i, row) in s[..len * head_dim].chunks_exact(head_dim).enumerate() {
                // SAFETY: in bounds (checked above), and each task writes only
                // its head's columns of its sequence's rows.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add((start + i) * hidden + h * head_dim), head_dim) }
            }
        });
    });
}

struct SendPtr(*mut f32);
// SAFETY: shared only with tasks that write disjoint parts of the buffer.
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Each thread's attention output, transposed keys and scores, reused across calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

simd_fn! {
    /// One head of one sequence of `len` tokens: leaves in `scratch[..len * d]`
    /// the head's output rows, `softmax(q_i . K^T / sqrt(d)) @ V`.
    fn head_attention(qkv: &[f32], len: usize, h: usize, heads: usize, d: usize, scratch: &mut Vec<f32>) {
        let hidden = heads * d;
        let scale = 1.0 / (d as f32).sqrt();
        // The head's keys transposed (`[d][padded]`, zero past `len`), so that a
        // query's scores are a sum of rows: whole vectors across keys, no
        // horizontal sums, no ragged tail.
        let padded = len.next_multiple_of(8);
        scratch.clear();
        scratch.resize(len * d + d * padded + QUERIES * padded, 0.0);
        let (out, rest) = scratch.split_at_mut(len * d);
        let (keys_t, scores) = rest.split_at_mut(d * padded);
        for j in 0..len {
            for (k, &x) in qkv[j * 3 * hidden + hidden + h * d..][..d].iter().enumerate() {
                keys_t[k * padded + j] = x;
            }
        }
        for (first, out) in out.chunks_mut(QUERIES * d).enumerate().map(|(c, o)| (c * QUERIES, o)) {
            // Scores of `QUERIES` queries (the last block repeats its last
            // query) against eight keys at a time, held in registers across `d`.
            let query = |q: usize, k: usize| qkv[(first + q).min(len - 1) * 3 * hidden + h * d + k];
            for b in 0..padded / 8 {
                let mut acc = [[0f32; 8]; QUERIES];
                for (k, keys) in keys_t[b * 8..].chunks(padded).enumerate() {
                    let keys: &[f32; 8] = keys[..8].try_into().expect("8 keys");
                    for (q, acc) in acc.iter_mut().enumerate() {
                        let x = query(q, k);
                        acc.iter_mut().zip(keys).for_each(|(a, k)| *a += x * k);
                    }
                }
                for (q, acc) in acc.iter().enumerate() {
                    scores[q * padded + b * 8..][..8].iter_mut().zip(acc).for_each(|(s, a)| *s = a * scale);
                }
            }
            for (o, scores) in out.chunks_exact_mut(d).zip(scores.chunks_exact_mut(padded)) {
                let scores = &mut scores[..len];
                softmax(scores);
                for (j, &p) in scores.iter().enumerate() {
                    let value = &qkv[j * 3 * hidden + 2 * hidden + h * d..][..d];
                    o.iter_mut().zip(value).for_each(|(o, v)| *o += p * v);
                }
            }
        }
    }
}

/// Queries scored together by `head_attention`: each key vector loaded serves all of them.
const QUERIES: usize = 4;

#[inline(always)]
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    x.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum(x);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// The mean of a sequence's rows, scaled to unit length (as
/// sentence-transformers' Pooling + Normalize: norm clamped at 1e-12).
pub(super) fn mean_pool_normalized(rows: &[f32], width: usize) -> Vec<f32> {
    let mut mean = vec![0f32; width];
    let n = rows.len() / width;
    for row in rows.chunks_exact(width) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f32);
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_vector_has_unit_length() {
        let v = mean_pool_normalized(&[1.0, 2.0, 3.0, 4.0], 2);
        // mean of [1, 2] and [3, 4] is [2, 3]
        assert!((v[0] - 2.0 / 13f32.sqrt()).abs() < 1e-6 && (v[1] - 3.0 / 13f32.sqrt()).abs() < 1e-6);
    }
}
