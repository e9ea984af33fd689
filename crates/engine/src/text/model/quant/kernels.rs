//! Dot products of packed 4-row weight groups with Q8 activation blocks: an AVX2 kernel
//! (int8 `maddubs`, 4 weight rows and up to 4 activation rows per pass) and a portable
//! scalar one computing the same sums.
use super::pack::{Layout, BLOCK, ROWS};

/// One quantized activation block: `x ≈ d * q`, with `s = d * Σq` for the offset term
/// and the exact `Σq` of each half block for the zero points.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub q: [i8; BLOCK],
    pub d: f32,
    pub s: f32,
    pub sums: [i32; 2],
}

/// Quantizes one row of activations (length a multiple of 32) to Q8 blocks.
pub fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { quantize_row_avx2(x, out) };
    }
    quantize_row_body(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], out: &mut [ActBlock]) {
    quantize_row_body(x, out)
}

/// Compiled twice (AVX2 and portable); the loops vectorize in each.
#[inline(always)]
fn quantize_row_body(x: &[f32], out: &mut [ActBlock]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, &v) in ob.q.iter_mut().zip(xb) {
            *q = crate::math::round_small(v * id) as i8;
        }
        ob.sums = [0, 1].map(|h| ob.q[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum());
        ob.d = d;
        ob.s = d * (ob.sums[0] + ob.sums[1]) as f32;
    }
}

/// `out[i][r]` = dot of weight row `r` of the group starting at `w` (`nb` blocks) with
/// activation row `x[i]` (`nb` blocks each).
pub type GroupKernel = unsafe fn(Layout, *const u8, usize, &[&[ActBlock]], &mut [[f32; ROWS]]);

pub fn best_kernel() -> GroupKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return avx2::group_dot;
        }
    }
    scalar_group_dot
}

/// Portable reference over the packed layout. It and the SIMD kernels (this file's and
/// tile.rs's) compute each output with the same operations, so they agree exactly: per
/// block, the exact integer sum `P` of `(q - z) x` (per half block where the layout has
/// half-block scales), then `acc = fma(P, d * dx, acc)` (each half in turn), then, for
/// layouts with an offset, `acc = fma(m, s, acc)`.
pub unsafe fn scalar_group_dot(layout: Layout, w: *const u8, nb: usize, x: &[&[ActBlock]], out: &mut [[f32; ROWS]]) {
    let gb = layout.group_bytes();
    let group = std::slice::from_raw_parts(w, nb * gb);
    let (qs, hi) = (layout.quants_offset(), layout.high_bits_offset());
    for (xi, o) in x.iter().zip(out.iter_mut()) {
        *o = [0.0; ROWS];
        for (b, g) in group.chunks_exact(gb).enumerate() {
            let xb = &xi[b];
            for (r, acc) in o.iter_mut().enumerate() {
                let q = |j: usize| -> i32 {
                    if !layout.unsigned_quants() {
                        return g[qs + 32 * r + j] as i8 as i32;
                    }
                    let byte = g[qs + 16 * r + j % 16];
                    let nib = (if j < 16 { byte & 0xF } else { byte >> 4 }) as i32;
                    let high = match layout.quant_bits() {
                        5 => (g[hi + j % 16] as u32 >> (2 * r + j / 16)) & 1,
                        6 => (g[hi + 8 * r + j % 8] as u32 >> (2 * (j / 8))) & 3,
                        _ => 0,
                    };
                    nib + ((high as i32) << 4) - layout.zero_point()
                };
                let (mut lo, mut hi) = (0i32, 0i32);
                for j in 0..16 {
                    lo += q(j) * xb.q[j] as i32;
                    hi += q(j + 16) * xb.q[j + 16] as i32;
                }
                let d = layout.scale(g, r);
                if layout.has_half_scales() {
                    *acc = (lo as f32).mul_add(d * xb.d, *acc);
                    *acc = (hi as f32).mul_add(layout.scale(g, ROWS + r) * xb.d, *acc);
                } else {
                    *acc = ((lo + hi) as f32).mul_add(d * xb.d, *acc);
                    if layout.stores_offset() {
                        *acc = layout.scale(g, ROWS + r).mul_add(xb.s, *acc);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::{ActBlock, Layout, ROWS};
    use std::arch::x86_64::*;

    /// Layouts as const-generic parameters.
    pub(crate) const fn layout_of(l: u8) -> Layout {
        match l {
            0 => Layout::Nib4Sym,
            1 => Layout::Nib4,
            2 => Layout::Nib4K,
            3 => Layout::Nib5Sym,
            4 => Layout::Nib5,
            5 => Layout::I8,
            _ => Layout::I6Half,
        }
    }

    const fn code_of(layout: Layout) -> u8 {
        match layout {
            Layout::Nib4Sym => 0,
            Layout::Nib4 => 1,
            Layout::Nib4K => 2,
            Layout::Nib5Sym => 3,
            Layout::Nib5 => 4,
            Layout::I8 => 5,
            Layout::I6Half => 6,
        }
    }

    /// Each layout's code, as the const-generic kernels take it.
    pub(crate) mod codes {
        use super::{code_of, Layout};
        pub const NIB4SYM: u8 = code_of(Layout::Nib4Sym);
        pub const NIB4: u8 = code_of(Layout::Nib4);
        pub const NIB4K: u8 = code_of(Layout::Nib4K);
        pub const NIB5SYM: u8 = code_of(Layout::Nib5Sym);
        pub const NIB5: u8 = code_of(Layout::Nib5);
        pub const I8: u8 = code_of(Layout::I8);
        pub const I6HALF: u8 = code_of(Layout::I6Half);
    }

    /// Activation rows are taken 4, 2 or 1 at a time.
    unsafe fn rows_of<const L: u8>(w: *const u8, nb: usize, x: &[&[ActBlock]], out: &mut [[f32; ROWS]]) {
        let mut i = 0;
        while i < x.len() {
            match x.len() - i {
                n if n >= 4 => {
                    kernel::<L, 4>(w, nb, &x[i..i + 4], &mut out[i..i + 4]);
                    i += 4;
                }
                2 | 3 => {
                    kernel::<L, 2>(w, nb, &x[i..i + 2], &mut out[i..i + 2]);
                    i += 2;
                }
                _ => {
                    kernel::<L, 1>(w, nb, &x[i..i + 1], &mut out[i..i + 1]);
                    i += 1;
                }
            }
        }
    }

    pub unsafe fn group_dot(layout: Layout, w: *const u8, nb: usize, x: &[&[ActBlock]], out: &mut [[f32; ROWS]]) {
        use codes::*;
        match layout {
            Layout::Nib4Sym => rows_of::<NIB4SYM>(w, nb, x, out),
            Layout::Nib4 => rows_of::<NIB4>(w, nb, x, out),
            Layout::Nib4K => rows_of::<NIB4K>(w, nb, x, out),
            Layout::Nib5Sym => rows_of::<NIB5SYM>(w, nb, x, out),
            Layout::Nib5 => rows_of::<NIB5>(w, nb, x, out),
            Layout::I8 => rows_of::<I8>(w, nb, x, out),
            Layout::I6Half => rows_of::<I6HALF>(w, nb, x, out),
        }
    }

    /// The 5th bits of a 5-bit group's 4 rows, byte j of the low lane for column j and of
    /// the high lane for column j + 16: row r's bit is bit 2r of each byte.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn fifth_bit_planes<const L: u8>(g: *const u8) -> __m256i {
        if layout_of(L).quant_bits() != 5 {
            return _mm256_setzero_si256();
        }
        let h = _mm_loadu_si128(g.add(layout_of(L).high_bits_offset()) as *const __m128i);
        _mm256_set_m128i(_mm_srli_epi16(h, 1), h)
    }

    /// The 32 quants of row `r` of the group at `g`, in column order (before the zero point).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn quants<const L: u8>(g: *const u8, r: usize, fifth_bits: __m256i) -> __m256i {
        let layout = layout_of(L);
        let qs = g.add(layout.quants_offset());
        if !layout.unsigned_quants() {
            return _mm256_loadu_si256(qs.add(32 * r) as *const __m256i);
        }
        let v = _mm_loadu_si128(qs.add(16 * r) as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
        let nib = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
        let hi = g.add(layout.high_bits_offset());
        match layout.quant_bits() {
            5 => {
                // Row r's bit 2r to bit 4 (shifts of 16-bit lanes: bit 4 of a byte only
                // ever comes from the same byte here).
                let at4 = match r {
                    0 => _mm256_slli_epi16(fifth_bits, 4),
                    1 => _mm256_slli_epi16(fifth_bits, 2),
                    2 => fifth_bits,
                    _ => _mm256_srli_epi16(fifth_bits, 2),
                };
                _mm256_or_si256(nib, _mm256_and_si256(at4, _mm256_set1_epi8(0x10)))
            }
            6 => {
                // Byte j of the 8 holds columns j, j+8, j+16, j+24: 64-bit lane i keeps pair i.
                let bytes = (hi.add(8 * r) as *const i64).read_unaligned();
                let pairs = _mm256_srlv_epi64(_mm256_set1_epi64x(bytes), _mm256_set_epi64x(6, 4, 2, 0));
                let high = _mm256_slli_epi16(_mm256_and_si256(pairs, _mm256_set1_epi8(3)), 4);
                _mm256_or_si256(nib, high)
            }
            _ => nib,
        }
    }

    /// Scale set `set` (0: `d`/`dlo`, 1: `m`/`dhi`) of the 4 rows of the group at `g`.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(crate) unsafe fn scale_set<const L: u8>(g: *const u8, set: usize) -> __m128 {
        let layout = layout_of(L);
        let f16x4 = |at: usize| _mm_cvtph_ps(_mm_loadl_epi64(g.add(at) as *const __m128i));
        if layout.split_scales() {
            // The same product as `Layout::scale`: super-block scale times i8 sub-block scale.
            let sub = _mm_cvtepi8_epi32(_mm_cvtsi32_si128((g.add(set * ROWS) as *const i32).read_unaligned()));
            _mm_mul_ps(f16x4(layout.super_offset(set)), _mm_cvtepi32_ps(sub))
        } else {
            f16x4(set * ROWS * 2)
        }
    }

    /// How far ahead of the block being read its weights are prefetched: one thread's
    /// stream of weights alone does not keep enough DRAM reads in flight (decode cost
    /// about 13% less CPU time per token with it, 1 or 2 threads; 1–8 KiB measure alike).
    const PREFETCH_AHEAD: usize = 2048;

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<const L: u8, const NX: usize>(w: *const u8, nb: usize, x: &[&[ActBlock]], out: &mut [[f32; ROWS]]) {
        let layout = layout_of(L);
        let unsigned = layout.unsigned_quants();
        let gb = layout.group_bytes();
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm_setzero_ps(); NX];
        let xp: [*const ActBlock; NX] = std::array::from_fn(|i| x[i].as_ptr());
        for b in 0..nb {
            let g = w.add(b * gb);
            for line in (0..gb).step_by(64) {
                // A hint only: past the end of the weights it reads nothing.
                _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
            }
            let d = scale_set::<L>(g, 0);
            let second = if layout.scale_sets() == 2 { scale_set::<L>(g, 1) } else { d };
            let fifth_bits = fifth_bit_planes::<L>(g);
            let q: [__m256i; ROWS] = std::array::from_fn(|r| quants::<L>(g, r, fifth_bits));
            // Signed quants: |q| against x carrying q's sign (maddubs wants an unsigned side).
            let aq: [__m256i; ROWS] = if unsigned { q } else { std::array::from_fn(|r| _mm256_sign_epi8(q[r], q[r])) };
            for i in 0..NX {
                let xb = &*xp[i].add(b);
                let xv = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                let p: [__m256i; ROWS] = std::array::from_fn(|r| {
                    let xs = if unsigned { xv } else { _mm256_sign_epi8(xv, q[r]) };
                    _mm256_maddubs_epi16(aq[r], xs)
                });
                // Σ q x of rows [r0 r1 r2 r3], the first half block in the low lane and the
                // second in the high. Horizontal adds in 16 bits while the sums fit an i16:
                // of 8 products for up to 5-bit quants (8·31·127), of 4 for 6-bit (4·63·127);
                // 8-bit ones widen at once. Fewer shuffles than widening each row first.
                let s = match layout.quant_bits() {
                    4 | 5 => {
                        let (p01, p23) = (_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3]));
                        _mm256_madd_epi16(_mm256_hadd_epi16(p01, p23), ones)
                    }
                    6 => {
                        let (p01, p23) = (_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3]));
                        _mm256_hadd_epi32(_mm256_madd_epi16(p01, ones), _mm256_madd_epi16(p23, ones))
                    }
                    _ => {
                        let p = p.map(|p| _mm256_madd_epi16(p, ones));
                        _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]))
                    }
                };
                let (lo, hi) = (_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                // Σ (q - z) x = Σ q x - z Σ x.
                let z = layout.zero_point();
                let minus_zx = |v: __m128i, sum: i32| if z != 0 { _mm_sub_epi32(v, _mm_set1_epi32(z * sum)) } else { v };
                let dx = _mm_set1_ps(xb.d);
                if layout.has_half_scales() {
                    let (lo, hi) = (minus_zx(lo, xb.sums[0]), minus_zx(hi, xb.sums[1]));
                    acc[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(lo), _mm_mul_ps(d, dx), acc[i]);
                    acc[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(hi), _mm_mul_ps(second, dx), acc[i]);
                } else {
                    let all = minus_zx(_mm_add_epi32(lo, hi), xb.sums[0] + xb.sums[1]);
                    acc[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(all), _mm_mul_ps(d, dx), acc[i]);
                    if layout.stores_offset() {
                        acc[i] = _mm_fmadd_ps(second, _mm_set1_ps(xb.s), acc[i]);
                    }
                }
            }
        }
        for i in 0..NX {
            _mm_storeu_ps(out[i].as_mut_ptr(), acc[i]);
        }
    }
}
