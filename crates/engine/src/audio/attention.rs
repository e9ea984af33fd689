//! The encoder's self-attention, fused: one task per (head, block of queries)
//! computes that block's scores, softmax and product with V while the scores
//! sit in L2, on the GEMM micro-kernel. Materialising every head's 1500×1500
//! scores (and the head split/merge copies around them) cost more than the
//! products themselves.
use crate::math::exp;
use crate::linalg::kernel::{self, Start, MR, NR};
use rayon::prelude::*;
use std::cell::RefCell;

/// Queries per task: its scores (24 × 1500 floats for Whisper) and queries
/// fit in L2 together.
const QB: usize = 4 * MR;

/// `NR` floats on their own cache line, as the micro-kernel loads them.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; NR]);

thread_local! {
    /// Each thread's scores and queries, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

struct SendPtr(*mut f32);
// SAFETY: shared only with tasks that write disjoint parts of the buffer.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method, so closures capture the `Sync` wrapper rather than the pointer.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Whether [`attention`] handles heads of this size.
pub fn supports(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(NR)
}

/// `softmax(q kᵀ / √hd) v` per head over `[t, d]` row-major `q`, `k`, `v`
/// whose columns are `heads` heads side by side; the result is laid out alike.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], t: usize, d: usize, heads: usize) -> Vec<f32> {
    let hd = d / heads;
    assert!(supports(hd) && q.len() == t * d && k.len() == t * d && v.len() == t * d);
    let panels = t.div_ceil(NR);
    // Per head: Kᵀ as `panels` panels of `[hd][NR]` keys (zero past `t`), and
    // V as `hd / NR` panels of `[t][NR]` columns.
    let packed: Vec<(Vec<Line>, Vec<Line>)> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let mut kt = vec![Line([0.0; NR]); panels * hd];
            for (p, panel) in kt.chunks_exact_mut(hd).enumerate() {
                for j in 0..NR.min(t - p * NR) {
                    let row = &k[(p * NR + j) * d + h * hd..][..hd];
                    panel.iter_mut().zip(row).for_each(|(line, &x)| line.0[j] = x);
                }
            }
            let mut vp = vec![Line([0.0; NR]); hd / NR * t];
            for (p, panel) in vp.chunks_exact_mut(t).enumerate() {
                for (j, line) in panel.iter_mut().enumerate() {
                    line.0.copy_from_slice(&v[j * d + h * hd + p * NR..][..NR]);
                }
            }
            (kt, vp)
        })
        .collect();

    let kern = kernel::best();
    let softmax = softmax_fn();
    let scale = 1.0 / (hd as f32).sqrt();
    let ld = panels * NR;
    let blocks = t.div_ceil(QB);
    let mut out = vec![0f32; t * d];
    let dst = SendPtr(out.as_mut_ptr());
    (0..heads * blocks).into_par_iter().for_each(|task| {
        let (h, b) = (task / blocks, task % blocks);
        let (kt, vp) = &packed[h];
        let rows = b * QB..(b * QB + QB).min(t);
        let slivers = rows.len().div_ceil(MR);
        SCRATCH.with(|cell| {
            let (scores, queries) = &mut *cell.borrow_mut();
            scores.resize(QB * ld, 0.0);
            queries.resize(QB * hd, 0.0);
            // Scaled queries as rows of `hd`,
            // zero past the block's end so every sliver is a whole `MR` rows.
            for i in 0..slivers * MR {
                let r = rows.start + i;
                let dst = &mut queries[i * hd..][..hd];
                if r < rows.end {
                    dst.iter_mut().zip(&q[r * d + h * hd..][..hd]).for_each(|(p, q)| *p = q * scale);
                } else {
                    dst.fill(0.0);
                }
            }
            // SAFETY: every kernel call reads `MR` query rows and a whole panel and
            // writes an `MR × NR` tile inside `scores` (`QB` rows of `ld`).
            for s in 0..slivers {
                for p in 0..panels {
                    unsafe { kern(hd, queries[s * MR * hd..].as_ptr(), hd, kt[p * hd].0.as_ptr(), scores[s * MR * ld + p * NR..].as_mut_ptr(), ld, Start::Zero) };
                }
            }
            // Softmax each query's row of scores in place (rows past the block's end
            // only feed tiles that are thrown away).
            for i in 0..rows.len() {
                // SAFETY: `softmax` is a kernel this CPU supports.
                unsafe { softmax(&mut scores[i * ld..][..t]) };
            }
            for s in 0..slivers {
                let r = rows.start + s * MR;
                let height = MR.min(rows.end - r);
                for p in 0..hd / NR {
                    let a = scores[s * MR * ld..].as_ptr();
                    let b = vp[p * t].0.as_ptr();
                    // SAFETY: the tile is rows `r..r + height`, columns of head `h`
                    // of `out`, which no other task writes; a ragged tile goes
                    // through `queries` (no longer needed).
                    unsafe {
                        if height == MR {
                            kern(t, a, ld, b, dst.at(r * d + h * hd + p * NR), d, Start::Zero);
                        } else {
                            let tile = queries.as_mut_ptr();
                            kern(t, a, ld, b, tile, NR, Start::Zero);
                            for i in 0..height {
                                std::ptr::copy_nonoverlapping(tile.add(i * NR), dst.at((r + i) * d + h * hd + p * NR), NR);
                            }
                        }
                    }
                }
            }
        });
    });
    out
}

type Softmax = unsafe fn(&mut [f32]);

fn softmax_fn() -> Softmax {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return softmax_avx2;
        }
    }
    softmax_into
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_avx2(row: &mut [f32]) {
    softmax_into(row)
}

/// Softmax of `row`, in place. Max and sum run in eight lanes so they vectorise
/// like the exp.
#[inline(always)]
unsafe fn softmax_into(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(m, &x)| *m = if x > *m { x } else { *m });
    }
    let max = lanes.iter().copied().fold(tail, f32::max);
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(s, &x)| *s += x);
    }
    let inv = 1.0 / (lanes.iter().sum::<f32>() + tail);
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(q: &[f32], k: &[f32], v: &[f32], t: usize, d: usize, heads: usize) -> Vec<f32> {
        let hd = d / heads;
        let mut out = vec![0f32; t * d];
        for h in 0..heads {
            for i in 0..t {
                let s: Vec<f32> = (0..t).map(|j| (0..hd).map(|c| q[i * d + h * hd + c] * k[j * d + h * hd + c]).sum::<f32>() / (hd as f32).sqrt()).collect();
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for c in 0..hd {
                    out[i * d + h * hd + c] = (0..t).map(|j| e[j] * v[j * d + h * hd + c]).sum::<f32>() / sum;
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_attention() {
        // Ragged in every direction: a partial key panel, query block and sliver.
        for (t, heads) in [(37, 2), (QB + 5, 3), (1, 1)] {
            let d = heads * 32;
            let gen = |seed: usize| (0..t * d).map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0).collect::<Vec<f32>>();
            let (q, k, v) = (gen(1), gen(2), gen(3));
            let (got, want) = (attention(&q, &k, &v, t, d, heads), naive(&q, &k, &v, t, d, heads));
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "t {t}: {a} vs {b}");
            }
        }
    }
}
