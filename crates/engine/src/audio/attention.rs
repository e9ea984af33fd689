//! Whisper's attention. Q and the result are `[t, d]` row-major with the heads
//! side by side (as the projections write them, so no head split/merge
//! copies); K and V are laid out either so or head by head (see [`Layout`]).
//!
//! Many queries (the encoder, a decoder prompt): fused, one task per (head,
//! block of queries) computes that block's scores, softmax and product with V
//! while the scores sit in L2, on the GEMM micro-kernel. Materialising every
//! head's 1500×1500 scores cost more than the products themselves.
//!
//! One query (a decoder step): each head's K and V are streamed once, which is
//! all it costs: 1500 audio positions are 3 MB of cross-attention K/V a layer
//! in f16 (see [`Value`]), kept head by head so that each task reads one
//! contiguous run.
use super::gemv;
use crate::linalg::kernel::{self, Start, MR, NR};
use crate::linalg::SendPtr;
use crate::math::{self, simd_fn};
use half::{f16, slice::HalfFloatSliceExt};
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

/// Whether [`attention`] handles heads of this size.
pub fn supports(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(NR)
}

/// Where each head's rows of K or V lie: row `j` of head `h` starts at
/// `h * head + j * row`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Layout {
    row: usize,
    head: usize,
}

impl Layout {
    /// `[t, d]`, the heads side by side in each row (as projections write them).
    pub fn interleaved(d: usize, heads: usize) -> Self {
        Self { row: d, head: d / heads }
    }

    /// `[heads, t, hd]`: each head's rows contiguous.
    pub fn by_head(t: usize, hd: usize) -> Self {
        Self { row: hd, head: t * hd }
    }

    /// `x` (`[t, d]`, interleaved) rearranged head by head.
    pub fn to_by_head(x: &[f32], t: usize, heads: usize) -> Vec<f32> {
        let hd = x.len() / t.max(1) / heads;
        let mut out = Vec::with_capacity(x.len());
        for h in 0..heads {
            for row in x.chunks_exact(heads * hd) {
                out.extend_from_slice(&row[h * hd..][..hd]);
            }
        }
        out
    }
}

/// How K and V values are stored: f32, or f16 where they are read every
/// decoder step (cross-attention), which halves the bytes streamed; products
/// and sums stay in f32.
pub trait Value: Copy + Send + Sync {
    /// `dst = src` in f32.
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `scores[j] = q · rows[j]` for rows `row` apart, each `q.len()` long.
    fn score_rows(q: &[f32], rows: &[Self], row: usize, scores: &mut [f32]);
    /// `out += Σ_j weights[j] · rows[j]` for rows `row` apart, each `out.len()` long.
    fn add_rows(weights: &[f32], rows: &[Self], row: usize, out: &mut [f32]);
}

impl Value for f32 {
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn score_rows(q: &[f32], rows: &[f32], row: usize, scores: &mut [f32]) {
        score_rows(q, rows, row, scores)
    }
    fn add_rows(weights: &[f32], rows: &[f32], row: usize, out: &mut [f32]) {
        add_rows(weights, rows, row, out)
    }
}

impl Value for f16 {
    fn widen(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn score_rows(q: &[f32], rows: &[f16], row: usize, scores: &mut [f32]) {
        gemv::rows_dot(rows, row, q, scores)
    }
    fn add_rows(weights: &[f32], rows: &[f16], row: usize, out: &mut [f32]) {
        gemv::rows_axpy(rows, row, weights, out)
    }
}

/// Which keys each query sees.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mask {
    All,
    /// Query `i` of `tq` sees keys up to `tk - tq + i`: the queries are the
    /// last `tq` positions of the keys' sequence.
    Causal,
}

impl Mask {
    /// How many keys (a prefix) query `i` of `tq` sees among `tk`.
    fn visible(self, i: usize, tq: usize, tk: usize) -> usize {
        match self {
            Mask::All => tk,
            Mask::Causal => tk - tq + i + 1,
        }
    }
}

/// `softmax(q kᵀ / √hd) v` per head, `q` `[tq, d]`, `k` and `v` `tk` rows of
/// `d` laid out as `kv` says (`tk ≥ tq` when causal); the result is `[tq, d]`
/// laid out like `q`.
#[allow(clippy::too_many_arguments)]
pub fn attention<T: Value>(q: &[f32], k: &[T], v: &[T], tq: usize, tk: usize, d: usize, heads: usize, kv: Layout, mask: Mask) -> Vec<f32> {
    let hd = d / heads;
    assert!(q.len() == tq * d && k.len() >= tk * d && v.len() >= tk * d && (mask == Mask::All || tk >= tq));
    if tq == 1 || !supports(hd) {
        // One query, or heads the micro-kernel cannot tile: row by row.
        let mut out = vec![0f32; tq * d];
        for (i, row) in out.chunks_exact_mut(d).enumerate() {
            attention_one(&q[i * d..][..d], k, v, mask.visible(i, tq, tk), heads, kv, row);
        }
        return out;
    }
    let t = tk;
    let panels = t.div_ceil(NR);
    // Per head: Kᵀ as `panels` panels of `[hd][NR]` keys (zero past `t`), and
    // V as `hd / NR` panels of `[t][NR]` columns.
    let packed: Vec<(Vec<Line>, Vec<Line>)> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let mut kt = vec![Line([0.0; NR]); panels * hd];
            let mut row = vec![0f32; hd];
            for (p, panel) in kt.chunks_exact_mut(hd).enumerate() {
                for j in 0..NR.min(t - p * NR) {
                    T::widen(&k[h * kv.head + (p * NR + j) * kv.row..][..hd], &mut row);
                    panel.iter_mut().zip(&row).for_each(|(line, &x)| line.0[j] = x);
                }
            }
            let mut vp = vec![Line([0.0; NR]); hd / NR * t];
            for (p, panel) in vp.chunks_exact_mut(t).enumerate() {
                for (j, line) in panel.iter_mut().enumerate() {
                    T::widen(&v[h * kv.head + j * kv.row + p * NR..][..NR], &mut line.0);
                }
            }
            (kt, vp)
        })
        .collect();

    let kern = kernel::best();
    let scale = 1.0 / (hd as f32).sqrt();
    let ld = panels * NR;
    let blocks = tq.div_ceil(QB);
    let mut out = vec![0f32; tq * d];
    let dst = SendPtr(out.as_mut_ptr());
    (0..heads * blocks).into_par_iter().for_each(|task| {
        let (h, b) = (task / blocks, task % blocks);
        let (kt, vp) = &packed[h];
        let rows = b * QB..(b * QB + QB).min(tq);
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
                    unsafe {
                        kern(hd, queries[s * MR * hd..].as_ptr(), hd, kt[p * hd].0.as_ptr(), scores[s * MR * ld + p * NR..].as_mut_ptr(), ld, Start::Zero)
                    };
                }
            }
            // Softmax each query's row of scores in place, zero past the keys it
            // sees (rows past the block's end only feed tiles that are thrown away).
            for i in 0..rows.len() {
                let (seen, hidden) = scores[i * ld..][..t].split_at_mut(mask.visible(rows.start + i, tq, t));
                softmax(seen);
                hidden.fill(0.0);
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

/// One query `q` (`[d]`) against the first `tk` (≥ 1) rows of `k`, `v`, into
/// `out` (`[d]`). Heads go to the pool in contiguous groups, one per thread.
pub fn attention_one<T: Value>(q: &[f32], k: &[T], v: &[T], tk: usize, heads: usize, kv: Layout, out: &mut [f32]) {
    let hd = q.len() / heads;
    let group = heads.div_ceil(rayon::current_num_threads()) * hd;
    out.par_chunks_mut(group).enumerate().for_each(|(g, out)| {
        let mut scores = vec![0f32; tk];
        for (i, out) in out.chunks_exact_mut(hd).enumerate() {
            let h = g * group / hd + i;
            let scaled: Vec<f32> = q[h * hd..][..hd].iter().map(|x| x / (hd as f32).sqrt()).collect();
            T::score_rows(&scaled, &k[h * kv.head..], kv.row, &mut scores);
            softmax(&mut scores);
            out.fill(0.0);
            T::add_rows(&scores, &v[h * kv.head..], kv.row, out);
        }
    });
}

simd_fn! {
    /// `scores[j] = q · rows[j]`, rows `row` apart.
    fn score_rows(q: &[f32], rows: &[f32], row: usize, scores: &mut [f32]) {
        for (j, s) in scores.iter_mut().enumerate() {
            *s = math::dot(q, &rows[j * row..][..q.len()]);
        }
    }
}

simd_fn! {
    /// `out += Σ weights[j] · rows[j]`, rows `row` apart.
    fn add_rows(weights: &[f32], rows: &[f32], row: usize, out: &mut [f32]) {
        let n = out.len();
        for (j, &p) in weights.iter().enumerate() {
            out.iter_mut().zip(&rows[j * row..][..n]).for_each(|(o, x)| *o += p * x);
        }
    }
}

simd_fn! {
    /// `row = softmax(row)`.
    fn softmax(row: &mut [f32]) {
        math::softmax_in_place(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn naive(q: &[f32], k: &[f32], v: &[f32], tq: usize, tk: usize, d: usize, heads: usize, mask: Mask) -> Vec<f32> {
        let hd = d / heads;
        let mut out = vec![0f32; tq * d];
        for h in 0..heads {
            for i in 0..tq {
                let seen = if mask == Mask::Causal { tk - tq + i + 1 } else { tk };
                let s: Vec<f32> = (0..seen).map(|j| (0..hd).map(|c| q[i * d + h * hd + c] * k[j * d + h * hd + c]).sum::<f32>() / (hd as f32).sqrt()).collect();
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for c in 0..hd {
                    out[i * d + h * hd + c] = (0..seen).map(|j| e[j] * v[j * d + h * hd + c]).sum::<f32>() / sum;
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_attention() {
        // Ragged in every direction: a partial key panel, query block and sliver;
        // one query (the streaming kernel); head sizes the micro-kernel cannot
        // tile (row by row, with a tail past the 8 lanes).
        let cases = [(37, 37, 2, 32), (QB + 5, QB + 5, 3, 32), (1, 1, 1, 32), (5, 40, 2, 32), (1, 1500, 8, 64), (1, 7, 3, 16), (9, 9, 3, 20), (4, 11, 2, 12)];
        for (tq, tk, heads, hd) in cases {
            let d = heads * hd;
            let gen = |seed: usize, t: usize| (0..t * d).map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0).collect::<Vec<f32>>();
            let (q, k, v) = (gen(1, tq), gen(2, tk), gen(3, tk));
            let (kh, vh) = (Layout::to_by_head(&k, tk, heads), Layout::to_by_head(&v, tk, heads));
            for mask in [Mask::All, Mask::Causal] {
                let want = naive(&q, &k, &v, tq, tk, d, heads, mask);
                let interleaved = attention(&q, &k, &v, tq, tk, d, heads, Layout::interleaved(d, heads), mask);
                let by_head = attention(&q, &kh, &vh, tq, tk, d, heads, Layout::by_head(tk, hd), mask);
                for got in [interleaved, by_head] {
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-4, "{tq}x{tk}, {heads} heads of {hd}, {mask:?}: {a} vs {b}");
                    }
                }
                // f16 storage: the reference on the same rounded values.
                let half = |x: &[f32]| x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<f16>>();
                let widened = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let (k16, v16) = (half(&kh), half(&vh));
                let want = naive(&q, &widened(&half(&k)), &widened(&half(&v)), tq, tk, d, heads, mask);
                let got = attention(&q, &k16, &v16, tq, tk, d, heads, Layout::by_head(tk, hd), mask);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "f16 {tq}x{tk}, {heads} heads of {hd}, {mask:?}: {a} vs {b}");
                }
            }
        }
    }
}
