//! Small numeric building blocks on f32 slices: RMS norm, rotary embeddings, activations,
//! and the dot product attention is built on. Each op over many rows (a prompt chunk)
//! spreads them over the thread pool: done on one thread, they would leave the other
//! cores idle between the parallel matmuls.
use super::hparams::RopeStyle;
use crate::math::sum_squares;
use rayon::prelude::*;

/// Rows per parallel piece; a decode step (fewer rows) stays on the calling thread.
const PAR_ROWS: usize = 16;

/// Calls `f(piece, first_row)` over pieces of `PAR_ROWS` rows of `x` (rows `width` wide),
/// in parallel when there is more than one.
fn for_rows(x: &mut [f32], width: usize, f: impl Fn(&mut [f32], usize) + Sync) {
    if x.len() <= width * PAR_ROWS {
        return f(x, 0);
    }
    x.par_chunks_mut(width * PAR_ROWS).enumerate().for_each(|(i, x)| f(x, i * PAR_ROWS));
}

/// `for_rows` with the matching rows of `y` (same row count, each `y.len() / rows` wide).
fn for_rows_with(x: &mut [f32], width: usize, y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    let y_width = y.len() / (x.len() / width).max(1);
    if x.len() <= width * PAR_ROWS {
        return f(x, y);
    }
    x.par_chunks_mut(width * PAR_ROWS).zip(y.par_chunks(y_width * PAR_ROWS)).for_each(|(x, y)| f(x, y));
}

/// Each `weight.len()`-wide row of `x` becomes `x / sqrt(mean(x²) + eps) * weight`, in place.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    for_rows(x, weight.len(), |x, _| rms_norm_rows(x, weight, eps));
}

fn rms_norm_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        let mean_sq = sum_squares(row) / row.len() as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

/// `out = rms_norm(x)`, leaving `x` as it is.
pub fn rms_norm_into(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.resize(x.len(), 0.0);
    let w = weight.len();
    for_rows_with(out, w, x, |out, x| {
        out.copy_from_slice(x);
        rms_norm_rows(out, weight, eps);
    });
}

/// `x += y`, element-wise (a residual connection).
pub fn add_assign(x: &mut [f32], y: &[f32], width: usize) {
    for_rows_with(x, width, y, |x, y| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
}

/// `gate = silu(gate) * up`, in place (rows `width` wide).
pub fn silu_mul(gate: &mut [f32], up: &[f32], width: usize) {
    for_rows_with(gate, width, up, |g, u| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { silu_mul_avx2(g, u) };
        }
        silu_mul_body(g, u)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
    silu_mul_body(gate, up)
}

/// Compiled twice (AVX2 and portable); the loop vectorizes in each.
#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + crate::math::exp(-*g)) * u;
    }
}

/// `gate = gelu(gate) * up` (llama.cpp's table form, see `gelu_like_llama_cpp`), in place.
pub fn gelu_mul(gate: &mut [f32], up: &[f32], width: usize) {
    for_rows_with(gate, width, up, |g, u| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = gelu_like_llama_cpp(*g) * u;
        }
    });
}

/// cos/sin of every rotation angle for a list of positions: `[rows][n_rot / 2]`.
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl RopeAngles {
    /// Angle of pair `i` at position `p`: `p * freq_scale * base^(-2i / n_rot)`.
    pub fn new(positions: &[usize], n_rot: usize, base: f32, freq_scale: f32) -> Self {
        let half = n_rot / 2;
        let inv_freq: Vec<f64> = (0..half).map(|i| (base as f64).powf(-2.0 * i as f64 / n_rot as f64) * freq_scale as f64).collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in &inv_freq {
                let theta = p as f64 * f;
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Self { cos, sin, half }
    }
}

/// Rotates the first `2 * angles.half` dims of each `head_dim`-wide head of each row of `x`
/// (rows of `heads * head_dim`), row `r` by the angles of position `r`, in place.
pub fn apply_rope(x: &mut [f32], heads: usize, head_dim: usize, angles: &RopeAngles, style: RopeStyle) {
    debug_assert_eq!(angles.cos.len() * heads * head_dim, x.len() * angles.half);
    for_rows(x, heads * head_dim, |x, first| rope_rows(x, first, heads, head_dim, angles, style));
}

fn rope_rows(x: &mut [f32], first: usize, heads: usize, head_dim: usize, angles: &RopeAngles, style: RopeStyle) {
    let half = angles.half;
    for (r, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let r = first + r;
        let cos = &angles.cos[r * half..(r + 1) * half];
        let sin = &angles.sin[r * half..(r + 1) * half];
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// GELU (tanh form) as llama.cpp's CPU backend computes it: through a table indexed by
/// the input rounded to f16, holding f16 results; exact outside (-10, 10). Matching it
/// keeps greedy generation identical to llama.cpp's on near-ties.
pub fn gelu_like_llama_cpp(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        round_to_f16(gelu_tanh(round_to_f16(x)))
    }
}

fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// The nearest f16 value (ties to even), as f32. Valid for |x| below f16's max (65504).
pub fn round_to_f16(x: f32) -> f32 {
    const MIN_NORMAL: f32 = 6.103_515_6e-5; // 2^-14
    if x.abs() < MIN_NORMAL {
        // f16 subnormals are multiples of 2^-24.
        const STEP: f32 = 5.960_464_5e-8;
        return (x / STEP).round_ties_even() * STEP;
    }
    // Keep 10 of f32's 23 mantissa bits, rounding to nearest even.
    let bits = x.to_bits();
    let lsb = (bits >> 13) & 1;
    f32::from_bits(bits.wrapping_add(0x0FFF + lsb) & !0x1FFF)
}

#[cfg(test)]
mod tests {
    use super::round_to_f16;

    #[test]
    #[allow(clippy::approx_constant)] // -3.14159 is a value to round, not π
    fn rounds_like_f16() {
        assert_eq!(round_to_f16(1.0), 1.0);
        assert_eq!(round_to_f16(1.0 + 1.0 / 4096.0), 1.0); // below half an f16 step
        assert_eq!(round_to_f16(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0); // tie goes to even
        assert_eq!(round_to_f16(-3.14159), -3.140625);
        assert_eq!(round_to_f16(1e-6), 17.0 * 5.960_464_5e-8); // subnormal
    }
}
