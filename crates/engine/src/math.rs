//! Element-wise math shared by the runtimes, written so that a loop calling it
//! vectorizes (no libm calls, no branches on the value).

/// `e^x` to ~2e-7 relative error over f32's normal range; large negative inputs
/// (masked scores, −∞) give 0 rather than a subnormal.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflows = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest by the 1.5·2²³ trick: `f32::round` is a libm call on baseline x86-64.
    let i = (t + 12_582_912.0) - 12_582_912.0;
    // Split ln2 in two so that `x - i·ln2` keeps its low bits (Cody–Waite).
    let f = x - i * 0.693_145_75 - i * 1.428_606_8e-6; // |f| ≤ ln2 / 2
    // Taylor series of e^f to degree 7.
    let p = 1.0
        + f * (1.0 + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    let scaled = p * f32::from_bits(((i as i32 + 127) as u32) << 23);
    if underflows {
        0.0
    } else {
        scaled
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_matches_std() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 4e-7 * want, "exp({x}) = {got}, not {want}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
    }
}
