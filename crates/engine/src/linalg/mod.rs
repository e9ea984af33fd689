//! Dense f32 products for the models' linear layers:
//! `out[m, n] = x[m, k] @ W[k, n] (+ bias)`, all row-major.
//!
//! Structured as Goto/BLIS GEMMs are: W is packed once, at load, into panels
//! of `NR` columns (`[k][NR]` each, one cache line per step of K), which is the
//! order the micro-kernel streams them in. Per call, each task takes a block
//! of x (`MC` rows by `KC` of K, which stays in L2) and for every panel in its
//! range runs the `MR x NR` kernel down the block while that panel's `KC`
//! lines sit in L1. x is read in place, `MR` sequential row streams, so the
//! only copy made is of a ragged last tile. Tasks (row blocks x column ranges)
//! go to the rayon pool, whose idle workers sleep.

pub(crate) mod kernel;

use std::cell::RefCell;

use rayon::prelude::*;

use kernel::{Kernel, Start, MR, NR};

/// Most of K per block: a panel's `KC` lines (16 KiB) stay in L1.
const KC: usize = 256;
/// Rows of x per task: their block (96 KiB at most) stays in L2.
const MC: usize = 96;

/// One step of K in a panel: `NR` floats on their own cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; NR]);

/// A weight matrix `W[k, n]` (and optionally a bias of `n`), packed for [`PackedMatrix::matmul`].
pub struct PackedMatrix {
    k: usize,
    n: usize,
    /// The K step of each block: K split evenly into blocks of at most `KC`.
    kc: usize,
    /// Block by block of K, panel by panel (columns `p * NR ..`, zero past
    /// `n`): the block at `pc` of panel `p` is `kc` lines from line
    /// `pc * panels + p * kc` (`kc` the block's depth), so a task's panels
    /// follow one another in memory, one stream for the prefetcher.
    lines: Vec<Line>,
    /// Padded with zeros to whole panels.
    bias: Option<Vec<f32>>,
    kernel: Kernel,
}

thread_local! {
    /// Each thread's copy of a ragged tile of x, zero-padded to `MR` rows.
    static RAGGED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl PackedMatrix {
    /// From `w` laid out `[k, n]` (input-major).
    pub fn from_rows(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{k}, {n}]");
        Self::pack(k, n, |kk, j| w[kk * n + j])
    }

    /// From `w` laid out `[n, k]` (output-major, as PyTorch's `Linear.weight`).
    pub fn from_cols(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{n}, {k}]");
        Self::pack(k, n, |kk, j| w[j * k + kk])
    }

    fn pack(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let panels = n.div_ceil(NR);
        let kc = k.div_ceil(k.div_ceil(KC).max(1)).max(1);
        let mut lines = vec![Line([0.0; NR]); panels * k];
        for pc in (0..k).step_by(kc) {
            let depth = kc.min(k - pc);
            for p in 0..panels {
                for kk in 0..depth {
                    let line = &mut lines[pc * panels + p * depth + kk].0;
                    for (c, v) in line.iter_mut().enumerate().take(n - p * NR) {
                        *v = at(pc + kk, p * NR + c);
                    }
                }
            }
        }
        Self { k, n, kc, lines, bias: None, kernel: kernel::best() }
    }

    /// Adds `bias` (length `n`) to every row of the product.
    pub fn with_bias(mut self, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), self.n, "bias length");
        let mut padded = bias.to_vec();
        padded.resize(self.n.div_ceil(NR) * NR, 0.0);
        self.bias = Some(padded);
        self
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// `out[m, n] = x[m, k] @ W (+ bias)`; every value of `out` is written.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "x is not [{m}, {}]", self.k);
        assert_eq!(out.len(), m * self.n, "out is not [{m}, {}]", self.n);
        if m == 0 || self.n == 0 {
            return;
        }
        if self.k == 0 {
            for row in out.chunks_exact_mut(self.n) {
                row.copy_from_slice(self.bias.as_ref().map_or(&vec![0.0; self.n][..], |b| &b[..self.n]));
            }
            return;
        }
        // Enough tasks for the pool to balance; columns are split only when
        // there are few row blocks (each split packs the same rows again).
        let panels = self.n.div_ceil(NR);
        let row_blocks = m.div_ceil(MC);
        let per_chunk = panels.div_ceil((4 * rayon::current_num_threads()).div_ceil(row_blocks).clamp(1, panels));
        let chunks = panels.div_ceil(per_chunk);
        let out = SendPtr(out.as_mut_ptr());
        let run = |t: usize| {
            let (rb, cc) = (t / chunks, t % chunks);
            let rows = rb * MC..(rb * MC + MC).min(m);
            let cols = cc * per_chunk..(cc * per_chunk + per_chunk).min(panels);
            // SAFETY: tasks write disjoint (rows, panels) blocks of `out`, which is `[m, n]`.
            RAGGED.with(|buf| unsafe { self.block(x, rows, cols, &mut buf.borrow_mut(), &out) });
        };
        match row_blocks * chunks {
            1 => run(0),
            tasks => (0..tasks).into_par_iter().for_each(run),
        }
    }

    /// Rows `rows` of x against panels `panels` of W, into `out` (`[m, n]`).
    unsafe fn block(&self, x: &[f32], rows: std::ops::Range<usize>, panels: std::ops::Range<usize>, ragged: &mut Vec<f32>, out: &SendPtr) {
        let (k, n) = (self.k, self.n);
        let all_panels = n.div_ceil(NR);
        let (full, left) = (rows.len() / MR, rows.len() % MR);
        let tiles = full + usize::from(left > 0);
        ragged.resize(MR * self.kc, 0.0);
        for pc in (0..k).step_by(self.kc) {
            let kc = self.kc.min(k - pc);
            if left > 0 {
                for (i, dst) in ragged.chunks_exact_mut(kc).take(MR).enumerate() {
                    match rows.start + full * MR + i {
                        r if r < rows.end => dst.copy_from_slice(&x[r * k + pc..][..kc]),
                        _ => dst.fill(0.0),
                    }
                }
            }
            for p in panels.clone() {
                let b = self.lines[pc * all_panels + p * kc].0.as_ptr();
                let col = p * NR;
                let cols = NR.min(n - col);
                let start = match (&self.bias, pc) {
                    (_, 1..) => Start::Load,
                    (Some(bias), 0) => Start::Row(bias[col..].as_ptr()),
                    (None, 0) => Start::Zero,
                };
                for t in 0..tiles {
                    let row = rows.start + t * MR;
                    let (a, lda) = if t < full { (x[row * k + pc..].as_ptr(), k) } else { (ragged.as_ptr(), kc) };
                    let c = out.0.add(row * n + col);
                    let height = MR.min(rows.end - row);
                    if height == MR && cols == NR {
                        (self.kernel)(kc, a, lda, b, c, n, start);
                    } else {
                        // A ragged edge: run the kernel on a full tile beside it.
                        let mut tile = [0f32; MR * NR];
                        if let Start::Load = start {
                            for i in 0..height {
                                std::ptr::copy_nonoverlapping(c.add(i * n), tile[i * NR..].as_mut_ptr(), cols);
                            }
                        }
                        (self.kernel)(kc, a, lda, b, tile.as_mut_ptr(), NR, start);
                        for i in 0..height {
                            std::ptr::copy_nonoverlapping(tile[i * NR..].as_ptr(), c.add(i * n), cols);
                        }
                    }
                }
            }
        }
    }
}

/// A buffer's base pointer handed to parallel tasks (the one definition the engine's
/// kernels share).
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: shared only with tasks that write disjoint parts of the buffer.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

impl SendPtr {
    /// A method, so closures capture the `Sync` wrapper rather than the pointer.
    pub(crate) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

#[cfg(test)]
mod tests;
