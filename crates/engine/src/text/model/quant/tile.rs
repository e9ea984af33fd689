//! The prefill GEMM (AVX2): when many activation rows meet one weight, each task first
//! converts its weight rows, 8 at a time, from their packed layout into one uniform
//! tile (a byte per weight, the 8 rows interleaved 4 columns at a time; scales as f32),
//! paid once for all the rows of x. Then one `maddubs` of a tile vector against 4 bytes
//! of an activation row, broadcast, gives all 8 rows' sums over those 4 columns: no
//! horizontal adds, and for 4- and 5-bit weights the 16-bit sums of several columns add
//! up before the one widening `madd`.
//!
//! Each output is computed with exactly the operations of the group kernel (see
//! `kernels::scalar_group_dot`), so a row's result does not depend on how many rows it was
//! batched with: a prompt prefilled at once, in chunks, or from a cached prefix gives
//! the same logits.
use super::kernels::avx2::codes::*;
use super::kernels::avx2::{fifth_bit_planes, layout_of, quants, scale_set};
use super::kernels::ActBlock;
use super::pack::{Layout, BLOCK, ROWS};
use super::{PackedWeight, SendPtr};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows in one tile.
const TILE_ROWS: usize = 2 * ROWS;
/// Tiles per rayon task: they stay in L2 while the task streams x past them.
const TILES_PER_TASK: usize = 4;
/// Activation rows per pass over a task's tiles (those rows stay in L1 meanwhile).
const X_ROWS: usize = 12;
/// Output columns of one task.
const TASK_COLS: usize = TILES_PER_TASK * TILE_ROWS;

/// 32 columns of a tile's 8 rows. Row r's weights are `d[r] * (q - z) + m[r]` (z the
/// layout's zero point), with `d[8 + r]` scaling the second half block where the
/// layout has half-block scales.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct TileBlock {
    /// Columns `4c..4c + 4` of row r at `32c + 4r`.
    q: [u8; TILE_ROWS * BLOCK],
    d: [f32; 2 * TILE_ROWS],
    m: [f32; TILE_ROWS],
}

const EMPTY: TileBlock = TileBlock { q: [0; TILE_ROWS * BLOCK], d: [0.0; 2 * TILE_ROWS], m: [0.0; TILE_ROWS] };

thread_local! {
    static TILES: RefCell<Vec<TileBlock>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU runs the tile GEMM.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// `ys[i] = x @ W_i^T` for the quantized rows `x` (the caller checked the shapes and
/// [`available`]).
pub fn matmul_many(ws: &[&PackedWeight], x: &[&[ActBlock]], ys: &[SendPtr]) {
    let nb = ws[0].k / BLOCK;
    let tasks: Vec<(usize, usize)> =
        ws.iter().enumerate().flat_map(|(i, w)| (0..w.n.div_ceil(TILE_ROWS)).step_by(TILES_PER_TASK).map(move |t| (i, t))).collect();
    tasks.par_iter().for_each(|&(i, t0)| {
        let w = ws[i];
        let tiles = t0..(t0 + TILES_PER_TASK).min(w.n.div_ceil(TILE_ROWS));
        let cols = t0 * TILE_ROWS..(tiles.end * TILE_ROWS).min(w.n);
        TILES.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(tiles.len() * nb, EMPTY);
            for (t, dst) in tiles.zip(buf.chunks_exact_mut(nb)) {
                // SAFETY: the CPU has AVX2, FMA and F16C (`available`).
                unsafe { convert(w, t, dst) };
            }
            let mut out = [[0f32; TASK_COLS]; X_ROWS];
            for r0 in (0..x.len()).step_by(X_ROWS) {
                let rows = r0..(r0 + X_ROWS).min(x.len());
                for (t, tile) in buf.chunks_exact(nb).enumerate() {
                    // SAFETY: as above; every row of x has `nb` blocks, like the tile.
                    unsafe { dot(w.layout, tile, &x[rows.clone()], &mut out, t * TILE_ROWS) };
                }
                for (r, o) in rows.zip(&out) {
                    // SAFETY: each (row, col) of each output is written by one task only.
                    let y = unsafe { std::slice::from_raw_parts_mut(ys[i].0.add(r * w.n + cols.start), cols.len()) };
                    // A whole task's width as a fixed-size copy (inlined, not a memcpy call).
                    match <&mut [f32; TASK_COLS]>::try_from(&mut *y) {
                        Ok(y) => *y = *o,
                        Err(_) => y.copy_from_slice(&o[..cols.len()]),
                    }
                }
            }
        });
    });
}

/// Tile `t` of `w` (its packed groups `2t` and `2t + 1`) into `dst` (`nb` blocks).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn convert(w: &PackedWeight, t: usize, dst: &mut [TileBlock]) {
    match w.layout {
        Layout::Nib4Sym => convert_as::<NIB4SYM>(w, t, dst),
        Layout::Nib4 => convert_as::<NIB4>(w, t, dst),
        Layout::Nib4K => convert_as::<NIB4K>(w, t, dst),
        Layout::Nib5Sym => convert_as::<NIB5SYM>(w, t, dst),
        Layout::Nib5 => convert_as::<NIB5>(w, t, dst),
        Layout::I8 => convert_as::<I8>(w, t, dst),
        Layout::I6Half => convert_as::<I6HALF>(w, t, dst),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn convert_as<const L: u8>(w: &PackedWeight, t: usize, dst: &mut [TileBlock]) {
    let layout = layout_of(L);
    let (nb, gb) = (w.k / BLOCK, layout.group_bytes());
    let groups = w.n.div_ceil(ROWS);
    for (b, tb) in dst.iter_mut().enumerate() {
        // Rows 0..4 from group 2t, rows 4..8 from group 2t + 1 (zeros past the last).
        let mut q = [_mm256_setzero_si256(); TILE_ROWS];
        let mut sets = [[_mm_setzero_ps(); 2]; 2];
        for half in 0..2 {
            let gi = 2 * t + half;
            if gi < groups {
                let g = w.data[(gi * nb + b) * gb..][..gb].as_ptr();
                let fifth = fifth_bit_planes::<L>(g);
                for r in 0..ROWS {
                    q[half * ROWS + r] = quants::<L>(g, r, fifth);
                }
                sets[half] = [scale_set::<L>(g, 0), scale_set::<L>(g, 1)];
            }
        }
        for (c, v) in transpose_quads(q).into_iter().enumerate() {
            _mm256_store_si256(tb.q.as_mut_ptr().add(32 * c) as *mut __m256i, v);
        }
        let d = _mm256_set_m128(sets[1][0], sets[0][0]);
        let second = _mm256_set_m128(sets[1][1], sets[0][1]);
        _mm256_store_ps(tb.d.as_mut_ptr(), d);
        _mm256_store_ps(tb.d.as_mut_ptr().add(TILE_ROWS), if layout.has_half_scales() { second } else { d });
        _mm256_store_ps(tb.m.as_mut_ptr(), if layout.stores_offset() { second } else { _mm256_setzero_ps() });
    }
}

/// Rows of 32 quants in column order to the tile's order: vector c holds columns
/// `4c..4c + 4` of rows 0..8 (a transpose of 8 × 8 four-byte cells).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose_quads(r: [__m256i; TILE_ROWS]) -> [__m256i; TILE_ROWS] {
    let lo32 = |a, b| _mm256_unpacklo_epi32(a, b);
    let hi32 = |a, b| _mm256_unpackhi_epi32(a, b);
    // Pairs of rows, cells c and c + 1 interleaved in each 128-bit lane.
    let t = [lo32(r[0], r[1]), hi32(r[0], r[1]), lo32(r[2], r[3]), hi32(r[2], r[3]), lo32(r[4], r[5]), hi32(r[4], r[5]), lo32(r[6], r[7]), hi32(r[6], r[7])];
    // u[j]: column j (low lane) and j + 4 (high lane) of rows 0..4; u[4 + j], rows 4..8.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (base, j) = (4 * (i / 4), i % 4);
        let (a, b) = (t[base + j / 2], t[base + 2 + j / 2]);
        if j % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    std::array::from_fn(|c| if c < 4 { _mm256_permute2x128_si256::<0x20>(u[c], u[4 + c]) } else { _mm256_permute2x128_si256::<0x31>(u[c - 4], u[c]) })
}

/// `out[i][col + r]` = dot of tile row r with activation row `x[i]`, activation rows
/// taken 3, 2 or 1 at a time (4 would spill registers).
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(layout: Layout, tile: &[TileBlock], x: &[&[ActBlock]], out: &mut [[f32; TASK_COLS]], col: usize) {
    type Kernel = unsafe fn(&[TileBlock], &[&[ActBlock]], &mut [[f32; TASK_COLS]], usize);
    let mut done = 0;
    while done < x.len() {
        let n = (x.len() - done).min(3);
        // The kernel depends on the quants' width, zero point or offset, and half scales.
        let kernel: Kernel = match (layout, n) {
            (Layout::Nib4Sym, 3) => dot_as::<NIB4SYM, 3>,
            (Layout::Nib4Sym, 2) => dot_as::<NIB4SYM, 2>,
            (Layout::Nib4Sym, _) => dot_as::<NIB4SYM, 1>,
            (Layout::Nib4 | Layout::Nib4K, 3) => dot_as::<NIB4, 3>,
            (Layout::Nib4 | Layout::Nib4K, 2) => dot_as::<NIB4, 2>,
            (Layout::Nib4 | Layout::Nib4K, _) => dot_as::<NIB4, 1>,
            (Layout::Nib5Sym, 3) => dot_as::<NIB5SYM, 3>,
            (Layout::Nib5Sym, 2) => dot_as::<NIB5SYM, 2>,
            (Layout::Nib5Sym, _) => dot_as::<NIB5SYM, 1>,
            (Layout::Nib5, 3) => dot_as::<NIB5, 3>,
            (Layout::Nib5, 2) => dot_as::<NIB5, 2>,
            (Layout::Nib5, _) => dot_as::<NIB5, 1>,
            (Layout::I8, 3) => dot_as::<I8, 3>,
            (Layout::I8, 2) => dot_as::<I8, 2>,
            (Layout::I8, _) => dot_as::<I8, 1>,
            (Layout::I6Half, 3) => dot_as::<I6HALF, 3>,
            (Layout::I6Half, 2) => dot_as::<I6HALF, 2>,
            (Layout::I6Half, _) => dot_as::<I6HALF, 1>,
        };
        let rows = done..done + n;
        kernel(tile, &x[rows.clone()], &mut out[rows], col);
        done += n;
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_as<const L: u8, const NX: usize>(tile: &[TileBlock], x: &[&[ActBlock]], out: &mut [[f32; TASK_COLS]], col: usize) {
    let layout = layout_of(L);
    let signed = !layout.unsigned_quants();
    let z = layout.zero_point();
    let ones = _mm256_set1_epi16(1);
    let widen = |v: __m256i| _mm256_madd_epi16(v, ones);
    let add16 = _mm256_add_epi16;
    let add32 = _mm256_add_epi32;
    let mut acc = [_mm256_setzero_ps(); NX];
    for (b, t) in tile.iter().enumerate() {
        let q: [__m256i; 8] = std::array::from_fn(|c| _mm256_load_si256(t.q.as_ptr().add(32 * c) as *const __m256i));
        // maddubs wants an unsigned side: signed weights go in as |q|, x taking q's sign.
        let aq: [__m256i; 8] = if signed { std::array::from_fn(|c| _mm256_sign_epi8(q[c], q[c])) } else { q };
        for i in 0..NX {
            let xb = &*x[i].as_ptr().add(b);
            let xq = xb.q.as_ptr() as *const i32;
            let p: [__m256i; 8] = std::array::from_fn(|c| {
                let xv = _mm256_set1_epi32(xq.add(c).read_unaligned());
                _mm256_maddubs_epi16(aq[c], if signed { _mm256_sign_epi8(xv, q[c]) } else { xv })
            });
            // 16-bit sums of pairs of columns are at most 2·15·127 (4-bit), 2·31·127
            // (5-bit), 2·63·127 (6-bit), 2·127·127 (8-bit): add as many as fit an i16.
            let half = |p: &[__m256i]| match layout.quant_bits() {
                4 | 5 => widen(add16(add16(p[0], p[1]), add16(p[2], p[3]))),
                6 => add32(widen(add16(p[0], p[1])), widen(add16(p[2], p[3]))),
                _ => add32(add32(widen(p[0]), widen(p[1])), add32(widen(p[2]), widen(p[3]))),
            };
            let [slo, shi] = xb.sums;
            let dx = _mm256_set1_ps(xb.d);
            if layout.has_half_scales() {
                // Σ (q - z) x per half, exactly, then each half's scale.
                let lo = _mm256_sub_epi32(half(&p[..4]), _mm256_set1_epi32(z * slo));
                let hi = _mm256_sub_epi32(half(&p[4..]), _mm256_set1_epi32(z * shi));
                let dlo = _mm256_mul_ps(_mm256_load_ps(t.d.as_ptr()), dx);
                let dhi = _mm256_mul_ps(_mm256_load_ps(t.d.as_ptr().add(TILE_ROWS)), dx);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), dlo, acc[i]);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), dhi, acc[i]);
            } else {
                let all = if layout.quant_bits() == 4 {
                    // 8 pairs of 4-bit columns still fit an i16.
                    widen(add16(add16(add16(p[0], p[1]), add16(p[2], p[3])), add16(add16(p[4], p[5]), add16(p[6], p[7]))))
                } else {
                    add32(half(&p[..4]), half(&p[4..]))
                };
                let all = if z != 0 { _mm256_sub_epi32(all, _mm256_set1_epi32(z * (slo + shi))) } else { all };
                let d = _mm256_mul_ps(_mm256_load_ps(t.d.as_ptr()), dx);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(all), d, acc[i]);
                if layout.stores_offset() {
                    acc[i] = _mm256_fmadd_ps(_mm256_load_ps(t.m.as_ptr()), _mm256_set1_ps(xb.s), acc[i]);
                }
            }
        }
    }
    for i in 0..NX {
        _mm256_storeu_ps(out[i][col..col + TILE_ROWS].as_mut_ptr(), acc[i]);
    }
}
