//! Attention of one query row against one head's keys and values, read where they
//! lie: in the text engine's KV cache (which may hold them in several runs, see
//! text/model/cache.rs) or in BERT's gathered rows (embed/ops.rs). Three
//! passes over one row of scores: the scores, their softmax, the weighted sum of the
//! values. Each step is indexed by key position alone, so the result does not depend
//! on how the positions are split into runs (a reused prompt prefix gives the same
//! numbers as a fresh prefill).
use std::cell::RefCell;

use crate::math::softmax_in_place;

thread_local! {
    /// One row of scores per thread, reused from query to query.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Where one head's vectors lie in runs of cache rows: position `j`'s key (and value)
/// is `keys[j * stride + offset..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadLayout {
    pub offset: usize,
    pub stride: usize,
}

/// `out = softmax(scale · K q) · V` for one query row `q`. `runs(f)` must call
/// `f(keys, values)` for each run of positions in order (the same runs each time: it
/// is called twice) and give at least one position.
pub fn attend(q: &[f32], scale: f32, at: HeadLayout, runs: impl Fn(&mut dyn FnMut(&[f32], &[f32])), out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if q.len().is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, and the head size is a multiple of 8.
        return unsafe { avx2::attend(q, scale, at, runs, out) };
    }
    attend_portable(q, scale, at, runs, out)
}

/// The same three passes in plain Rust (the reference the SIMD version is tested on).
fn attend_portable(q: &[f32], scale: f32, at: HeadLayout, runs: impl Fn(&mut dyn FnMut(&[f32], &[f32])), out: &mut [f32]) {
    let hd = q.len();
    SCORES.with_borrow_mut(|scores| {
        scores.clear();
        runs(&mut |keys, _| {
            for k in keys.chunks_exact(at.stride) {
                scores.push(crate::math::dot(q, &k[at.offset..at.offset + hd]) * scale);
            }
        });
        softmax_in_place(scores);
        out.fill(0.0);
        let mut j = 0;
        runs(&mut |_, values| {
            for v in values.chunks_exact(at.stride) {
                let p = scores[j];
                out.iter_mut().zip(&v[at.offset..at.offset + hd]).for_each(|(o, v)| *o += p * v);
                j += 1;
            }
        });
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{softmax_in_place, HeadLayout, SCORES};
    use std::arch::x86_64::*;

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
    unsafe fn scores8(q: *const f32, key: impl Fn(usize) -> *const f32, hd: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qc = _mm256_loadu_ps(q.add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qc, _mm256_loadu_ps(key(j).add(c)), *a);
            }
        }
        hsum8(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend(
        q: &[f32],
        scale: f32,
        at: HeadLayout,
        runs: impl Fn(&mut dyn FnMut(&[f32], &[f32])),
        out: &mut [f32],
    ) {
        let hd = q.len();
        let vscale = _mm256_set1_ps(scale);
        SCORES.with_borrow_mut(|scores| {
            scores.clear();
            runs(&mut |keys, _| {
                let n = keys.len() / at.stride;
                let k0 = keys.as_ptr().add(at.offset);
                let mut j = 0;
                let mut put = |v: __m256, count: usize| {
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_mul_ps(v, vscale));
                    scores.extend_from_slice(&lanes[..count]);
                };
                while j + 8 <= n {
                    put(scores8(q.as_ptr(), |i| k0.add((j + i) * at.stride), hd), 8);
                    j += 8;
                }
                if j < n {
                    // The last few keys, padded to 8 by repeating the last one: the
                    // same arithmetic per key, and the extra scores are dropped.
                    put(scores8(q.as_ptr(), |i| k0.add((j + i).min(n - 1) * at.stride), hd), n - j);
                }
            });
            softmax_in_place(scores);
            out.fill(0.0);
            let mut j = 0;
            runs(&mut |_, values| {
                let n = values.len() / at.stride;
                let v0 = values.as_ptr().add(at.offset);
                // out += Σ p_j · v_j, 64 output values (8 registers) at a time.
                for c0 in (0..hd).step_by(64) {
                    let width = (hd - c0).min(64) / 8;
                    let o = out.as_mut_ptr().add(c0);
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for (a, i) in acc.iter_mut().zip(0..width) {
                        *a = _mm256_loadu_ps(o.add(8 * i));
                    }
                    for (jj, &p) in scores[j..j + n].iter().enumerate() {
                        let pv = _mm256_set1_ps(p);
                        let v = v0.add(jj * at.stride + c0);
                        for (a, i) in acc.iter_mut().zip(0..width) {
                            *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v.add(8 * i)), *a);
                        }
                    }
                    for (a, i) in acc.iter().zip(0..width) {
                        _mm256_storeu_ps(o.add(8 * i), *a);
                    }
                }
                j += n;
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
        let s: Vec<f64> = keys
            .chunks_exact(hd)
            .map(|k| q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64)
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = w.iter().sum();
        (0..hd)
            .map(|c| (w.iter().zip(values.chunks_exact(hd)).map(|(w, v)| w * v[c] as f64).sum::<f64>() / total) as f32)
            .collect()
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

    /// Attention of `q` over rows of 3 heads (the middle one is the query's), fed in runs
    /// of `split` positions, SIMD or portable.
    fn strided(q: &[f32], k: &[f32], v: &[f32], split: usize, simd: bool) -> Vec<f32> {
        let (hd, stride) = (q.len(), 3 * q.len());
        let at = HeadLayout { offset: hd, stride };
        let runs = |f: &mut dyn FnMut(&[f32], &[f32])| {
            k.chunks(split * stride).zip(v.chunks(split * stride)).for_each(|(k, v)| f(k, v))
        };
        let mut out = vec![9.0; hd];
        if simd {
            attend(q, 0.3, at, runs, &mut out);
        } else {
            attend_portable(q, 0.3, at, runs, &mut out);
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
                    let whole = strided(&q, &k3, &v3, n, simd);
                    for (g, w) in whole.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "hd {hd}, {n} keys: {g} vs {w}");
                    }
                    // Bit for bit the same however the positions are split into runs.
                    for split in [1, 5, 64] {
                        assert_eq!(strided(&q, &k3, &v3, split, simd), whole, "hd {hd}, {n} keys in runs of {split}");
                    }
                }
            }
        }
    }
}
