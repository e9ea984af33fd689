//! Attention of one query row against one head's cached keys and values, in the
//! flash-attention manner: keys are taken a tile at a time with a running maximum
//! and sum (online softmax), so no score row is materialised and every key and
//! value is read once, from the cache where it lies.
use crate::math::exp;

/// Keys scored per tile: the tile's scores stay on the stack and its keys and values
/// in L1 (64 keys × 64 dims × 4 bytes = 16 KiB each for the usual head size).
const TILE: usize = 64;

/// `out = softmax(scale · keys · q) · values` for one query row `q` against the keys and
/// values of one head (rows of `q.len()`, at least one), overwriting `out`.
pub fn attend(q: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    debug_assert!(!keys.is_empty() && keys.len() == values.len() && keys.len() % q.len() == 0);
    #[cfg(target_arch = "x86_64")]
    if q.len() % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, and the head size is a multiple of 8.
        return unsafe { avx2::attend(q, keys, values, scale, out) };
    }
    attend_portable(q, keys, values, scale, out)
}

/// The same online softmax in plain Rust (the reference the SIMD version is tested on).
fn attend_portable(q: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let mut running = Running::new(out);
    let mut scores = [0f32; TILE];
    for (kt, vt) in keys.chunks(TILE * hd).zip(values.chunks(TILE * hd)) {
        let s = &mut scores[..kt.len() / hd];
        for (s, k) in s.iter_mut().zip(kt.chunks_exact(hd)) {
            *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        running.rescale(s, out);
        for (&p, v) in s.iter().zip(vt.chunks_exact(hd)) {
            out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
        }
    }
    running.finish(out);
}

/// The running maximum and sum of the online softmax; `out` holds the unnormalised
/// weighted sum of the values seen so far, scaled to the current maximum.
struct Running {
    max: f32,
    sum: f32,
}

impl Running {
    fn new(out: &mut [f32]) -> Self {
        out.fill(0.0);
        Self { max: f32::NEG_INFINITY, sum: 0.0 }
    }

    /// Turns a tile's scores into weights `e^(s - max)` under the new maximum, rescaling
    /// what `out` and the sum hold when the maximum moved.
    #[inline(always)]
    fn rescale(&mut self, scores: &mut [f32], out: &mut [f32]) {
        let tile_max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if tile_max > self.max {
            let shrink = exp(self.max - tile_max);
            self.sum *= shrink;
            out.iter_mut().for_each(|o| *o *= shrink);
            self.max = tile_max;
        }
        let max = self.max;
        scores.iter_mut().for_each(|s| *s = exp(*s - max));
        self.sum += scores.iter().sum::<f32>();
    }

    fn finish(self, out: &mut [f32]) {
        let inv = 1.0 / self.sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Running, TILE};
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

    /// Scores of 8 consecutive keys starting at `k` against `q` (`hd` a multiple of 8).
    #[inline(always)]
    unsafe fn scores8(q: *const f32, k: *const f32, hd: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qc = _mm256_loadu_ps(q.add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k.add(j * hd + c)), *a);
            }
        }
        hsum8(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend(q: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
        let hd = q.len();
        let mut running = Running::new(out);
        let mut scores = [0f32; TILE];
        let vscale = _mm256_set1_ps(scale);
        for (kt, vt) in keys.chunks(TILE * hd).zip(values.chunks(TILE * hd)) {
            let n = kt.len() / hd;
            let s = &mut scores[..n];
            let mut j = 0;
            while j + 8 <= n {
                let v = _mm256_mul_ps(scores8(q.as_ptr(), kt.as_ptr().add(j * hd), hd), vscale);
                _mm256_storeu_ps(s.as_mut_ptr().add(j), v);
                j += 8;
            }
            for (s, k) in s[j..].iter_mut().zip(kt[j * hd..].chunks_exact(hd)) {
                *s = super::super::ops::dot_portable(q, k) * scale;
            }
            running.rescale(s, out);
            // out += Σ p_j · v_j, 64 output values (8 registers) at a time.
            for c0 in (0..hd).step_by(64) {
                let width = (hd - c0).min(64) / 8;
                let mut acc = [_mm256_setzero_ps(); 8];
                for (a, i) in acc.iter_mut().zip(0..width) {
                    *a = _mm256_loadu_ps(out.as_ptr().add(c0 + 8 * i));
                }
                for (jj, &p) in s.iter().enumerate() {
                    let pv = _mm256_set1_ps(p);
                    let v = vt.as_ptr().add(jj * hd + c0);
                    for (a, i) in acc.iter_mut().zip(0..width) {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v.add(8 * i)), *a);
                    }
                }
                for (a, i) in acc.iter().zip(0..width) {
                    _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * i), *a);
                }
            }
        }
        running.finish(out);
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

    #[test]
    fn matches_two_pass_softmax() {
        // Head sizes of the supported models (64, 256) and an odd one; key counts below,
        // at and across tile and 8-key boundaries.
        for hd in [64usize, 256, 12] {
            for n in [1usize, 7, 8, 63, 64, 65, 200, 513] {
                let (q, k, v) = (fill(hd, 1), fill(n * hd, 2), fill(n * hd, 3));
                let want = reference(&q, &k, &v, 0.3);
                for got in [
                    {
                        let mut o = vec![9.0; hd];
                        attend(&q, &k, &v, 0.3, &mut o);
                        o
                    },
                    {
                        let mut o = vec![9.0; hd];
                        attend_portable(&q, &k, &v, 0.3, &mut o);
                        o
                    },
                ] {
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "hd {hd}, {n} keys: {g} vs {w}");
                    }
                }
            }
        }
    }
}
