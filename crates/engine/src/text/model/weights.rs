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
        self.content
            .tensor(self.file, name, &Device::Cpu)
            .map(Arc::new)
            .map_err(|e| e.context(format!("reading tensor `{name}`")))
    }

    /// A small tensor (norm weight, bias) as dense f32.
    pub fn dense(&mut self, name: &str) -> Result<Tensor> {
        self.qtensor(name)?.dequantize(&Device::Cpu)
    }

    pub fn opt_dense(&mut self, name: &str) -> Result<Option<Tensor>> {
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

    /// `x`: `[.., k]` f32; returns `[.., n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let packed = match self {
            Self::Packed(p) => p,
            Self::Candle(q) => return q.forward(x),
        };
        let mut dims = x.dims().to_vec();
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("packed matmul runs on the CPU");
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("matmul input is not contiguous".into()))?;
        let xs = &cpu.as_slice::<f32>()?[start..end];
        let mut y = vec![0f32; xs.len() / packed.in_features() * packed.out_features()];
        packed.matmul(xs, &mut y)?;
        *dims.last_mut().expect("matmul input has a dimension") = packed.out_features();
        Tensor::from_vec(y, dims, &Device::Cpu)
    }
}

/// `x @ W^T (+ b)` with a quantized weight.
pub struct Linear {
    weight: MatMul,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
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
    pub fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?;
        match self {
            Self::Quantized(t) => t.embedding(&ids),
            Self::Dense(t) => t.index_select(&ids, 0),
        }
    }
}
