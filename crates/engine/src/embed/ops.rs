//! Row kernels on `[rows, width]` f32 matrices, fused where a GEMM's output is
//! touched anyway (bias + residual + layer norm, bias + GELU). Rows are split
//! across the rayon pool the GEMMs use, so no second set of threads competes.

use rayon::prelude::*;

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
    x.par_chunks_mut(width * ROWS_PER_TASK)
        .for_each(|rows| simd::dispatch(|| rows.chunks_exact_mut(width).for_each(|row| normalize_row(row, norm))));
}

#[inline(always)]
fn normalize_row(row: &mut [f32], norm: &Norm) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + norm.eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// In place: `x = layer_norm(x + residual)`.
pub(super) fn residual_norm(x: &mut [f32], residual: &[f32], norm: &Norm) {
    let width = norm.weight.len();
    x.par_chunks_mut(width * ROWS_PER_TASK).zip(residual.par_chunks(width * ROWS_PER_TASK)).for_each(|(rows, res)| {
        simd::dispatch(|| {
            for (row, res) in rows.chunks_exact_mut(width).zip(res.chunks_exact(width)) {
                row.iter_mut().zip(res).for_each(|(v, r)| *v += r);
                normalize_row(row, norm);
            }
        })
    });
}

/// In place: `x = gelu(x)`, the exact (erf) GELU BERT was trained with.
pub(super) fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(GELU_PER_TASK).for_each(|chunk| simd::dispatch(|| gelu_slice(chunk)));
}

/// Values handed to one rayon task by `gelu`.
const GELU_PER_TASK: usize = 16 * 1024;

/// Branch-free so that it vectorises: this loop runs over every FFN activation.
#[inline(always)]
fn gelu_slice(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, about 3e-7 in
/// f32; GELU's output moves by less than f32's own rounding of it).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// e^x for x <= 0 (Cephes' single-precision polynomial, about 1 ulp), written
/// without calls or branches so loops over it vectorise; e^x below -87 is 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Runs row kernels with AVX2 + FMA where the CPU has them (the crate is built
/// for baseline x86-64, which would leave these loops at 4 lanes without FMA).
mod simd {
    #[inline(always)]
    pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports the features the wrapper is compiled for.
                return unsafe { avx2(f) };
            }
        }
        f()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
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
        let write = |i: usize, row: &[f32]| {
            // SAFETY: in bounds (checked above), and each task writes only its
            // head's columns of its sequence's rows.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add((start + i) * hidden + h * head_dim), head_dim) }
        };
        SCRATCH.with(|s| simd::dispatch(|| head_attention(qkv, len, h, heads, head_dim, &mut s.borrow_mut(), write)));
    });
}

struct SendPtr(*mut f32);
// SAFETY: shared only with tasks that write disjoint parts of the buffer.
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Each thread's transposed keys, scores and output row, reused across calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One head of one sequence of `len` tokens: writes the head's slice of
/// each output row `i`, `softmax(q_i . K^T / sqrt(d)) @ V`.
#[inline(always)]
fn head_attention(qkv: &[f32], len: usize, h: usize, heads: usize, d: usize, scratch: &mut Vec<f32>, mut write: impl FnMut(usize, &[f32])) {
    let hidden = heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    // The head's keys transposed (`[d][len]`), so that a query's scores are a
    // sum of rows: vector work across keys, no horizontal sums.
    scratch.resize(d * len + len + d, 0.0);
    let (keys_t, rest) = scratch.split_at_mut(d * len);
    let (scores, o) = rest.split_at_mut(len);
    for j in 0..len {
        for (k, &x) in qkv[j * 3 * hidden + hidden + h * d..][..d].iter().enumerate() {
            keys_t[k * len + j] = x;
        }
    }
    for i in 0..len {
        let query = &qkv[i * 3 * hidden + h * d..][..d];
        scores.fill(0.0);
        for (&q, keys) in query.iter().zip(keys_t.chunks_exact(len)) {
            let q = q * scale;
            scores.iter_mut().zip(keys).for_each(|(s, k)| *s += q * k);
        }
        softmax(scores);
        o.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let value = &qkv[j * 3 * hidden + 2 * hidden + h * d..][..d];
            o.iter_mut().zip(value).for_each(|(o, v)| *o += p * v);
        }
        write(i, o);
    }
}

#[inline(always)]
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    x.iter_mut().for_each(|v| *v = exp(*v - max));
    let sum: f32 = x.iter().sum();
    x.iter_mut().for_each(|v| *v /= sum);
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
    fn erf_matches_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (-2.0, -0.995_322_3), (3.0, 0.999_977_9)] {
            assert!((erf(x) - want).abs() < 5e-7, "erf({x}) = {} not {want}", erf(x));
        }
    }

    #[test]
    fn exp_matches_std() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.05;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 2e-7 * want.max(1e-30) + 1e-38, "exp({x}) = {got} not {want}");
        }
        assert_eq!(exp(-200.0), 0.0f32.max(exp(-200.0)));
    }

    #[test]
    fn pooled_vector_has_unit_length() {
        let v = mean_pool_normalized(&[1.0, 2.0, 3.0, 4.0], 2);
        // mean of [1, 2] and [3, 4] is [2, 3]
        assert!((v[0] - 2.0 / 13f32.sqrt()).abs() < 1e-6 && (v[1] - 3.0 / 13f32.sqrt()).abs() < 1e-6);
    }
}
