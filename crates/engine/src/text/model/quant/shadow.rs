//! A 4-bit shadow of a weight stored in more bits (the output head), with a bound per
//! row on how far the shadow's product can lie from the exact one. Greedy decoding
//! uses it (model/head.rs) to rule out most tokens after reading half the bytes.
use super::pack::{Block32, Layout, BLOCK};
use super::PackedWeight;
use candle_core::quantized::QTensor;
use candle_core::Result;
use half::f16;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

pub struct Shadow {
    /// The weight requantized to Q4_1's layout (4 bits, f16 scale and offset per block).
    pub weight: PackedWeight,
    /// Per row i: `slack[i] * |x|` bounds the gap between the products of the exact row
    /// and of its shadow with any quantized activation row x, f32 rounding included.
    pub slack: Vec<f32>,
    /// The same bound per block of 32, tighter where x's weight sits in a few blocks
    /// ([`Shadow::refined_slack`]): row i's block b errs by at most
    /// `block_err[i * blocks + b] * unit[i]`...
    block_err: Vec<u8>,
    unit: Vec<f32>,
    /// ...and its product's f32 rounding by at most `rounding[i] * |x|`.
    rounding: Vec<f32>,
}

impl Shadow {
    /// None when the weight has no packed layout or fewer than 6 bits (the shadow's 5
    /// bits per weight, scales included, would save too little).
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let Some(src) = Layout::for_dtype(t.dtype()) else {
            return Ok(None);
        };
        let (n, k) = t.shape().dims2()?;
        if src.quant_bits() < 6 || k % t.dtype().block_size() != 0 {
            return Ok(None);
        }
        let raw = t.data()?;
        let row_bytes = k / t.dtype().block_size() * t.dtype().type_size();
        let blocks = k / BLOCK;
        // Per row, written by whichever thread packs the row (f32 values as their bits).
        let atomic_f32s = || -> Vec<AtomicU32> { (0..n).map(|_| AtomicU32::new(0)).collect() };
        let (slack, unit, rounding) = (atomic_f32s(), atomic_f32s(), atomic_f32s());
        let block_err: Vec<AtomicU8> = (0..n * blocks).map(|_| AtomicU8::new(0)).collect();
        let up = |v: f64| ((v * (1.0 + 1e-6)) as f32).to_bits();
        let weight = PackedWeight::pack(Layout::Nib4, n, k, |r, out| {
            let mut decoded = Vec::with_capacity(blocks);
            super::pack::decode_row(t.dtype(), &raw[r * row_bytes..(r + 1) * row_bytes], &mut decoded)?;
            let mut errs = Vec::with_capacity(blocks);
            let (mut exact, mut approx) = (0f64, 0f64);
            for b in &decoded {
                let (shadow, [e, x, a]) = requantize(&values(src, b));
                out.push(shadow);
                errs.push(e.sqrt());
                (exact, approx) = (exact + x, approx + a);
            }
            // |x·(w - w̃)| <= |x| |w - w̃|, and <= Σ_b |x_b| |w_b - w̃_b|. The products
            // themselves are f32 sums of k/32 block terms, each bounded by |x_b| |w_b|:
            // their rounding stays far below 1e-4 |x| (|w| + |w̃|), which the margin adds
            // (then rounds up).
            let round = 1e-4 * (exact.sqrt() + approx.sqrt());
            let err = errs.iter().map(|e| e * e).sum::<f64>().sqrt();
            slack[r].store(up(err * (1.0 + 1e-3) + round), Ordering::Relaxed);
            rounding[r].store(up(round), Ordering::Relaxed);
            // Block errors in 255ths of the largest, rounded up.
            let largest = errs.iter().copied().fold(0f64, f64::max);
            unit[r].store(up(largest * (1.0 + 1e-3) / 255.0), Ordering::Relaxed);
            for (b, e) in errs.iter().enumerate() {
                let steps = if largest > 0.0 { (e / largest * 255.0).ceil().min(255.0) } else { 0.0 };
                block_err[r * blocks + b].store(steps as u8, Ordering::Relaxed);
            }
            Ok(())
        })?;
        let f32s = |v: Vec<AtomicU32>| -> Vec<f32> { v.into_iter().map(|s| f32::from_bits(s.into_inner())).collect() };
        let (slack, unit, rounding) = (f32s(slack), f32s(unit), f32s(rounding));
        if slack.iter().chain(&unit).any(|s| !s.is_finite()) {
            return Ok(None);
        }
        let block_err = block_err.into_iter().map(AtomicU8::into_inner).collect();
        Ok(Some(Self { weight, slack, block_err, unit, rounding }))
    }

    /// A bound on the gap for row i, like `slack[i] * norm`, from the norms of the blocks
    /// of x (rounded up; `norm` is theirs).
    pub fn refined_slack(&self, i: usize, block_norms: &[f32], norm: f32) -> f32 {
        let errs = &self.block_err[i * block_norms.len()..(i + 1) * block_norms.len()];
        let sum: f32 = errs.iter().zip(block_norms).map(|(&e, &x)| e as f32 * x).sum();
        // (1 + 1e-5) covers the f32 rounding of this sum of non-negative terms.
        (sum * self.unit[i] + norm * self.rounding[i]) * (1.0 + 1e-5)
    }
}

/// The 32 values a decoded block of `layout` stands for (as the kernels read them).
fn values(layout: Layout, b: &Block32) -> [f64; BLOCK] {
    let z = layout.zero_point();
    std::array::from_fn(|j| {
        let d = if j < BLOCK / 2 { b.dlo } else { b.dhi };
        d as f64 * (b.q[j] - z) as f64 + b.m as f64
    })
}

/// Q4_1-style block for `w`: `m + d * q`, q in 0..16, f16 `d` and `m`. Returns it with
/// the sums of squares of its error, of `w` and of its own values.
fn requantize(w: &[f64; BLOCK]) -> (Block32, [f64; 3]) {
    let lo = w.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = f16::from_f64(lo).to_f64();
    let d = f16::from_f64((hi - m).max(0.0) / 15.0).to_f64();
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i32; BLOCK];
    let mut sums = [0f64; 3];
    for (j, &v) in w.iter().enumerate() {
        // Nearest level (the bound below holds for any choice); no libm `round` call.
        q[j] = ((v - m) * inv + 0.5).clamp(0.0, 15.0) as i32;
        let a = m + d * q[j] as f64;
        sums[0] += (v - a) * (v - a);
        sums[1] += v * v;
        sums[2] += a * a;
    }
    (Block32 { q, dlo: d as f32, dhi: d as f32, m: m as f32, ..Block32::default() }, sums)
}

#[cfg(test)]
mod tests {
    use super::super::tests::pseudo_random;
    use super::super::{quantize_row, ActBlock};
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    /// Both bounds hold for every row, and the per-block one is the tighter where x's
    /// weight sits in one block.
    #[test]
    fn bounds_hold_and_the_per_block_one_is_tighter_on_concentrated_rows() {
        for (dtype, n, k) in [(GgmlDType::Q8_0, 37, 96), (GgmlDType::Q6K, 21, 512)] {
            let w = QTensor::quantize(&Tensor::from_vec(pseudo_random(n * k, 5), (n, k), &Device::Cpu).unwrap(), dtype).unwrap();
            let exact = PackedWeight::from_qtensor(&w).unwrap().expect("packed");
            let shadow = Shadow::from_qtensor(&w).unwrap().expect("shadow");
            for case in 0..20u32 {
                let mut x = pseudo_random(k, 100 + case);
                if case % 2 == 1 {
                    // Most of the weight in one block, as hidden states' outlier channels.
                    let b = case as usize % (k / BLOCK);
                    x.iter_mut().enumerate().for_each(|(j, v)| *v *= if j / BLOCK == b { 30.0 } else { 1.0 });
                }
                let mut act = vec![ActBlock::default(); k / BLOCK];
                quantize_row(&x, &mut act);
                let block_norms: Vec<f32> = act.iter().map(|b| b.q.iter().map(|&q| (b.d * q as f32).powi(2)).sum::<f32>().sqrt() * 1.001).collect();
                let norm = block_norms.iter().map(|v| v * v).sum::<f32>().sqrt();
                let (mut y, mut approx) = (vec![0f32; n], vec![0f32; n]);
                exact.matmul(&x, &mut y).unwrap();
                shadow.weight.matmul(&x, &mut approx).unwrap();
                let (mut global, mut refined) = (0f32, 0f32);
                for i in 0..n {
                    let gap = (y[i] - approx[i]).abs();
                    let (g, r) = (shadow.slack[i] * norm, shadow.refined_slack(i, &block_norms, norm));
                    assert!(gap <= g && gap <= r, "{dtype:?} case {case} row {i}: gap {gap}, bounds {g} {r}");
                    (global, refined) = (global + g, refined + r);
                }
                if case % 2 == 1 {
                    assert!(refined < 0.7 * global, "{dtype:?} case {case}: {refined} against {global}");
                }
            }
        }
    }
}
