//! Element-wise math and reductions shared by the runtimes, written so that loops over it
//! vectorize (no libm calls, no branches on the value), and `simd_fn!`, which
//! compiles such loops for AVX2 + FMA where the CPU has them.

use rayon::prelude::*;

/// Defines `fn $name` whose body is compiled twice, for baseline x86-64 and
/// for AVX2 + FMA, and runs the latter where the CPU has them (the crate is
/// built for the baseline, which would leave these loops at 4 lanes without
/// FMA). A plain function: closures handed to a `target_feature` wrapper are
/// not reliably inlined into it.
macro_rules! simd_fn {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// `a · b` with 16 independent sums (so the loop vectorizes where it is inlined).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sums in 8 lanes: a float sum in order is one long dependency chain.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    lanes(x, |acc, c| acc.iter_mut().zip(c).for_each(|(a, v)| *a += v))
}

#[inline(always)]
pub fn sum_squares(x: &[f32]) -> f32 {
    lanes(x, |acc, c| acc.iter_mut().zip(c).for_each(|(a, v)| *a += v * v))
}

#[inline(always)]
fn lanes(x: &[f32], add: impl Fn(&mut [f32; 8], &[f32])) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    chunks.for_each(|c| add(&mut acc, c));
    add(&mut acc, rest);
    acc.iter().sum()
}

/// `x = softmax(x)`. Max and sum run in eight lanes so that they vectorise like
/// the exp; inlined into each caller so that it is compiled for the caller's CPU features.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(m, &x)| *m = if x > *m { x } else { *m });
    }
    let max = lanes.iter().copied().fold(tail, f32::max);
    let mut blocks = row.chunks_exact_mut(32);
    for block in &mut blocks {
        let block: &mut [f32; 32] = block.try_into().expect("blocks of 32");
        block.iter_mut().for_each(|x| *x -= max);
        exp_block(block);
    }
    blocks.into_remainder().iter_mut().for_each(|x| *x = exp(*x - max));
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(s, &x)| *s += x);
    }
    let inv = 1.0 / (lanes.iter().sum::<f32>() + tail);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// The integer nearest `x` (ties to even), for |x| < 2^22: adding 1.5 · 2^23 leaves
/// it in the float's low mantissa bits. A float-to-int `as` cast saturates instead,
/// which LLVM does not vectorize (a scalar conversion and NaN check per value).
#[inline(always)]
pub fn round_small(x: f32) -> i32 {
    const ROUND: f32 = 12_582_912.0;
    (x + ROUND).to_bits() as i32 - ROUND.to_bits() as i32
}

/// e^x (Cephes' single-precision polynomial, about 1 ulp). Below -87 it is 0;
/// above 88 it stays at e^88 instead of overflowing.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let mut one = [x];
    exp_block(&mut one);
    one[0]
}

/// `exp` of each value of a block, in place. Each step runs over the whole block
/// before the next, so that with 32 values the vectorized code keeps four vectors'
/// long dependency chains in flight (a softmax row one vector at a time waited on
/// each vector's chain in turn).
#[inline(always)]
pub fn exp_block<const N: usize>(x: &mut [f32; N]) {
    let (mut exponent, mut r) = ([0i32; N], [0f32; N]);
    for i in 0..N {
        // A clamp that keeps NaN, written as two selects (vmaxps/vminps): f32::clamp
        // costs a compare and blend more per vector.
        let v = if x[i] < -87.0 { -87.0 } else { x[i] };
        let v = if v > 88.0 { 88.0 } else { v };
        exponent[i] = round_small(v * std::f32::consts::LOG2_E);
        let n = exponent[i] as f32;
        // v - n·ln2, with ln2 split in two so the low bits survive (Cody–Waite).
        r[i] = v - n * 0.693_359_4 + n * 2.121_944_4e-4;
    }
    let mut p = [1.987_569_1e-4f32; N];
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        for i in 0..N {
            p[i] = p[i] * r[i] + c;
        }
    }
    for i in 0..N {
        let e = (p[i] * r[i] * r[i] + r[i] + 1.0) * f32::from_bits(((exponent[i] + 127) << 23) as u32);
        x[i] = if x[i] < -87.0 { 0.0 } else { e };
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, about 3e-7 in f32).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// In place: `x = gelu(x)` in the exact (erf) form BERT and Whisper were trained
/// with, spread over the rayon pool.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(GELU_PER_TASK).for_each(gelu_slice);
}

/// Values handed to one rayon task by `gelu`.
const GELU_PER_TASK: usize = 16 * 1024;

simd_fn! {
    /// Branch-free so that it vectorises: this loop runs over every FFN activation.
    fn gelu_slice(x: &mut [f32]) {
        for v in x {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 2e-7 * want, "exp({x}) = {got}, not {want}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), exp(88.0));
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (-2.0, -0.995_322_3), (3.0, 0.999_977_9)] {
            assert!((erf(x) - want).abs() < 5e-7, "erf({x}) = {} not {want}", erf(x));
        }
    }

    #[test]
    fn gelu_matches_its_definition() {
        let mut x: Vec<f32> = (-300..300).map(|i| i as f32 / 100.0).collect();
        let want: Vec<f64> = x.iter().map(|&v| 0.5 * v as f64 * (1.0 + erf_f64(v as f64 / 2f64.sqrt()))).collect();
        gelu(&mut x);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    /// erf by its Taylor series (accurate in f64 for the |x| < 2.2 used here).
    fn erf_f64(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
