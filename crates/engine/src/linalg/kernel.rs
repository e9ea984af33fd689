//! The register-blocked micro-kernel: `C[MR, NR] (+)= A[MR, kc] @ B[kc, NR]`
//! with A read in place (rows `lda` apart: each row is a sequential stream)
//! and B packed as `[kc][NR]` (one 64-byte line per step). An AVX2+FMA version keeps the
//! whole tile in 12 ymm registers; a portable one serves other CPUs.

pub(crate) const MR: usize = 6;
pub(crate) const NR: usize = 16;

/// How the tile starts before the products are added.
#[derive(Clone, Copy)]
pub(crate) enum Start {
    Zero,
    /// Every row starts as this `NR`-long row (a bias).
    Row(*const f32),
    /// The values already in C (a later block of K).
    Load,
}

/// `a` holds `MR` rows of `kc` values, `lda` apart; `c` is the tile's top-left
/// with rows `ldc` apart, all `MR x NR` values read (for `Start::Load`) and written.
pub(crate) type Kernel = unsafe fn(kc: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, start: Start);

pub(crate) fn best() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return avx2_fma;
        }
    }
    portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma(kc: usize, mut a: *const f32, lda: usize, mut b: *const f32, c: *mut f32, ldc: usize, start: Start) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    match start {
        Start::Zero => {}
        Start::Row(row) => {
            let (r0, r1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
            acc.iter_mut().for_each(|t| *t = [r0, r1]);
        }
        Start::Load => {
            for (i, t) in acc.iter_mut().enumerate() {
                let c = c.add(i * ldc);
                *t = [_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))];
            }
        }
    }
    for _ in 0..kc {
        let (b0, b1) = (_mm256_load_ps(b), _mm256_load_ps(b.add(8)));
        for (i, t) in acc.iter_mut().enumerate() {
            let x = _mm256_broadcast_ss(&*a.add(i * lda));
            t[0] = _mm256_fmadd_ps(x, b0, t[0]);
            t[1] = _mm256_fmadd_ps(x, b1, t[1]);
        }
        a = a.add(1);
        b = b.add(NR);
    }
    for (i, t) in acc.iter().enumerate() {
        let c = c.add(i * ldc);
        _mm256_storeu_ps(c, t[0]);
        _mm256_storeu_ps(c.add(8), t[1]);
    }
}

pub(crate) unsafe fn portable(kc: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, start: Start) {
    let mut acc = [[0f32; NR]; MR];
    match start {
        Start::Zero => {}
        Start::Row(row) => acc.iter_mut().for_each(|t| t.copy_from_slice(std::slice::from_raw_parts(row, NR))),
        Start::Load => {
            for (i, t) in acc.iter_mut().enumerate() {
                t.copy_from_slice(std::slice::from_raw_parts(c.add(i * ldc), NR));
            }
        }
    }
    let b = std::slice::from_raw_parts(b, kc * NR);
    for (kk, b) in b.chunks_exact(NR).enumerate() {
        for (i, t) in acc.iter_mut().enumerate() {
            let x = *a.add(i * lda + kk);
            t.iter_mut().zip(b).for_each(|(t, &y)| *t += x * y);
        }
    }
    for (i, t) in acc.iter().enumerate() {
        std::slice::from_raw_parts_mut(c.add(i * ldc), NR).copy_from_slice(t);
    }
}
