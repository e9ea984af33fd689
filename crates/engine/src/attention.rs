//! Attention of query rows against one head's keys and values, read where they lie:
//! in the text engine's KV cache (which may hold them in several runs, see
//! text/model/cache.rs) or in BERT's gathered rows (embed/ops.rs). Three passes over
//! each query's row of scores: the scores, their softmax, the weighted sum of the
//! values. Each step is indexed by key position alone, so the result does not depend
//! on how the positions are split into runs (a reused prompt prefix gives the same
//! numbers as a fresh prefill), nor on which other queries it is computed with: the
//! queries that share a key/value head (grouped-query attention) go together only so
//! that each block of keys and values is read from memory once for all of them.
use std::cell::RefCell;
use std::ops::Range;

use half::f16;

use crate::math::softmax_in_place;

/// What keys and values are stored as: f32 (BERT's gathered rows) or f16 (the text
/// engine's KV cache). Products and sums are f32 either way.
pub trait Element: Copy + Sync {
    fn to_f32(self) -> f32;

    /// Eight values from `p` as f32 (AVX2 code; F16C for f16).
    ///
    /// # Safety
    /// `p` points at 8 readable values, and the caller is compiled for AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl Element for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

thread_local! {
    /// One row of scores per query, reused from call to call.
    static SCORES: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Keys whose values are summed into every query's output before the next keys are
/// read (their values stay in L1 meanwhile).
const VALUE_BLOCK: usize = 32;

/// Where one head's vectors lie in runs of cache rows: position `j`'s key (and value)
/// is `keys[j * stride + offset..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadLayout {
    pub offset: usize,
    pub stride: usize,
}

/// `out_i = softmax(scale · K q_i) · V` over the keys of `ranges[i]`, for the query rows
/// `q_i` of `queries` (rows of `hd`), into the rows of `out`. `runs(f)` must call
/// `f(keys, values)` for each run of positions in order (the same runs each time: it is
/// called twice); `ranges` count positions from the first one it gives, and none is
/// empty. Queries whose ranges overlap (a prompt's positions against one head) share
/// each block of keys and values while it is in L1.
pub fn attend<T: Element>(
    queries: &[f32],
    hd: usize,
    ranges: &[Range<usize>],
    scale: f32,
    at: HeadLayout,
    runs: impl Fn(&mut dyn FnMut(&[T], &[T])),
    out: &mut [f32],
) {
    assert_eq!(queries.len(), out.len(), "one output row per query row");
    assert_eq!(queries.len(), ranges.len() * hd, "one key range per query row");
    assert!(ranges.iter().all(|r| !r.is_empty()), "every query attends to a key");
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has AVX2, FMA and F16C, and the head size is a multiple of 8.
        return unsafe { avx2::attend(queries, hd, ranges, scale, at, runs, out) };
    }
    attend_portable(queries, hd, ranges, scale, at, runs, out)
}

/// The part of `range` within a run of `n` positions from `pos`, counted from `pos`.
#[inline(always)]
fn within(range: &Range<usize>, pos: usize, n: usize) -> Range<usize> {
    let (lo, hi) = (range.start.max(pos), range.end.min(pos + n));
    if lo < hi {
        lo - pos..hi - pos
    } else {
        0..0
    }
}

/// A row of scores for each query, as long as its range of keys (every entry is
/// written before it is read).
fn score_rows<'a>(scores: &'a mut Vec<Vec<f32>>, ranges: &[Range<usize>]) -> &'a mut [Vec<f32>] {
    if scores.len() < ranges.len() {
        scores.resize_with(ranges.len(), Vec::new);
    }
    let rows = &mut scores[..ranges.len()];
    rows.iter_mut().zip(ranges).for_each(|(row, range)| row.resize(range.len(), 0.0));
    rows
}

/// The same three passes in plain Rust (the reference the SIMD version is tested on).
fn attend_portable<T: Element>(
    queries: &[f32],
    hd: usize,
    ranges: &[Range<usize>],
    scale: f32,
    at: HeadLayout,
    runs: impl Fn(&mut dyn FnMut(&[T], &[T])),
    out: &mut [f32],
) {
    SCORES.with_borrow_mut(|scores| {
        let scores = score_rows(scores, ranges);
        let mut pos = 0;
        runs(&mut |keys, _| {
            let n = keys.len() / at.stride;
            for ((q, row), range) in queries.chunks_exact(hd).zip(scores.iter_mut()).zip(ranges) {
                for j in within(range, pos, n) {
                    let k = &keys[j * at.stride + at.offset..][..hd];
                    row[pos + j - range.start] = q.iter().zip(k).map(|(q, k)| q * k.to_f32()).sum::<f32>() * scale;
                }
            }
            pos += n;
        });
        scores.iter_mut().for_each(|row| softmax_in_place(row));
        out.fill(0.0);
        let mut pos = 0;
        runs(&mut |_, values| {
            let n = values.len() / at.stride;
            for ((o, row), range) in out.chunks_exact_mut(hd).zip(scores.iter()).zip(ranges) {
                let mine = within(range, pos, n);
                for j in mine {
                    let (p, v) = (row[pos + j - range.start], &values[j * at.stride + at.offset..][..hd]);
                    o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v.to_f32());
                }
            }
            pos += n;
        });
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{score_rows, softmax_in_place, within, Element, HeadLayout, Range, SCORES, VALUE_BLOCK};
    use std::arch::x86_64::*;

    /// Keys (or values) this many positions ahead of those being read are prefetched:
    /// a head's vectors lie a whole cache row apart (3 heads' worth in SmolLM2), which
    /// the hardware prefetchers do not follow across pages, and a decode step reads
    /// them from DRAM (the weights in between evict them).
    const PREFETCH_AHEAD: usize = 32;

    /// Prefetches the `n` values from `p` (their cache lines), which may lie past the
    /// end of the run: a prefetch does not fault, and the address is only computed.
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T, n: usize) {
        for byte in (0..n * size_of::<T>()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(byte));
        }
    }

    /// Eight horizontal sums, one per accumulator, as one vector.
    #[inline(always)]
    unsafe fn hsum8(a: [__m256; 8]) -> __m256 {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31))
    }

    /// Scores of the 8 keys at `key(0..8)` against `q` (`hd` a multiple of 8).
    #[inline(always)]
    unsafe fn scores8<T: Element>(q: *const f32, key: impl Fn(usize) -> *const T, hd: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qc = _mm256_loadu_ps(q.add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qc, T::load8(key(j).add(c)), *a);
            }
        }
        hsum8(acc)
    }

    /// Scores of the 4 keys at `key(0..4)` against `q0` (lanes 0..4) and `q1` (lanes
    /// 4..8): each key chunk loaded once for both queries, and each score summed exactly
    /// as `scores8` sums it.
    #[inline(always)]
    unsafe fn scores2x4<T: Element>(q0: *const f32, q1: *const f32, key: impl Fn(usize) -> *const T, hd: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let (a, b) = (_mm256_loadu_ps(q0.add(c)), _mm256_loadu_ps(q1.add(c)));
            for j in 0..4 {
                let k = T::load8(key(j).add(c));
                acc[j] = _mm256_fmadd_ps(a, k, acc[j]);
                acc[4 + j] = _mm256_fmadd_ps(b, k, acc[4 + j]);
            }
        }
        hsum8(acc)
    }

    /// `o[..8W] += Σ_j p[j] · v_j[..8W]`, the value of key j at `v + j * stride`; `W`
    /// registers accumulate (a constant, so the loop over them unrolls).
    #[inline(always)]
    unsafe fn weighted_sum<T: Element, const W: usize>(o: *mut f32, v: *const T, stride: usize, p: &[f32]) {
        let mut acc: [__m256; W] = std::array::from_fn(|i| _mm256_loadu_ps(o.add(8 * i)));
        for (j, &p) in p.iter().enumerate() {
            prefetch(v.wrapping_add((j + PREFETCH_AHEAD) * stride), 8 * W);
            let pv = _mm256_set1_ps(p);
            let v = v.add(j * stride);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, T::load8(v.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(8 * i), *a);
        }
    }

    /// `weighted_sum` for two queries' outputs over the same keys: each value chunk is
    /// loaded once for both.
    #[inline(always)]
    unsafe fn weighted_sum2<T: Element, const W: usize>(o: [*mut f32; 2], v: *const T, stride: usize, p: [&[f32]; 2]) {
        let mut a0: [__m256; W] = std::array::from_fn(|i| _mm256_loadu_ps(o[0].add(8 * i)));
        let mut a1: [__m256; W] = std::array::from_fn(|i| _mm256_loadu_ps(o[1].add(8 * i)));
        for (j, (&p0, &p1)) in p[0].iter().zip(p[1]).enumerate() {
            prefetch(v.wrapping_add((j + PREFETCH_AHEAD) * stride), 8 * W);
            let (b0, b1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
            let v = v.add(j * stride);
            for i in 0..W {
                let x = T::load8(v.add(8 * i));
                a0[i] = _mm256_fmadd_ps(b0, x, a0[i]);
                a1[i] = _mm256_fmadd_ps(b1, x, a1[i]);
            }
        }
        for i in 0..W {
            _mm256_storeu_ps(o[0].add(8 * i), a0[i]);
            _mm256_storeu_ps(o[1].add(8 * i), a1[i]);
        }
    }

    /// Writes lanes `lanes` of `s` to `row` from index `at`.
    #[inline(always)]
    unsafe fn put(row: &mut [f32], at: usize, s: __m256, lanes: Range<usize>) {
        if lanes.len() == 8 {
            _mm256_storeu_ps(row[at..at + 8].as_mut_ptr(), s);
        } else if !lanes.is_empty() {
            let mut all = [0f32; 8];
            _mm256_storeu_ps(all.as_mut_ptr(), s);
            row[at..at + lanes.len()].copy_from_slice(&all[lanes]);
        }
    }

    /// `o += Σ_j p_j · v_j` over one query's row of `hd` outputs, 64 (8 registers) at a time.
    #[inline(always)]
    unsafe fn sum1<T: Element>(o: *mut f32, v: *const T, stride: usize, p: &[f32], hd: usize) {
        if p.is_empty() {
            return;
        }
        for c0 in (0..hd).step_by(64) {
            let (o, v) = (o.add(c0), v.add(c0));
            match (hd - c0).min(64) / 8 {
                8 => weighted_sum::<T, 8>(o, v, stride, p),
                7 => weighted_sum::<T, 7>(o, v, stride, p),
                6 => weighted_sum::<T, 6>(o, v, stride, p),
                5 => weighted_sum::<T, 5>(o, v, stride, p),
                4 => weighted_sum::<T, 4>(o, v, stride, p),
                3 => weighted_sum::<T, 3>(o, v, stride, p),
                2 => weighted_sum::<T, 2>(o, v, stride, p),
                _ => weighted_sum::<T, 1>(o, v, stride, p),
            }
        }
    }

    /// `sum1` for two queries over the same keys, 32 outputs of each at a time.
    #[inline(always)]
    unsafe fn sum2<T: Element>(o: [*mut f32; 2], v: *const T, stride: usize, p: [&[f32]; 2], hd: usize) {
        for c0 in (0..hd).step_by(32) {
            let (o, v) = ([o[0].add(c0), o[1].add(c0)], v.add(c0));
            match (hd - c0).min(32) / 8 {
                4 => weighted_sum2::<T, 4>(o, v, stride, p),
                3 => weighted_sum2::<T, 3>(o, v, stride, p),
                2 => weighted_sum2::<T, 2>(o, v, stride, p),
                _ => weighted_sum2::<T, 1>(o, v, stride, p),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend<T: Element>(
        queries: &[f32],
        hd: usize,
        ranges: &[Range<usize>],
        scale: f32,
        at: HeadLayout,
        runs: impl Fn(&mut dyn FnMut(&[T], &[T])),
        out: &mut [f32],
    ) {
        let vscale = _mm256_set1_ps(scale);
        let nq = ranges.len();
        let q = |i: usize| queries.as_ptr().add(i * hd);
        SCORES.with_borrow_mut(|scores| {
            let scores = score_rows(scores, ranges);
            let mut pos = 0;
            runs(&mut |keys, _| {
                let n = keys.len() / at.stride;
                let k0 = keys.as_ptr().add(at.offset);
                // Query i's keys in this run, counted from its start.
                let part = |i: usize| if i < nq { within(&ranges[i], pos, n) } else { 0..0 };
                // Query i's scores of the 8 keys from `j` where they are its keys.
                let put_block = |row: &mut [f32], i: usize, j: usize, s: __m256| {
                    let mine = part(i);
                    let lanes = mine.start.max(j) - j..mine.end.min(j + 8).max(j) - j;
                    put(row, pos + j + lanes.start - ranges[i].start, _mm256_mul_ps(s, vscale), lanes);
                };
                let mut i = 0;
                while i < nq {
                    let (a, b) = (part(i), part(i + 1));
                    // Lanes past a query's last key score one of its keys again: the same
                    // arithmetic per key, and those scores are dropped.
                    let key = |keys: &Range<usize>, j: usize| {
                        let last = keys.end - 1;
                        move |x: usize| k0.add((j + x).min(last) * at.stride)
                    };
                    if a.is_empty() {
                        i += 1;
                    } else if b.is_empty() {
                        for j in a.clone().step_by(8) {
                            (0..8).for_each(|x| prefetch(k0.wrapping_add((j + PREFETCH_AHEAD + x) * at.stride), hd));
                            put_block(&mut scores[i], i, j, scores8(q(i), key(&a, j), hd));
                        }
                        i += 1;
                    } else {
                        // Two queries at a time, over the keys either of them has here.
                        let both = a.start.min(b.start)..a.end.max(b.end);
                        for j in both.clone().step_by(8) {
                            (0..8).for_each(|x| prefetch(k0.wrapping_add((j + PREFETCH_AHEAD + x) * at.stride), hd));
                            let key = key(&both, j);
                            let lo = scores2x4(q(i), q(i + 1), key, hd);
                            let hi = scores2x4(q(i), q(i + 1), |x| key(4 + x), hd);
                            let (rows_a, rows_b) = scores.split_at_mut(i + 1);
                            put_block(&mut rows_a[i], i, j, _mm256_permute2f128_ps(lo, hi, 0x20));
                            put_block(&mut rows_b[0], i + 1, j, _mm256_permute2f128_ps(lo, hi, 0x31));
                        }
                        i += 2;
                    }
                }
                pos += n;
            });
            scores.iter_mut().for_each(|row| softmax_in_place(row));
            out.fill(0.0);
            let out0 = out.as_mut_ptr();
            let o = |i: usize| out0.add(i * hd);
            let mut pos = 0;
            runs(&mut |_, values| {
                let n = values.len() / at.stride;
                let v0 = values.as_ptr().add(at.offset);
                let v = |keys: &Range<usize>| v0.add(keys.start * at.stride);
                for blk in (0..n).step_by(VALUE_BLOCK) {
                    let part = |i: usize| {
                        let mine = within(&ranges[i], pos, n);
                        mine.start.max(blk)..mine.end.min(blk + VALUE_BLOCK)
                    };
                    // Query i's weights of the keys `keys` of this run.
                    let p = |i: usize, keys: &Range<usize>| {
                        let first = pos + keys.start - ranges[i].start;
                        &scores[i][first..first + keys.len()]
                    };
                    let mut i = 0;
                    while i < nq {
                        let a = part(i);
                        let b = if i + 1 < nq { part(i + 1) } else { 0..0 };
                        let both = a.start.max(b.start)..a.end.min(b.end);
                        if a.is_empty() || both.is_empty() {
                            if !a.is_empty() {
                                sum1(o(i), v(&a), at.stride, p(i, &a), hd);
                            }
                            i += 1;
                            continue;
                        }
                        // Each output still adds its keys in order: those before the
                        // shared ones, the shared ones (two queries at once), those after.
                        for (k, r) in [(i, &a), (i + 1, &b)] {
                            let before = r.start..both.start;
                            sum1(o(k), v(&before), at.stride, p(k, &before), hd);
                        }
                        sum2([o(i), o(i + 1)], v(&both), at.stride, [p(i, &both), p(i + 1, &both)], hd);
                        for (k, r) in [(i, &a), (i + 1, &b)] {
                            let after = both.end..r.end;
                            sum1(o(k), v(&after), at.stride, p(k, &after), hd);
                        }
                        i += 2;
                    }
                }
                pos += n;
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax-weighted sum computed the plain two-pass way, in f64.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], scale: f32) -> Vec<f32> {
        let hd = q.len();
        let s: Vec<f64> = keys.chunks_exact(hd).map(|k| q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = w.iter().sum();
        (0..hd).map(|c| (w.iter().zip(values.chunks_exact(hd)).map(|(w, v)| w * v[c] as f64).sum::<f64>() / total) as f32).collect()
    }

    /// Deterministic values in about [-2, 2].
    fn fill(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 4001) as f32 / 1000.0 - 2.0
            })
            .collect()
    }

    /// Attention of the queries `q` (rows of `hd`) over rows of 3 heads (the middle one is
    /// the queries'), fed in runs of `split` positions, SIMD or portable.
    fn strided(q: &[f32], hd: usize, k: &[f32], v: &[f32], split: usize, simd: bool) -> Vec<f32> {
        let n = k.len() / (3 * hd);
        strided_ranges(q, hd, &vec![0..n; q.len() / hd], k, v, split, simd)
    }

    /// As `strided`, each query attending to the keys of its own range.
    fn strided_ranges(q: &[f32], hd: usize, ranges: &[Range<usize>], k: &[f32], v: &[f32], split: usize, simd: bool) -> Vec<f32> {
        let stride = 3 * hd;
        let at = HeadLayout { offset: hd, stride };
        let runs = |f: &mut dyn FnMut(&[f32], &[f32])| k.chunks(split * stride).zip(v.chunks(split * stride)).for_each(|(k, v)| f(k, v));
        let mut out = vec![9.0; q.len()];
        if simd {
            attend(q, hd, ranges, 0.3, at, runs, &mut out);
        } else {
            attend_portable(q, hd, ranges, 0.3, at, runs, &mut out);
        }
        out
    }

    #[test]
    fn matches_two_pass_softmax() {
        // Head sizes of the supported models (32, 64, 256), a large one and an odd one; key counts below,
        // at and across tile and 8-key boundaries; in one run and in several.
        for hd in [32usize, 64, 256, 512, 12] {
            for n in [1usize, 7, 8, 63, 64, 65, 200, 513] {
                let q = fill(hd, 1);
                let (k3, v3) = (fill(3 * n * hd, 2), fill(3 * n * hd, 3));
                let head = |x: &[f32]| -> Vec<f32> { x.chunks(3 * hd).flat_map(|r| r[hd..2 * hd].to_vec()).collect() };
                let want = reference(&q, &head(&k3), &head(&v3), 0.3);
                for simd in [true, false] {
                    let whole = strided(&q, hd, &k3, &v3, n, simd);
                    for (g, w) in whole.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "hd {hd}, {n} keys: {g} vs {w}");
                    }
                    // Bit for bit the same however the positions are split into runs.
                    for split in [1, 5, 64] {
                        assert_eq!(strided(&q, hd, &k3, &v3, split, simd), whole, "hd {hd}, {n} keys in runs of {split}");
                    }
                }
            }
        }
    }

    #[test]
    fn queries_together_match_queries_alone() {
        // Grouped-query attention: several queries of one key/value head at once give,
        // bit for bit, what each gives alone.
        for (hd, n) in [(64usize, 77usize), (32, 300), (12, 9)] {
            let queries = fill(5 * hd, 4);
            let (k3, v3) = (fill(3 * n * hd, 5), fill(3 * n * hd, 6));
            for simd in [true, false] {
                for split in [n, 40] {
                    let together = strided(&queries, hd, &k3, &v3, split, simd);
                    let alone: Vec<f32> = queries.chunks(hd).flat_map(|q| strided(q, hd, &k3, &v3, split, simd)).collect();
                    assert_eq!(together, alone, "hd {hd}, {n} keys, runs of {split}, simd {simd}");
                }
            }
        }
    }

    #[test]
    fn queries_with_their_own_key_ranges_match_each_alone() {
        // A prompt's positions against one head (causal and sliding-window ranges) at
        // once give, bit for bit, what each query gives alone over just its keys.
        for hd in [64usize, 32, 12] {
            let n = 150;
            let ranges = [0..1, 0..77, 30..150, 64..65, 10..140, 0..150];
            let queries = fill(ranges.len() * hd, 7);
            let (k3, v3) = (fill(3 * n * hd, 8), fill(3 * n * hd, 9));
            for simd in [true, false] {
                for split in [n, 40, 7] {
                    let together = strided_ranges(&queries, hd, &ranges, &k3, &v3, split, simd);
                    let alone: Vec<f32> = queries
                        .chunks(hd)
                        .zip(&ranges)
                        .flat_map(|(q, r)| {
                            let (k, v) = (&k3[r.start * 3 * hd..r.end * 3 * hd], &v3[r.start * 3 * hd..r.end * 3 * hd]);
                            strided(q, hd, k, v, r.len(), simd)
                        })
                        .collect();
                    assert_eq!(together, alone, "hd {hd}, runs of {split}, simd {simd}");
                }
            }
        }
    }

    #[test]
    fn f16_keys_and_values_match_their_f32_values() {
        // The KV cache's f16 rows give what the same (rounded) values give as f32, SIMD
        // and portable, in one run and in several.
        let (hd, n) = (64usize, 77usize);
        let queries = fill(3 * hd, 10);
        let round = |x: Vec<f32>| -> Vec<f32> { x.iter().map(|&v| f16::from_f32(v).to_f32()).collect() };
        let (k3, v3) = (round(fill(3 * n * hd, 11)), round(fill(3 * n * hd, 12)));
        let half = |x: &[f32]| -> Vec<f16> { x.iter().map(|&v| f16::from_f32(v)).collect() };
        let (k16, v16) = (half(&k3), half(&v3));
        let at = HeadLayout { offset: hd, stride: 3 * hd };
        let ranges = vec![0..n; 3];
        for simd in [true, false] {
            let want = strided(&queries, hd, &k3, &v3, n, simd);
            for split in [n, 10] {
                let runs = |f: &mut dyn FnMut(&[f16], &[f16])| k16.chunks(split * 3 * hd).zip(v16.chunks(split * 3 * hd)).for_each(|(k, v)| f(k, v));
                let mut got = vec![0.0; queries.len()];
                if simd {
                    attend(&queries, hd, &ranges, 0.3, at, runs, &mut got);
                } else {
                    attend_portable(&queries, hd, &ranges, 0.3, at, runs, &mut got);
                }
                assert_eq!(got, want, "simd {simd}, runs of {split}");
            }
        }
    }
}
