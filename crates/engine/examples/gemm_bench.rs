//! GFLOP/s of `linalg::PackedMatrix::matmul` against candle's f32 matmul on the
//! shapes of all-MiniLM-L6-v2's and Whisper's linears (best of several runs).
//! Threads: the rayon pool (`RAYON_NUM_THREADS`), which both use.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p hearth-engine --example gemm_bench`
use std::time::Instant;

use candle_core::{Device, Tensor};
use hearth_engine::linalg::PackedMatrix;

fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() -> anyhow::Result<()> {
    println!("threads: {}", rayon::current_num_threads());
    println!("| m x k x n | ours GFLOP/s | candle GFLOP/s |");
    println!("|---|---|---|");
    for (m, k, n) in [(1120, 384, 1152), (1120, 384, 384), (1120, 384, 1536), (1120, 1536, 384), (3000, 384, 1536), (256, 384, 1536), (12, 384, 1536)] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let flops = 2.0 * (m * k * n) as f64;
        let runs = (2e10 / flops).clamp(5.0, 200.0) as usize;

        let packed = PackedMatrix::from_rows(&w, k, n);
        let mut out = vec![0f32; m * n];
        let ours = best_secs(runs, || packed.matmul(&x, m, &mut out));

        let (xt, wt) = (Tensor::from_slice(&x, (m, k), &Device::Cpu)?, Tensor::from_slice(&w, (k, n), &Device::Cpu)?);
        let theirs = best_secs(runs, || {
            xt.matmul(&wt).unwrap();
        });
        let diff = xt.matmul(&wt)?.flatten_all()?.to_vec1::<f32>()?.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-2, "results differ by {diff}");
        println!("| {m} x {k} x {n} | {:.1} | {:.1} |", flops / ours / 1e9, flops / theirs / 1e9);
    }
    Ok(())
}
