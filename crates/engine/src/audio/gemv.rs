//! The decoder's one-token products, `y = W x (+ b)`, and for cross-attention
//! over f16 K and V, `y = K q` and `y += Vᵀ p`: they only stream the weights
//! (the 51865-row vocabulary projection most of all), so they run at memory
//! bandwidth. CTranslate2 stores Whisper in f16, so keeping the weights
//! as f16 halves the bytes read at no cost in precision; rows whose values do
//! not all survive the round trip (an f32 file) stay on the f32 path.
use half::f16;
use rayon::prelude::*;

/// `W` as f16 rows `[n, k]`.
pub struct HalfRows {
    w: Vec<f16>,
    k: usize,
    bias: Option<Vec<f32>>,
}

/// Rows per parallel task: about 256 KiB of weights.
fn rows_per_task(k: usize) -> usize {
    (128 * 1024 / k.max(1)).max(1)
}

impl HalfRows {
    /// From `w` laid out `[n, k]`; `None` unless every value is exactly an f16.
    pub fn new(w: &[f32], k: usize, bias: Option<&[f32]>) -> Option<Self> {
        let half: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        half.iter().zip(w).all(|(h, &v)| h.to_f32() == v || (v.is_nan() && h.is_nan())).then(|| Self { w: half, k, bias: bias.map(<[f32]>::to_vec) })
    }

    pub fn n(&self) -> usize {
        self.w.len() / self.k.max(1)
    }

    /// `W x (+ b)` for one `x` of length `k`.
    pub fn gemv(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.k, "x length");
        let k = self.k;
        let dot = dot_fn();
        let mut y = vec![0f32; self.n()];
        let per = rows_per_task(k);
        y.par_chunks_mut(per).enumerate().for_each(|(t, out)| {
            for (i, v) in out.iter_mut().enumerate() {
                let r = t * per + i;
                // SAFETY: `dot_fn` picked a kernel this CPU supports; row `r` is `k` long.
                *v = unsafe { dot(&self.w[r * k..][..k], x) } + self.bias.as_ref().map_or(0.0, |b| b[r]);
            }
        });
        y
    }
}

impl HalfRows {
    /// `W x (+ b)` for the `m` rows of `x` (`[m, k]`) into `out` (`[m, n]`):
    /// each weight row is read once for all of them (a few beams' step).
    pub fn gemm_rows(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (k, n) = (self.k, self.n());
        assert!(x.len() == m * k && out.len() == m * n, "shapes");
        let dot = dot_fn();
        let per = rows_per_task(k);
        let parts: Vec<Vec<f32>> = (0..n.div_ceil(per))
            .into_par_iter()
            .map(|t| {
                let rows = t * per..((t + 1) * per).min(n);
                let mut part = Vec::with_capacity(rows.len() * m);
                for r in rows {
                    let w = &self.w[r * k..][..k];
                    let b = self.bias.as_ref().map_or(0.0, |b| b[r]);
                    // SAFETY: `dot_fn` picked a kernel this CPU supports; both are `k` long.
                    part.extend(x.chunks_exact(k).map(|xi| unsafe { dot(w, xi) } + b));
                }
                part
            })
            .collect();
        for (t, part) in parts.iter().enumerate() {
            for (j, values) in part.chunks_exact(m).enumerate() {
                for (i, &v) in values.iter().enumerate() {
                    out[i * n + t * per + j] = v;
                }
            }
        }
    }
}

/// `y[j] = W[j] · x` for `y.len()` rows of `w`, `row` apart, each `x.len()` long.
pub fn rows_dot(w: &[f16], row: usize, x: &[f32], y: &mut [f32]) {
    let (dot, k) = (dot_fn(), x.len());
    for (j, y) in y.iter_mut().enumerate() {
        // SAFETY: `dot_fn` picked a kernel this CPU supports.
        *y = unsafe { dot(&w[j * row..][..k], x) };
    }
}

/// `y += Σ_j a[j] · W[j]` for `a.len()` rows of `w`, `row` apart, each `y.len()` long.
pub fn rows_axpy(w: &[f16], row: usize, a: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c") {
            // SAFETY: the CPU has the features `axpy_f16c` is compiled for.
            return unsafe { axpy_f16c(w, row, a, y) };
        }
    }
    axpy_portable(w, row, a, y)
}

fn axpy_portable(w: &[f16], row: usize, a: &[f32], y: &mut [f32]) {
    let k = y.len();
    for (j, &aj) in a.iter().enumerate() {
        y.iter_mut().zip(&w[j * row..][..k]).for_each(|(y, w)| *y += aj * w.to_f32());
    }
}

/// Eight columns at a time; a ragged tail goes the portable way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16c(w: &[f16], row: usize, a: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let (k, wide) = (y.len(), y.len() / 8 * 8);
    assert!(a.is_empty() || w.len() >= (a.len() - 1) * row + k);
    for (j, &aj) in a.iter().enumerate() {
        let (av, wp, yp) = (_mm256_set1_ps(aj), w.as_ptr().add(j * row) as *const __m128i, y.as_mut_ptr());
        for i in (0..wide).step_by(8) {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i / 8)));
            _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(wv, av, _mm256_loadu_ps(yp.add(i))));
        }
    }
    if wide < k {
        axpy_portable(&w[wide..], row, a, &mut y[wide..]);
    }
}

type Dot = unsafe fn(&[f16], &[f32]) -> f32;

fn dot_fn() -> Dot {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c") {
            return dot_f16c;
        }
    }
    dot_portable
}

unsafe fn dot_portable(w: &[f16], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(w, x)| w.to_f32() * x).sum()
}

/// 32 weights per step in four independent accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16c(w: &[f16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len().min(x.len());
    let (wp, xp) = (w.as_ptr() as *const __m128i, x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i / 8 + j)));
            *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i + 8 * j)), *a);
        }
        i += 32;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum::<f32>() + dot_portable(&w[i..n], &x[i..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f32_product() {
        let (n, k) = (300, 70); // ragged against the 32-wide steps and task sizes
        let w: Vec<f32> = (0..n * k).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0).to_f32()).collect();
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let y = HalfRows::new(&w, k, Some(&bias)).expect("exact f16 values").gemv(&x);
        for (r, got) in y.iter().enumerate() {
            let want = bias[r] + (0..k).map(|c| w[r * k + c] * x[c]).sum::<f32>();
            assert!((got - want).abs() < 1e-4, "row {r}: {got} vs {want}");
        }
        let rows = HalfRows::new(&w, k, Some(&bias)).unwrap();
        let xs: Vec<f32> = (0..3 * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0f32; 3 * n];
        rows.gemm_rows(&xs, 3, &mut out);
        for i in 0..3 {
            for (r, (got, want)) in out[i * n..][..n].iter().zip(rows.gemv(&xs[i * k..][..k])).enumerate() {
                assert!((got - want).abs() < 1e-5, "x {i} row {r}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn row_kernels_match_f32_products() {
        // Rows `row` apart, `k` long: ragged against the 8- and 32-wide steps.
        for (rows, k, row) in [(37, 70, 75), (5, 8, 8), (3, 64, 64), (1, 5, 9)] {
            let w: Vec<f16> = (0..rows * row).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0)).collect();
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            let a: Vec<f32> = (0..rows).map(|j| (j as f32 * 0.91).cos()).collect();
            let mut y = vec![0f32; rows];
            rows_dot(&w, row, &x, &mut y);
            let mut z: Vec<f32> = (0..k).map(|c| c as f32 * 0.01).collect();
            let z0 = z.clone();
            rows_axpy(&w, row, &a, &mut z);
            for j in 0..rows {
                let want = (0..k).map(|c| w[j * row + c].to_f32() * x[c]).sum::<f32>();
                assert!((y[j] - want).abs() < 1e-4, "dot row {j}: {} vs {want}", y[j]);
            }
            for c in 0..k {
                let want = z0[c] + (0..rows).map(|j| a[j] * w[j * row + c].to_f32()).sum::<f32>();
                assert!((z[c] - want).abs() < 1e-4, "axpy column {c}: {} vs {want}", z[c]);
            }
        }
    }

    #[test]
    fn refuses_values_f16_cannot_hold() {
        assert!(HalfRows::new(&[1.0, 1.0 + 1e-6], 2, None).is_none());
    }
}
