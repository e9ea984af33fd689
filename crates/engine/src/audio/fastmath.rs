//! Tensor-level wrappers over `crate::math` for the Whisper model: candle's CPU
//! softmax and GELU run as several single-threaded passes, which cost more than
//! the matmuls around them.
use crate::math::{self, exp};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

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

/// Exact-form GELU, `x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    math::gelu(&mut data);
    Tensor::from_vec(data, dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gelu_matches_candle() -> Result<()> {
        let x = Tensor::arange(-600f32, 600f32, &Device::Cpu)?.affine(0.01, 0.0)?;
        let diff = (gelu(&x)? - x.gelu_erf()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max difference {diff}");
        Ok(())
    }
}
