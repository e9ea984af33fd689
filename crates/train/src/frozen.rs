//! `x @ W^T` with a frozen weight, as a custom op whose backward pass computes only the
//! input's gradient. candle's own matmul also computes the weight's gradient, which for
//! a frozen base is wasted work the size of the forward pass (and for gemma3's
//! 262k-token output head, a 670 MB tensor per example).
use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

/// A frozen `[out, in]` weight (f32 or f64, contiguous).
#[derive(Clone)]
pub struct Frozen(pub Tensor);

impl Frozen {
    /// `x @ W^T` over the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(self.clone())
    }

    pub fn out_features(&self) -> usize {
        self.0.dims()[0]
    }
}

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else { bail!("frozen-matmul: input must be contiguous") };
        let dims = layout.dims();
        let k = *dims.last().unwrap_or(&1);
        let m = (end - start) / k.max(1);
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], (m, k), &Device::Cpu)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], (m, k), &Device::Cpu)?,
            _ => bail!("frozen-matmul: only f32 and f64 are supported"),
        };
        let y = x.matmul(&self.0.t()?)?.flatten_all()?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.out_features();
        }
        let out = match y.dtype() {
            DType::F32 => CpuStorage::F32(y.to_vec1()?),
            _ => CpuStorage::F64(y.to_vec1()?),
        };
        Ok((out, Shape::from(shape)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = self.out_features();
        let g = grad.reshape((grad.elem_count() / n, n))?;
        Ok(Some(g.matmul(&self.0)?.reshape(arg.shape())?))
    }
}
