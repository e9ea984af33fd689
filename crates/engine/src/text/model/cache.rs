//! Per-sequence KV cache: one K and one V tensor per layer, allocated once at
//! full capacity and written in place; attention reads the filled prefix.
use candle_core::{bail, DType, Device, Result, Tensor};

/// Per-sequence KV cache: allocated once with a fixed capacity, written in place.
pub struct SeqCache {
    /// `[n_head_kv, capacity, head_dim]` per layer.
    pub(super) layers: Vec<LayerKv>,
    pub(super) len: usize,
    capacity: usize,
}

pub(super) struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

impl SeqCache {
    pub(super) fn new(
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Self> {
        if capacity == 0 {
            bail!("a KV cache needs a capacity of at least one token");
        }
        let layers = (0..n_layer)
            .map(|_| {
                let k = Tensor::zeros((n_head_kv, capacity, head_dim), DType::F32, &Device::Cpu)?;
                let v = Tensor::zeros((n_head_kv, capacity, head_dim), DType::F32, &Device::Cpu)?;
                Ok(LayerKv { k, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every token after the first `len` (e.g. to reuse a shared prompt prefix).
    /// The memory stays allocated; later writes overwrite the dropped positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Empties the cache for reuse by another sequence.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Writes `k`, `v` (`[n_head_kv, n, head_dim]`, contiguous) for layer `il` at `pos`.
    pub(super) fn write(&mut self, il: usize, pos: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let layer = &self.layers[il];
        layer.k.slice_set(k, 1, pos)?;
        layer.v.slice_set(v, 1, pos)
    }

    /// Keys and values of layer `il` for positions `start..end` (views, no copy).
    pub(super) fn read(&self, il: usize, start: usize, end: usize) -> Result<(Tensor, Tensor)> {
        let layer = &self.layers[il];
        Ok((
            layer.k.narrow(1, start, end - start)?,
            layer.v.narrow(1, start, end - start)?,
        ))
    }
}
