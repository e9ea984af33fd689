//! Our own quantized matmul: weights repacked at load into 4-row interleaved groups
//! (pack.rs), activations quantized once per matmul to Q8 blocks, int8 dot products
//! (kernels.rs) spread over the rayon pool (whose idle workers sleep, not spin).
mod kernels;
mod pack;

use candle_core::quantized::QTensor;
use candle_core::{bail, Result};
use kernels::{ActBlock, GroupKernel};
use pack::{Block32, Layout, BLOCK, ROWS};
use rayon::prelude::*;

pub use kernels::quantize_row;

/// A `[n, k]` weight matrix in a packed layout.
pub struct PackedWeight {
    layout: Layout,
    n: usize,
    k: usize,
    /// `n.div_ceil(4)` groups of rows, each `k / 32` blocks of `layout.group_bytes()`.
    data: Vec<u8>,
    kernel: GroupKernel,
}

/// Weight groups handled per rayon task: small enough to balance two threads (or one,
/// when another process takes a core), large enough to amortise the task.
const GROUPS_PER_TASK: usize = 8;

impl PackedWeight {
    /// None when the tensor's type has no packed layout (candle's matmul serves it).
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let Some(layout) = Layout::for_dtype(t.dtype()) else {
            return Ok(None);
        };
        let (n, k) = t.shape().dims2()?;
        if k % t.dtype().block_size() != 0 {
            return Ok(None);
        }
        let raw = t.data()?;
        let row_bytes = k / t.dtype().block_size() * t.dtype().type_size();
        Self::pack(layout, n, k, |r, out| pack::decode_row(t.dtype(), &raw[r * row_bytes..(r + 1) * row_bytes], out))
            .map(Some)
    }

    fn pack(layout: Layout, n: usize, k: usize, mut decode: impl FnMut(usize, &mut Vec<Block32>) -> Result<()>) -> Result<Self> {
        let nb = k / BLOCK;
        let gb = layout.group_bytes();
        let groups = n.div_ceil(ROWS);
        let mut data = vec![0u8; groups * nb * gb];
        let mut rows: [Vec<Block32>; ROWS] = Default::default();
        for g in 0..groups {
            for (r, blocks) in rows.iter_mut().enumerate() {
                blocks.clear();
                if g * ROWS + r < n {
                    decode(g * ROWS + r, blocks)?;
                    if blocks.len() != nb {
                        bail!("row decoded into {} blocks, expected {nb}", blocks.len());
                    }
                }
            }
            for b in 0..nb {
                let dst = &mut data[(g * nb + b) * gb..(g * nb + b + 1) * gb];
                pack::write_group(layout, std::array::from_fn(|r| rows[r].get(b)), dst);
            }
        }
        Ok(Self { layout, n, k, data, kernel: kernels::best_kernel() })
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `y[m, n] = x[m, k] @ W^T`.
    pub fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (n, k) = (self.n, self.k);
        if x.len() % k != 0 || y.len() != x.len() / k * n {
            bail!("matmul: input of {} values against a [{n}, {k}] weight", x.len());
        }
        let m = x.len() / k;
        let nb = k / BLOCK;
        let mut acts = vec![ActBlock::default(); m * nb];
        if m >= 16 {
            acts.par_chunks_mut(nb).zip(x.par_chunks(k)).for_each(|(a, x)| quantize_row(x, a));
        } else {
            acts.chunks_mut(nb).zip(x.chunks(k)).for_each(|(a, x)| quantize_row(x, a));
        }
        let rows: Vec<&[ActBlock]> = acts.chunks(nb).collect();
        let groups = n.div_ceil(ROWS);
        let gbytes = nb * self.layout.group_bytes();
        let y_ptr = SendPtr(y.as_mut_ptr());
        let tasks = groups.div_ceil(GROUPS_PER_TASK);
        let run = |t: usize| {
            let y_ptr = &y_ptr;
            let mut out = vec![[0f32; ROWS]; m];
            for g in t * GROUPS_PER_TASK..((t + 1) * GROUPS_PER_TASK).min(groups) {
                let w = self.data[g * gbytes..].as_ptr();
                // SAFETY: `w` holds `nb` groups of this layout; every row of `rows` has `nb` blocks.
                unsafe { (self.kernel)(self.layout, w, nb, &rows, &mut out) };
                for (i, o) in out.iter().enumerate() {
                    for (r, &v) in o.iter().enumerate() {
                        let col = g * ROWS + r;
                        if col < n {
                            // SAFETY: each (i, col) is written by exactly one task.
                            unsafe { *y_ptr.0.add(i * n + col) = v };
                        }
                    }
                }
            }
        };
        if tasks == 1 {
            run(0);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
        Ok(())
    }
}

struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

#[cfg(test)]
mod tests;
