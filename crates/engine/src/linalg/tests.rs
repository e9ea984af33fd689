use super::*;

/// A deterministic pseudo-random matrix in [-1, 1).
fn matrix(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn check(m: usize, k: usize, n: usize, bias: bool, kernel: Kernel) {
    let (x, w, b) = (matrix(m * k, 1), matrix(k * n, 2), matrix(n, 3));
    let mut packed = PackedMatrix::from_rows(&w, k, n);
    if bias {
        packed = packed.with_bias(&b);
    }
    packed.kernel = kernel;
    let mut out = vec![f32::NAN; m * n];
    packed.matmul(&x, m, &mut out);
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|kk| x[i * k + kk] as f64 * w[kk * n + j] as f64).sum::<f64>() + if bias { b[j] as f64 } else { 0.0 };
            let got = out[i * n + j] as f64;
            assert!((got - want).abs() <= 1e-5 * (k as f64 + 1.0), "m={m} k={k} n={n} bias={bias}: [{i},{j}] = {got} not {want}");
        }
    }
}

const SHAPES: [(usize, usize, usize); 9] =
    [(1, 1, 1), (1, 384, 1152), (7, 300, 50), (6, 16, 16), (13, 513, 33), (97, 1000, 17), (200, 64, 160), (5, 0, 3), (0, 8, 8)];

#[test]
fn matches_the_reference_product() {
    for (m, k, n) in SHAPES {
        for bias in [false, true] {
            check(m, k, n, bias, kernel::best());
        }
    }
}

#[test]
fn portable_kernel_matches_the_reference_product() {
    for (m, k, n) in SHAPES {
        check(m, k, n, true, kernel::portable);
    }
}

#[test]
fn both_layouts_pack_the_same() {
    let (k, n) = (37, 21);
    let w = matrix(k * n, 4);
    let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
    let (a, b) = (PackedMatrix::from_rows(&w, k, n), PackedMatrix::from_cols(&wt, n, k));
    assert!(a.panels.iter().zip(&b.panels).all(|(x, y)| x.0 == y.0));
}
