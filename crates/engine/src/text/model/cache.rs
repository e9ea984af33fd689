//! Per-sequence KV cache. Each layer keeps rows of `[n_head_kv][head_dim]` keys and
//! values, one row per position, appended as tokens run. The first positions may be
//! shared read-only with other sequences and with the prefix store (`freeze`): a
//! request that repeats a cached prompt prefix attends to the same memory instead of
//! copying it.
//!
//! Keys and values are kept in f16, as llama.cpp keeps them: half the bytes that a
//! decode step reads per cached position (at 512 positions SmolLM2's f32 cache was a
//! fifth of the bytes a step read), and half the memory per sequence.
use std::sync::Arc;

use candle_core::{bail, Result};
use half::{f16, slice::HalfFloatSliceExt};

/// Keys and values of some run of positions, per layer.
struct Block {
    layers: Vec<LayerKv>,
}

struct LayerKv {
    /// `[positions][n_head_kv * head_dim]`.
    k: AlignedRows,
    v: AlignedRows,
}

/// A growable run of f16 values whose first one lies on a 64-byte boundary, so that
/// each head's vector (a multiple of 32 values in the supported models) starts a cache
/// line and no load of attention straddles two lines. The allocator gives large buffers
/// 16-byte alignment, which made attention ~20% slower.
struct AlignedRows {
    buf: Vec<f16>,
    /// Values skipped at the front of `buf` to reach the boundary.
    start: usize,
}

impl AlignedRows {
    /// Empty, with room reserved for `n` values (not moved again while within it).
    fn with_capacity(n: usize) -> Self {
        let mut buf: Vec<f16> = Vec::with_capacity(n + 31);
        let start = buf.as_ptr().align_offset(64).min(31);
        buf.resize(start, f16::ZERO);
        Self { buf, start }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends `x`, rounded to the nearest f16 (F16C where the CPU has it).
    fn extend_from_f32(&mut self, x: &[f32]) {
        let old = self.buf.len();
        self.buf.resize(old + x.len(), f16::ZERO);
        self.buf[old..].convert_from_f32_slice(x);
    }

    fn truncate(&mut self, n: usize) {
        self.buf.truncate(self.start + n);
    }
}

impl std::ops::Deref for AlignedRows {
    type Target = [f16];

    fn deref(&self) -> &[f16] {
        &self.buf[self.start..]
    }
}

impl Block {
    /// Empty, with room reserved (not touched, so not yet resident) for `positions`.
    fn with_capacity(n_layer: usize, row: usize, positions: usize) -> Self {
        let layers = (0..n_layer).map(|_| LayerKv { k: AlignedRows::with_capacity(positions * row), v: AlignedRows::with_capacity(positions * row) }).collect();
        Self { layers }
    }
}

/// A read-only run of cached positions: the first `len` positions of `block`.
#[derive(Clone)]
struct SharedRun {
    block: Arc<Block>,
    len: usize,
}

/// The cached positions of one sequence: shared runs first, then its own.
pub struct SeqCache {
    shared: Vec<SharedRun>,
    own: Block,
    len: usize,
    capacity: usize,
    /// Values per position and layer: `n_head_kv * head_dim`.
    row: usize,
}

/// A frozen prefix of a sequence: what the prefix store keeps and hands out.
#[derive(Clone)]
pub struct Prefix {
    runs: Vec<SharedRun>,
    len: usize,
    /// The shape it was made with (a prefix only fits caches of the same model).
    shape: (usize, usize),
}

impl Prefix {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SeqCache {
    pub(super) fn new(n_layer: usize, n_head_kv: usize, head_dim: usize, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            bail!("a KV cache needs a capacity of at least one token");
        }
        let row = n_head_kv * head_dim;
        Ok(Self { shared: Vec::new(), own: Block::with_capacity(n_layer, row, capacity), len: 0, capacity, row })
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

    /// Bytes of keys and values this sequence holds: every cached position (shared runs
    /// included) in every layer, f16.
    pub fn bytes(&self) -> usize {
        self.len * self.row * self.own.layers.len() * 2 * std::mem::size_of::<f16>()
    }

    /// Makes every position cached so far read-only and returns a handle to them, which
    /// other caches of the same model can start from (`start_from`). No data is copied:
    /// this cache keeps attending to the same memory and appends after it as before.
    pub fn freeze(&mut self) -> Prefix {
        let n_layer = self.own.layers.len();
        let own_len = self.own.layers.first().map_or(0, |l| l.k.len() / self.row);
        if own_len > 0 {
            let rest = self.capacity - self.len;
            let block = std::mem::replace(&mut self.own, Block::with_capacity(n_layer, self.row, rest));
            self.shared.push(SharedRun { block: Arc::new(block), len: own_len });
        }
        Prefix { runs: self.shared.clone(), len: self.len, shape: (n_layer, self.row) }
    }

    /// Starts this (empty) cache with the first `len` positions of `prefix`.
    pub fn start_from(&mut self, prefix: &Prefix, len: usize) -> Result<()> {
        if !self.is_empty() || len > prefix.len || len > self.capacity || prefix.shape != (self.own.layers.len(), self.row) {
            bail!("cannot start a cache of {} tokens from {len} of a {}-token prefix", self.capacity, prefix.len);
        }
        let mut left = len;
        for run in &prefix.runs {
            if left == 0 {
                break;
            }
            self.shared.push(SharedRun { block: run.block.clone(), len: run.len.min(left) });
            left -= run.len.min(left);
        }
        self.len = len;
        Ok(())
    }

    /// Appends keys and values (rows of `n_head_kv * head_dim`) to layer `il`; the positions
    /// count once `commit` is called after the last layer.
    pub(super) fn append(&mut self, il: usize, k: &[f32], v: &[f32]) {
        let layer = &mut self.own.layers[il];
        layer.k.extend_from_f32(k);
        layer.v.extend_from_f32(v);
    }

    /// Counts the `n` positions appended to every layer.
    pub(super) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops whatever was appended since the last `commit` (a forward pass that failed).
    pub(super) fn rollback(&mut self) {
        let keep = (self.len - self.shared_len()) * self.row;
        for layer in &mut self.own.layers {
            layer.k.truncate(keep);
            layer.v.truncate(keep);
        }
    }

    fn shared_len(&self) -> usize {
        self.shared.iter().map(|s| s.len).sum()
    }

    /// Calls `f(keys, values)` for each contiguous run of positions `start..end` of layer
    /// `il`, in order. Both are rows of `n_head_kv * head_dim`; head `h` of a row starts
    /// at `h * head_dim`.
    pub(super) fn runs(&self, il: usize, start: usize, end: usize, mut f: impl FnMut(&[f16], &[f16])) {
        let row = self.row;
        let mut at = 0;
        // The own run includes positions appended by the pass in progress.
        let own = (self.own.layers[il].k.len() / row, &self.own);
        for (len, block) in self.shared.iter().map(|s| (s.len, &*s.block)).chain(std::iter::once(own)) {
            let (lo, hi) = (start.max(at), end.min(at + len));
            if lo < hi {
                let layer = &block.layers[il];
                f(&layer.k[(lo - at) * row..(hi - at) * row], &layer.v[(lo - at) * row..(hi - at) * row]);
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeqCache;

    /// Appends positions `from..to` to a one-layer cache, each key row `[p, p]`, value `[-p, -p]`.
    fn push(c: &mut SeqCache, from: usize, to: usize) {
        let k: Vec<f32> = (from..to).flat_map(|p| [p as f32; 2]).collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        c.append(0, &k, &v);
        c.commit(to - from);
    }

    /// Positions `start..end` as read back through `runs`, with the number of runs.
    fn read(c: &SeqCache, start: usize, end: usize) -> (Vec<f32>, usize) {
        let (mut keys, mut runs) = (Vec::new(), 0);
        c.runs(0, start, end, |k, v| {
            assert!(k.iter().zip(v).all(|(k, v)| *k == -*v));
            keys.extend(k.iter().step_by(2).map(|k| k.to_f32()));
            runs += 1;
        });
        (keys, runs)
    }

    #[test]
    fn frozen_prefixes_are_shared_and_chained() {
        let mut a = SeqCache::new(1, 1, 2, 10).unwrap();
        push(&mut a, 0, 4);
        let pa = a.freeze();
        push(&mut a, 4, 6); // the frozen sequence goes on after its prefix
        assert_eq!(read(&a, 0, 6), ((0..6).map(|p| p as f32).collect(), 2));

        // B starts from 3 of A's 4 frozen positions, then freezes again with its own.
        let mut b = SeqCache::new(1, 1, 2, 10).unwrap();
        b.start_from(&pa, 3).unwrap();
        push(&mut b, 3, 5);
        let pb = b.freeze();
        assert_eq!(pb.len(), 5);
        let mut c = SeqCache::new(1, 1, 2, 8).unwrap();
        c.start_from(&pb, 4).unwrap();
        push(&mut c, 4, 7);
        assert_eq!(read(&c, 0, 7), ((0..7).map(|p| p as f32).collect(), 3));
        assert_eq!(read(&c, 2, 5).0, vec![2.0, 3.0, 4.0]);
        assert!(c.start_from(&pb, 1).is_err(), "only an empty cache starts from a prefix");
    }

    #[test]
    fn rollback_drops_uncommitted_positions() {
        let mut c = SeqCache::new(1, 1, 2, 10).unwrap();
        push(&mut c, 0, 3);
        c.append(0, &[7.0, 7.0], &[-7.0, -7.0]);
        c.rollback();
        assert_eq!(c.len(), 3);
        assert_eq!(read(&c, 0, 3), (vec![0.0, 1.0, 2.0], 1));
    }
}
