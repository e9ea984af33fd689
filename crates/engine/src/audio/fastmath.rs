//! Tensor-level wrappers over `crate::math` for the Whisper encoder: candle's
//! CPU GELU runs as several single-threaded passes, which cost more than the
//! matmuls around it.
use crate::math;
use candle_core::{Result, Tensor};

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
