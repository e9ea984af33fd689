//! Small numeric building blocks: RMS norm, softmax, rotary embeddings.
use super::hparams::RopeStyle;
use candle_core::{Result, Tensor, D};

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_rms = (mean_sq + eps as f64)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv_rms)?.broadcast_mul(weight)
}

/// Softmax over the last dimension; rows may contain -inf (masked) but not only -inf.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
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
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| (base as f64).powf(-2.0 * i as f64 / n_rot as f64) * freq_scale as f64)
            .collect();
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

/// Rotates the first `2 * angles.half` dims of each head of `x` (`[rows, heads, head_dim]`),
/// row `r` by the angles of position `r`.
pub fn apply_rope(x: &Tensor, angles: &RopeAngles, style: RopeStyle) -> Result<Tensor> {
    let (rows, heads, head_dim) = x.dims3()?;
    let half = angles.half;
    if angles.cos.len() != rows * half || 2 * half > head_dim {
        candle_core::bail!(
            "rope: {rows} rows of head size {head_dim} do not match the angle table"
        );
    }
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    for (r, row) in data.chunks_exact_mut(heads * head_dim).enumerate() {
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
    Tensor::from_vec(data, (rows, heads, head_dim), x.device())
}

/// GELU (tanh form) as llama.cpp's CPU backend computes it: through a table indexed by
/// the input rounded to f16, holding f16 results; exact outside (-10, 10). Matching it
/// keeps greedy generation identical to llama.cpp's on near-ties.
pub fn gelu_like_llama_cpp(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    for v in data.iter_mut() {
        *v = if *v <= -10.0 {
            0.0
        } else if *v >= 10.0 {
            *v
        } else {
            round_to_f16(gelu_tanh(round_to_f16(*v)))
        };
    }
    Tensor::from_vec(data, dims, x.device())
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
    fn rounds_like_f16() {
        assert_eq!(round_to_f16(1.0), 1.0);
        assert_eq!(round_to_f16(1.0 + 1.0 / 4096.0), 1.0); // below half an f16 step
        assert_eq!(round_to_f16(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0); // tie goes to even
        assert_eq!(round_to_f16(-3.14159), -3.140625);
        assert_eq!(round_to_f16(1e-6), 17.0 * 5.960_464_5e-8); // subnormal
    }
}
