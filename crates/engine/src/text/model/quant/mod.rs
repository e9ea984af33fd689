//! Our own quantized matmul: weights repacked at load into 4-row interleaved groups
//! (pack.rs), activations quantized once per matmul to Q8 blocks, int8 dot products
//! (kernels.rs) spread over the rayon pool (whose idle workers sleep, not spin). With
//! many activation rows (prefill), weight tiles are converted for an int8 GEMM (tile.rs).
mod kernels;
mod pack;
mod shadow;
#[cfg(target_arch = "x86_64")]
mod tile;

use crate::linalg::SendPtr;
use candle_core::quantized::QTensor;
use candle_core::{bail, Result};
use kernels::GroupKernel;
use pack::{Block32, Layout};
use rayon::prelude::*;

pub use kernels::{quantize_row, ActBlock};
pub use pack::{BLOCK, ROWS};
pub use shadow::Shadow;

/// A `[n, k]` weight matrix in a packed layout.
pub struct PackedWeight {
    layout: Layout,
    n: usize,
    k: usize,
    /// `n.div_ceil(4)` groups of rows, each `k / 32` blocks of `layout.group_bytes()`.
    data: Vec<u8>,
    kernel: GroupKernel,
    /// Whether products of [`TILE_MIN_ROWS`] rows or more take the tile GEMM.
    tile: bool,
}

/// Activation rows from which a product takes the tile GEMM (converting the weights
/// costs about as much as a few rows' dot products): measured on SmolLM2's batched
/// decode, the group kernel wins at 8 rows and the tile GEMM at 12. The short tail
/// chunk of a prompt takes the tile GEMM too.
const TILE_MIN_ROWS: usize = 12;

/// Weight groups handled per rayon task: small enough to balance two threads (or one,
/// when another process takes a core), large enough to amortise the task.
const GROUPS_PER_TASK: usize = 8;
/// Activation rows whose outputs a task keeps on the stack.
const STACK_ROWS: usize = 16;

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
        Self::pack(layout, n, k, |r, out| pack::decode_row(t.dtype(), &raw[r * row_bytes..(r + 1) * row_bytes], out)).map(Some)
    }

    /// Packs rows `0..n`, which `decode` gives as 32-value blocks; groups of rows are
    /// packed in parallel.
    fn pack(layout: Layout, n: usize, k: usize, decode: impl Fn(usize, &mut Vec<Block32>) -> Result<()> + Sync) -> Result<Self> {
        let nb = k / BLOCK;
        let gb = layout.group_bytes();
        let mut data = vec![0u8; n.div_ceil(ROWS) * nb * gb];
        huge_pages(&mut data);
        data.par_chunks_mut(nb * gb).enumerate().try_for_each_init(<[Vec<Block32>; ROWS]>::default, |rows, (g, dst)| -> Result<()> {
            for (r, blocks) in rows.iter_mut().enumerate() {
                blocks.clear();
                if g * ROWS + r < n {
                    decode(g * ROWS + r, blocks)?;
                    if blocks.len() != nb {
                        bail!("row decoded into {} blocks, expected {nb}", blocks.len());
                    }
                }
            }
            for (b, dst) in dst.chunks_exact_mut(gb).enumerate() {
                pack::write_group(layout, std::array::from_fn(|r| rows[r].get(b)), dst);
            }
            Ok(())
        })?;
        #[cfg(target_arch = "x86_64")]
        let tile = tile::available();
        #[cfg(not(target_arch = "x86_64"))]
        let tile = false;
        Ok(Self { layout, n, k, data, kernel: kernels::best_kernel(), tile })
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    /// The products of one quantized activation row with rows `4g..4g + 4` of W (those
    /// past `n` read 0), computed exactly as [`Self::matmul`] computes them.
    pub fn group_rows(&self, act: &[ActBlock], g: usize) -> [f32; ROWS] {
        let nb = self.k / BLOCK;
        assert!(act.len() == nb && g < self.n.div_ceil(ROWS), "group_rows: {} blocks, group {g}", act.len());
        let mut out = [[0f32; ROWS]];
        let wp = self.data[g * nb * self.layout.group_bytes()..].as_ptr();
        // SAFETY: `wp` holds `nb` groups of this layout and `act` has `nb` blocks.
        unsafe { (self.kernel)(self.layout, wp, nb, &[act], &mut out) };
        out[0]
    }

    /// `y[m, n] = x[m, k] @ W^T`.
    pub fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        Self::matmul_many(&[self], x, &mut [y])
    }

    /// `ys[i] = x @ W_i^T` for weights of the same input width, in one pass over the pool:
    /// `x` is quantized once and the threads share out the row groups of all the weights
    /// together (q, k and v of a layer; gate and up).
    pub fn matmul_many(ws: &[&Self], x: &[f32], ys: &mut [&mut [f32]]) -> Result<()> {
        let Some(k) = ws.first().map(|w| w.k) else { return Ok(()) };
        let m = x.len() / k;
        for (w, y) in ws.iter().zip(ys.iter()) {
            if w.k != k || !x.len().is_multiple_of(k) || y.len() != m * w.n {
                bail!("matmul: input of {} values against a [{}, {}] weight", x.len(), w.n, w.k);
            }
        }
        let nb = k / BLOCK;
        let mut acts = vec![ActBlock::default(); m * nb];
        if m >= 16 {
            acts.par_chunks_mut(nb).zip(x.par_chunks(k)).for_each(|(a, x)| quantize_row(x, a));
        } else {
            acts.chunks_mut(nb).zip(x.chunks(k)).for_each(|(a, x)| quantize_row(x, a));
        }
        let rows: Vec<&[ActBlock]> = acts.chunks(nb).collect();
        let y_ptrs: Vec<SendPtr> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
        #[cfg(target_arch = "x86_64")]
        if m >= TILE_MIN_ROWS && ws.iter().all(|w| w.tile) {
            tile::matmul_many(ws, &rows, &y_ptrs);
            return Ok(());
        }
        // (weight, first group) of every task.
        let tasks: Vec<(usize, usize)> =
            ws.iter().enumerate().flat_map(|(i, w)| (0..w.n.div_ceil(ROWS)).step_by(GROUPS_PER_TASK).map(move |g| (i, g))).collect();
        let run = |&(i, g0): &(usize, usize)| {
            let (w, y_ptr) = (ws[i], &y_ptrs[i]);
            let n = w.n;
            let gbytes = nb * w.layout.group_bytes();
            // On the stack for a decode step's few rows: thousands of tasks run per token.
            let mut stack = [[0f32; ROWS]; STACK_ROWS];
            let mut heap = Vec::new();
            let out = if m <= STACK_ROWS {
                &mut stack[..m]
            } else {
                heap.resize(m, [0f32; ROWS]);
                &mut heap[..]
            };
            for g in g0..(g0 + GROUPS_PER_TASK).min(n.div_ceil(ROWS)) {
                let wp = w.data[g * gbytes..].as_ptr();
                // SAFETY: `wp` holds `nb` groups of this layout; every row of `rows` has `nb` blocks.
                unsafe { (w.kernel)(w.layout, wp, nb, &rows, out) };
                let cols = (n - g * ROWS).min(ROWS);
                for (r_i, o) in out.iter().enumerate() {
                    // SAFETY: each (row, col) of each output is written by exactly one task.
                    let y = unsafe { std::slice::from_raw_parts_mut(y_ptr.0.add(r_i * n + g * ROWS), cols) };
                    y.copy_from_slice(&o[..cols]);
                }
            }
        };
        if tasks.len() == 1 {
            run(&tasks[0]);
        } else {
            tasks.par_iter().for_each(run);
        }
        Ok(())
    }
}

/// Asks the kernel to back `buf` (not yet touched) with 2 MiB pages where it can. A
/// decode step streams every packed weight: with 4 KiB pages that is a TLB miss every
/// 4 KiB (Qwen2.5-0.5B greedy decode, alternated through HTTP: 44.2 -> 47.7 tok/s).
/// Linux's default (`transparent_hugepage` = madvise) gives them only when asked.
fn huge_pages(buf: &mut [u8]) {
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
    #[cfg(target_os = "linux")]
    // SAFETY: advice on whole 2 MiB pages inside `buf`; it changes no contents.
    unsafe {
        const HUGE: usize = 2 << 20;
        let start = (buf.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (buf.as_mut_ptr() as usize + buf.len()) / HUGE * HUGE;
        if end > start {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
