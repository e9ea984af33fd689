//! Per-sequence KV cache: one K and one V tensor per layer, allocated once at
//! full capacity and written in place; attention reads the filled prefix.
use candle_core::{bail, Result};

/// Per-sequence KV cache: allocated once with a fixed capacity, written in place.
pub struct SeqCache {
    /// Per layer: keys and values, each `[n_head_kv][capacity][head_dim]` f32.
    pub(super) layers: Vec<LayerKv>,
    pub(super) len: usize,
    capacity: usize,
    head_dim: usize,
}

pub(super) struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
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
        let size = n_head_kv * capacity * head_dim;
        let layers = (0..n_layer)
            .map(|_| LayerKv { k: vec![0.0; size], v: vec![0.0; size] })
            .collect();
        Ok(Self {
            layers,
            len: 0,
            capacity,
            head_dim,
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

    /// Copies the first `len` positions of `other` (same model) into this cache.
    pub fn copy_prefix_from(&mut self, other: &SeqCache, len: usize) -> Result<()> {
        if len > other.len || len > self.capacity || self.layers.len() != other.layers.len() || self.head_dim != other.head_dim {
            bail!("cannot copy {len} cached tokens between these caches");
        }
        let hd = self.head_dim;
        for (dst, src) in self.layers.iter_mut().zip(&other.layers) {
            let heads = dst.k.len() / (self.capacity * hd);
            for h in 0..heads {
                let (d0, s0) = (h * self.capacity * hd, h * other.capacity * hd);
                dst.k[d0..d0 + len * hd].copy_from_slice(&src.k[s0..s0 + len * hd]);
                dst.v[d0..d0 + len * hd].copy_from_slice(&src.v[s0..s0 + len * hd]);
            }
        }
        self.len = len;
        Ok(())
    }

    /// Writes the key and value of kv head `h` at position `pos` of layer `il`.
    pub(super) fn write(&mut self, il: usize, h: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let at = (h * self.capacity + pos) * hd;
        let layer = &mut self.layers[il];
        layer.k[at..at + hd].copy_from_slice(k);
        layer.v[at..at + hd].copy_from_slice(v);
    }

    /// Keys and values of kv head `h` of layer `il` for positions `start..end` (no copy).
    pub(super) fn head(&self, il: usize, h: usize, start: usize, end: usize) -> (&[f32], &[f32]) {
        let hd = self.head_dim;
        let base = h * self.capacity * hd;
        let layer = &self.layers[il];
        (&layer.k[base + start * hd..base + end * hd], &layer.v[base + start * hd..base + end * hd])
    }
}
