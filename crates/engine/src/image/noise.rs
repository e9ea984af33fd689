//! Seeded Gaussian noise for the initial latents: picture `i` of a job draws from
//! `StdRng::seed_from_u64(seed + i)`, so the same request makes the same pictures.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `len` standard-normal values (Box–Muller on the seeded generator).
pub fn gaussian(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // 1 - u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_roughly_standard() {
        let a = gaussian(7, 10_000);
        assert_eq!(a, gaussian(7, 10_000));
        assert_ne!(a, gaussian(8, 10_000));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
