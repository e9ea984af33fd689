//! Denoising steps/s of the image pipeline, no HTTP: runs the same job at two step
//! counts and divides the extra steps by the extra time, so prompt encoding and the
//! VAE drop out. Prints one JSON line (bench/images/run.sh reads it).
//!
//! `cargo run --release -p hearth-engine --example image_bench -- DIR [SIZE] [STEPS_LO] [STEPS_HI] [THREADS]`
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use hearth_engine::image::{ImageEngine, ImageJob};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: image_bench DIR [SIZE] [STEPS_LO] [STEPS_HI] [THREADS]");
    let arg = |i: usize, default: usize| args.get(i).map(|v| v.parse().expect("a number")).unwrap_or(default);
    let (size, lo, hi, threads) = (arg(2, 256), arg(3, 2), arg(4, 8), arg(5, 2));
    let engine = ImageEngine::load(dir.as_ref(), threads)?;
    let run = |steps: usize| -> anyhow::Result<f64> {
        let job = ImageJob {
            prompt: "a photo of a red cat".into(),
            n: 1,
            size: size as u32,
            seed: 0,
            steps: Some(steps),
            guidance: Some(7.5),
            init: None,
            mask: None,
            strength: 1.0,
        };
        let start = Instant::now();
        engine.generate(&job, &AtomicBool::new(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(start.elapsed().as_secs_f64())
    };
    run(1)?; // warm-up
    let (t_lo, t_hi) = (run(lo)?, run(hi)?);
    let steps_per_s = (hi - lo) as f64 / (t_hi - t_lo).max(1e-9);
    println!(
        "{{\"side\":\"hearth\",\"size\":{size},\"steps_lo\":{lo},\"steps_hi\":{hi},\"t_lo\":{t_lo:.3},\"t_hi\":{t_hi:.3},\"steps_per_s\":{steps_per_s:.3}}}"
    );
    Ok(())
}
