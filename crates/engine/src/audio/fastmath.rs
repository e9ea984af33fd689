//! Fused, parallel element-wise kernels for the encoder's hot spots: candle's
//! CPU softmax and GELU run as several single-threaded passes, which on
//! 1500×1500 attention scores costs more than the matmuls around them.
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// `e^x` to ~1e-6 relative error (1e-5 for |x| > 40, from rounding `x·log2 e` in f32); −∞ (masked scores) gives ~0.
#[inline]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest by the 1.5·2²³ trick: `f32::round` is a libm call on baseline x86-64.
    let i = (t + 12_582_912.0) - 12_582_912.0;
    let f = (t - i) * std::f32::consts::LN_2; // |f| ≤ ln2 / 2
    // Taylor series of e^f to degree 7.
    let p = 1.0 + f * (1.0 + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    p * f32::from_bits(((i as i32 + 127) as u32) << 23)
}

/// `softmax(scale · x)` over the last dimension.
pub fn softmax_last_dim(x: &Tensor, scale: f32) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let n = *dims.last().unwrap_or(&1);
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    data.par_chunks_mut(n.max(1)).for_each(|row| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Separate passes so the exp loop vectorises (an f32 running sum would not).
        row.iter_mut().for_each(|v| *v = exp((*v - max) * scale));
        let inv = 1.0 / row.iter().sum::<f32>();
        row.iter_mut().for_each(|v| *v *= inv);
    });
    Tensor::from_vec(data, dims, x.device())
}

/// Exact-form GELU, `x/2 · (1 + erf(x/√2))`, erf by Abramowitz–Stegun 7.1.26 (error < 1.5e-7).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    data.par_chunks_mut(4096).for_each(|chunk| {
        for v in chunk.iter_mut() {
            let z = (*v * std::f32::consts::FRAC_1_SQRT_2).abs();
            let t = 1.0 / (1.0 + 0.327_591_1 * z);
            let poly = t * (0.254_829_6 + t * (-0.284_496_7 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
            let erf = (1.0 - poly * exp(-z * z)).copysign(*v);
            *v = 0.5 * *v * (1.0 + erf);
        }
    });
    Tensor::from_vec(data, dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_matches_std() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let (a, b) = (exp(x), x.exp());
            assert!((a - b).abs() <= 1e-5 * b.max(1e-30), "{x}: {a} vs {b}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.0));
    }

    #[test]
    fn gelu_matches_candle() -> Result<()> {
        let x = Tensor::arange(-600f32, 600f32, &Device::Cpu)?.affine(0.01, 0.0)?;
        let diff = (gelu(&x)? - x.gelu_erf()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max difference {diff}");
        Ok(())
    }
}
