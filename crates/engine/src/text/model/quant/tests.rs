//! Every packed type against a plain dequantize-then-matmul reference (candle's own
//! dequantization of the same GGML blocks), through the selected kernel and the
//! portable one.
use super::kernels::{best_kernel, scalar_group_dot};
use super::PackedWeight;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub(crate) fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 20001) as f32 / 10000.0 - 1.0
        })
        .collect()
}

fn reference(w: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
    let dense = w.dequantize(&Device::Cpu).unwrap();
    let (_, k) = dense.dims2().unwrap();
    let x = Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap();
    x.matmul(&dense.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn check(dtype: GgmlDType, n: usize, k: usize, m: usize) {
    let wf = pseudo_random(n * k, 7 + n as u32);
    let w = QTensor::quantize(&Tensor::from_vec(wf, (n, k), &Device::Cpu).unwrap(), dtype).unwrap();
    let x = pseudo_random(m * k, 99 + m as u32);
    let expected = reference(&w, &x, m);
    let mut packed = PackedWeight::from_qtensor(&w).unwrap().expect("packed layout");
    for (name, kernel, tile) in [("selected", best_kernel(), true), ("scalar", scalar_group_dot as _, false)] {
        packed.kernel = kernel;
        packed.tile &= tile;
        let mut y = vec![0f32; m * n];
        packed.matmul(&x, &mut y).unwrap();
        // Activations are quantized to 8 bits: allow that error, relative to the row's scale.
        let scale = expected.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (i, (a, b)) in y.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 0.02 * scale + 1e-3, "{dtype:?} {name} kernel, n={n} k={k} m={m}: y[{i}] = {a}, reference {b}");
        }
    }
}

#[test]
fn every_packed_type_matches_dequantized_matmul() {
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0] {
        for (n, k) in [(1, 32), (7, 64), (33, 576), (18, 896)] {
            for m in [1, 2, 3, 5, 9, 16, 23] {
                check(dtype, n, k, m);
            }
        }
    }
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
        for (n, k) in [(5, 256), (13, 1536)] {
            for m in [1, 4, 7, 16, 21] {
                check(dtype, n, k, m);
            }
        }
    }
}

/// Every kernel computes each output with the same operations (kernels.rs), so the
/// group kernels, the tile GEMM and the portable code agree exactly, and a row's result
/// does not depend on how many rows it was computed with (prefix cache, chunked prefill
/// and batching give the same logits).
#[test]
fn kernels_and_batch_sizes_agree_exactly() {
    use GgmlDType::*;
    for dtype in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4K, Q6K] {
        let (n, k, m) = (21, 512, 19);
        let w = QTensor::quantize(&Tensor::from_vec(pseudo_random(n * k, 3), (n, k), &Device::Cpu).unwrap(), dtype).unwrap();
        let x = pseudo_random(m * k, 5);
        let mut packed = PackedWeight::from_qtensor(&w).unwrap().unwrap();
        let mut results = Vec::new();
        for (name, kernel, tile) in [("selected", best_kernel(), true), ("scalar", scalar_group_dot as _, false)] {
            packed.kernel = kernel;
            packed.tile &= tile;
            let mut all = vec![0f32; m * n];
            packed.matmul(&x, &mut all).unwrap();
            results.push((format!("{name}, {m} rows"), all));
            let mut one_by_one = vec![0f32; m * n];
            for (x, y) in x.chunks(k).zip(one_by_one.chunks_mut(n)) {
                packed.matmul(x, y).unwrap();
            }
            results.push((format!("{name}, 1 row"), one_by_one));
        }
        for (name, y) in &results[1..] {
            assert!(y == &results[0].1, "{dtype:?}: {name} differs from {}", results[0].0);
        }
    }
}
