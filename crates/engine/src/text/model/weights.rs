//! Reading tensors out of a GGUF file into the forms the forward pass uses.
use super::quant::PackedWeight;
use candle_core::quantized::{gguf_file::Content, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use std::fs::File;
use std::sync::Arc;

pub struct GgufReader<'a> {
    pub content: &'a Content,
    pub file: &'a mut File,
}

impl GgufReader<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn qtensor(&mut self, name: &str) -> Result<Arc<QTensor>> {
        self.content.tensor(self.file, name, &Device::Cpu).map(Arc::new).map_err(|e| e.context(format!("reading tensor `{name}`")))
    }

    /// A small tensor (norm weight, bias) as dense f32 values.
    pub fn dense(&mut self, name: &str) -> Result<Vec<f32>> {
        self.qtensor(name)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()
    }

    pub fn opt_dense(&mut self, name: &str) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.dense(name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn matmul(&mut self, name: &str) -> Result<MatMul> {
        MatMul::new(self.qtensor(name)?)
    }

    pub fn linear(&mut self, name: &str) -> Result<Linear> {
        let weight = self.matmul(&format!("{name}.weight"))?;
        let bias = self.opt_dense(&format!("{name}.bias"))?;
        Ok(Linear { weight, bias })
    }
}

/// `x @ W^T` with a quantized weight: our packed kernels for the types they cover,
/// candle's matmul for the rest.
pub enum MatMul {
    Packed(PackedWeight),
    Candle(QMatMul),
}

impl MatMul {
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        match PackedWeight::from_qtensor(&weight)? {
            Some(packed) => Ok(Self::Packed(packed)),
            None => Ok(Self::Candle(QMatMul::from_arc(weight)?)),
        }
    }

    pub fn out_features(&self) -> usize {
        match self {
            Self::Packed(p) => p.out_features(),
            Self::Candle(q) => match q {
                QMatMul::QTensor(t) => t.shape().dims()[0],
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims()[0],
            },
        }
    }

    /// `y = x @ W^T` for the rows of `x` (each `k` wide); `y` is resized to fit.
    pub fn forward(&self, x: &[f32], y: &mut Vec<f32>) -> Result<()> {
        match self {
            Self::Packed(p) => {
                y.resize(x.len() / p.in_features() * p.out_features(), 0.0);
                p.matmul(x, y)
            }
            Self::Candle(q) => {
                let n = self.out_features();
                let k = match q {
                    QMatMul::QTensor(t) => t.shape().dims()[1],
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims()[1],
                };
                let xt = Tensor::from_slice(x, (x.len() / k, k), &Device::Cpu)?;
                let out = q.forward(&xt)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                debug_assert_eq!(out.len(), x.len() / k * n);
                *y = out;
                Ok(())
            }
        }
    }
}

/// `x @ W^T (+ b)` with a quantized weight.
pub struct Linear {
    weight: MatMul,
    bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn forward(&self, x: &[f32], y: &mut Vec<f32>) -> Result<()> {
        self.weight.forward(x, y)?;
        self.add_bias(y);
        Ok(())
    }

    /// `ys[i] = linears[i](x)`: one trip through the thread pool when every weight is packed.
    pub fn forward_many<const N: usize>(linears: [&Linear; N], x: &[f32], ys: [&mut Vec<f32>; N]) -> Result<()> {
        let packed: Vec<&PackedWeight> = linears
            .iter()
            .filter_map(|l| match &l.weight {
                MatMul::Packed(p) => Some(p),
                MatMul::Candle(_) => None,
            })
            .collect();
        if packed.len() < N {
            return linears.into_iter().zip(ys).try_for_each(|(l, y)| l.forward(x, y));
        }
        let m = x.len() / packed[0].in_features();
        let mut outs: Vec<&mut [f32]> = ys
            .into_iter()
            .zip(&packed)
            .map(|(y, p)| {
                y.resize(m * p.out_features(), 0.0);
                y.as_mut_slice()
            })
            .collect();
        PackedWeight::matmul_many(&packed, x, &mut outs)?;
        linears.iter().zip(outs).for_each(|(l, y)| l.add_bias(y));
        Ok(())
    }

    fn add_bias(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }
}

/// Token embedding table. Kept quantized when its rows split into whole blocks
/// (rows are dequantized on lookup); otherwise dequantized once.
pub enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    pub fn new(table: Arc<QTensor>) -> Result<Self> {
        let (_, hidden) = table.shape().dims2()?;
        if hidden % table.dtype().block_size() == 0 {
            Ok(Self::Quantized(table))
        } else {
            Ok(Self::Dense(table.dequantize(&Device::Cpu)?))
        }
    }

    /// `[ids.len(), hidden]` f32 rows.
    pub fn lookup(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let ids = Tensor::new(ids, &Device::Cpu)?;
        match self {
            Self::Quantized(t) => t.embedding(&ids),
            Self::Dense(t) => t.index_select(&ids, 0),
        }?
        .flatten_all()?
        .to_vec1()
    }
}
