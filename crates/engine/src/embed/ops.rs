//! Row kernels on `[rows, width]` f32 matrices, in place on a GEMM's output
//! (which already carries its bias): residual + layer norm, GELU, attention
//! (with MPNet's relative position bias or without), pooling. Work is split
//! across the rayon pool the GEMMs use, so no second set of threads competes.

use rayon::prelude::*;

use super::mpnet::RelativeBias;
use crate::attention::{attend, HeadLayout};
use crate::linalg::SendPtr;
pub(super) use crate::math::gelu;
use crate::math::{dot, simd_fn, softmax_in_place, sum, sum_squares};

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
    x.par_chunks_mut(width * ROWS_PER_TASK).zip(residual.par_chunks(width * ROWS_PER_TASK)).for_each(|(rows, res)| normalize_rows(rows, Some(res), norm));
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

/// Multi-head self-attention of packed sequences. `qkv` rows are
/// `[q | k | v]` (`3 * heads * head_dim` wide); `spans` are each sequence's
/// `(first row, length)`. Every token attends to all tokens of its own
/// sequence (no padding exists to mask). Writes the `[rows, heads * head_dim]`
/// context; each (sequence, head) pair is one task.
pub(super) fn attention(qkv: &[f32], spans: &[(usize, usize)], heads: usize, head_dim: usize, context: &mut [f32]) {
    let scale = 1.0 / (head_dim as f32).sqrt();
    let at = HeadLayout { offset: 0, stride: head_dim };
    each_head(qkv, spans, heads, head_dim, context, 0, |_, len, gathered, _, out| {
        let (queries, rest) = gathered.split_at(len * head_dim);
        let (keys, values) = rest.split_at(len * head_dim);
        let ranges = vec![0..len; len];
        attend(queries, head_dim, &ranges, scale, at, |f| f(keys, values), out);
    });
}

/// As `attention`, with MPNet's relative position bias added to every score before the
/// softmax: `bias.head(h)[key - query + bias.center()]`. Plain loops over gathered rows
/// (sequences are at most a few hundred tokens; the GEMMs around it dominate).
pub(super) fn attention_with_bias(qkv: &[f32], spans: &[(usize, usize)], heads: usize, head_dim: usize, bias: &RelativeBias, context: &mut [f32]) {
    assert!(spans.iter().all(|&(_, len)| len <= bias.center() + 1));
    let scale = 1.0 / (head_dim as f32).sqrt();
    // One row of scores as scratch.
    each_head(qkv, spans, heads, head_dim, context, 1, |h, len, gathered, scores, out| {
        let biases = &bias.head(h)[bias.center() + 1 - len..][..2 * len - 1];
        biased_head(gathered, head_dim, scale, biases, scores, out);
    });
}

/// Runs `head(h, len, gathered, scratch, out)` for every (sequence, head) pair in parallel.
/// `gathered` holds the head's query, key and value rows densely, `len` each in that order
/// (rows of qkv are 4.5 KB apart, a stride at which a sequence's keys evict one another from
/// L1); `scratch` is `scratch_rows * len` floats; the `len` rows the head writes to `out`
/// are copied to its columns of `context`.
fn each_head(
    qkv: &[f32],
    spans: &[(usize, usize)],
    heads: usize,
    head_dim: usize,
    context: &mut [f32],
    scratch_rows: usize,
    head: impl Fn(usize, usize, &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    let hidden = heads * head_dim;
    assert_eq!(context.len() * 3, qkv.len());
    assert!(spans.iter().all(|&(start, len)| (start + len) * hidden <= context.len()));
    let out = SendPtr(context.as_mut_ptr());
    (0..spans.len() * heads).into_par_iter().for_each(|t| {
        let ((start, len), h) = (spans[t / heads], t % heads);
        let out = &out;
        let row = |i: usize, part: usize| &qkv[(start + i) * 3 * hidden + part * hidden + h * head_dim..][..head_dim];
        HEAD.with_borrow_mut(|buf| {
            buf.clear();
            for part in 0..3 {
                (0..len).for_each(|i| buf.extend_from_slice(row(i, part)));
            }
            buf.resize(4 * len * head_dim + scratch_rows * len, 0.0);
            let (gathered, rest) = buf.split_at_mut(3 * len * head_dim);
            let (scratch, heads_out) = rest.split_at_mut(scratch_rows * len);
            head(h, len, gathered, scratch, heads_out);
            for (i, o) in heads_out.chunks_exact(head_dim).enumerate() {
                // SAFETY: in bounds (checked above), and each task writes only its
                // head's columns of its sequence's rows.
                unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), out.0.add((start + i) * hidden + h * head_dim), head_dim) };
            }
        });
    });
}

simd_fn! {
    /// One head of one sequence: `gathered` holds its query, key and value rows (`len`
    /// each, in that order); `biases[key - query + len - 1]` is added to each score.
    fn biased_head(gathered: &[f32], head_dim: usize, scale: f32, biases: &[f32], scores: &mut [f32], out: &mut [f32]) {
        let len = scores.len();
        let (queries, rest) = gathered.split_at(len * head_dim);
        let (keys, values) = rest.split_at(len * head_dim);
        for (i, (q, o)) in queries.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)).enumerate() {
            let row_bias = &biases[len - 1 - i..][..len];
            for ((s, k), b) in scores.iter_mut().zip(keys.chunks_exact(head_dim)).zip(row_bias) {
                *s = dot(q, k) * scale + b;
            }
            softmax_in_place(scores);
            o.fill(0.0);
            for (p, v) in scores.iter().zip(values.chunks_exact(head_dim)) {
                o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
            }
        }
    }
}

thread_local! {
    /// Each thread's copy of one head's queries, keys, values and outputs, reused across calls.
    static HEAD: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
