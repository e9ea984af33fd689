//! A 4-bit shadow of a weight stored in more bits (the output head), with a bound per
//! row on how far the shadow's product can lie from the exact one. Greedy decoding
//! uses it (model/head.rs) to rule out most tokens after reading half the bytes.
use super::pack::{Block32, Layout, BLOCK};
use super::PackedWeight;
use candle_core::quantized::QTensor;
use candle_core::Result;
use half::f16;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Shadow {
    /// The weight requantized to Q4_1's layout (4 bits, f16 scale and offset per block).
    pub weight: PackedWeight,
    /// Per row i: `slack[i] * |x|` bounds the gap between the products of the exact row
    /// and of its shadow with any quantized activation row x, f32 rounding included.
    pub slack: Vec<f32>,
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
        // f32 bits per row, written by whichever thread packs the row.
        let slack: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let weight = PackedWeight::pack(Layout::Nib4, n, k, |r, out| {
            let mut decoded = Vec::with_capacity(k / BLOCK);
            super::pack::decode_row(t.dtype(), &raw[r * row_bytes..(r + 1) * row_bytes], &mut decoded)?;
            let (mut err, mut exact, mut approx) = (0f64, 0f64, 0f64);
            for b in &decoded {
                let (shadow, [e, x, a]) = requantize(&values(src, b));
                out.push(shadow);
                (err, exact, approx) = (err + e, exact + x, approx + a);
            }
            // |x·(w - w̃)| <= |x| |w - w̃|. The products themselves are f32 sums of k/32
            // block terms, each bounded by |x_b| |w_b|: their rounding stays far below
            // 1e-4 |x| (|w| + |w̃|), which the margin adds (then rounds up).
            let bound = err.sqrt() * (1.0 + 1e-3) + 1e-4 * (exact.sqrt() + approx.sqrt());
            slack[r].store(((bound * (1.0 + 1e-6)) as f32).to_bits(), Ordering::Relaxed);
            Ok(())
        })?;
        let slack: Vec<f32> = slack.into_iter().map(|s| f32::from_bits(s.into_inner())).collect();
        if slack.iter().any(|s| !s.is_finite()) {
            return Ok(None);
        }
        Ok(Some(Self { weight, slack }))
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
