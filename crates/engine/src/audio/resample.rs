//! Band-limited resampling, fed piece by piece: a Hann-windowed sinc with 16
//! zero crossings each side, cut off just under the lower Nyquist frequency,
//! precomputed per phase (the ratio reduced to `up / down`, so each output
//! sample uses one table row). Only the last filter's width of input is kept.

pub struct Resampler {
    from: u32,
    up: u64,
    down: u64,
    /// Taps each side, in input samples.
    half: i64,
    taps: usize,
    /// `up` rows of `taps` weights.
    table: Vec<f32>,
    /// Input samples from absolute index `kept_from` on.
    kept: Vec<f32>,
    kept_from: i64,
    /// Input samples pushed so far.
    seen: i64,
    /// Index of the next output sample.
    next: u64,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        let g = gcd(from as u64, to as u64);
        let (up, down) = (to as u64 / g, from as u64 / g);
        let cutoff = 0.97 * (to as f64 / from as f64).min(1.0);
        let half = (16.0 / cutoff).ceil() as i64;
        let taps = (2 * half) as usize;
        // Identity needs no table: `push` copies.
        let rows = if up == down { 0 } else { up as usize };
        let mut table = vec![0f32; rows * taps];
        for phase in 0..rows {
            let frac = phase as f64 / up as f64;
            let row = &mut table[phase * taps..(phase + 1) * taps];
            let mut sum = 0.0;
            for (k, w) in row.iter_mut().enumerate() {
                let x = (k as i64 - half + 1) as f64 - frac; // input offset from the output position
                let window = if x.abs() < half as f64 { 0.5 + 0.5 * (std::f64::consts::PI * x / half as f64).cos() } else { 0.0 };
                let v = cutoff * sinc(cutoff * x) * window;
                *w = v as f32;
                sum += v;
            }
            row.iter_mut().for_each(|w| *w = (*w as f64 / sum) as f32);
        }
        Self { from, up, down, half, taps, table, kept: Vec::new(), kept_from: 0, seen: 0, next: 0 }
    }

    /// The input rate.
    pub fn from(&self) -> u32 {
        self.from
    }

    /// Appends to `out` every output sample whose filter lies within the input so far.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.up == self.down {
            out.extend_from_slice(input);
            return;
        }
        self.kept.extend_from_slice(input);
        self.seen += input.len() as i64;
        // Output j reads input up to base + half, base = j·down / up.
        while ((self.next * self.down / self.up) as i64) + self.half < self.seen {
            out.push(self.output(self.next));
            self.next += 1;
        }
        let first_needed = (self.next * self.down / self.up) as i64 - self.half + 1;
        let drop = (first_needed - self.kept_from).clamp(0, self.kept.len() as i64) as usize;
        self.kept.drain(..drop);
        self.kept_from += drop as i64;
    }

    /// The remaining output (the input is taken as silent past its end):
    /// `input length · up / down` samples in all.
    pub fn finish(mut self, out: &mut Vec<f32>) {
        if self.up == self.down {
            return;
        }
        let total = self.seen as u64 * self.up / self.down;
        while self.next < total {
            out.push(self.output(self.next));
            self.next += 1;
        }
    }

    fn output(&self, j: u64) -> f32 {
        let pos = j * self.down;
        let row = &self.table[(pos % self.up) as usize * self.taps..][..self.taps];
        let first = (pos / self.up) as i64 - self.half + 1;
        if first >= self.kept_from && first + self.taps as i64 <= self.seen {
            let src = &self.kept[(first - self.kept_from) as usize..][..self.taps];
            src.iter().zip(row).map(|(s, w)| s * w).sum()
        } else {
            row.iter()
                .enumerate()
                .map(|(k, w)| {
                    let i = first + k as i64;
                    if i >= self.kept_from && i < self.seen {
                        self.kept[(i - self.kept_from) as usize] * w
                    } else {
                        0.0
                    }
                })
                .sum()
        }
    }
}

/// Resamples a whole signal at once (the tests' reference).
#[cfg(test)]
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut r = Resampler::new(from, to);
    let mut out = Vec::new();
    r.push(input, &mut out);
    r.finish(&mut out);
    out
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize).map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32).collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_passband_and_removes_aliases() {
        for from in [44_100, 48_000, 22_050, 8_000] {
            let kept = resample(&tone(1000.0, from, 1.0), from, 16_000);
            assert_eq!(kept.len(), 16_000);
            assert!((rms(&kept[1000..15_000]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01, "{from}: 1 kHz level {}", rms(&kept));
            if from > 16_000 {
                // 12 kHz would fold to 4 kHz without the low-pass.
                let alias = resample(&tone(12_000.0, from, 1.0), from, 16_000);
                assert!(rms(&alias[1000..15_000]) < 0.01, "{from}: alias level {}", rms(&alias));
            }
        }
    }

    #[test]
    fn pieces_give_the_same_samples_as_the_whole() {
        for from in [44_100, 8_000, 16_000, 96_000] {
            let input = tone(440.0, from, 0.7);
            let whole = resample(&input, from, 16_000);
            let mut r = Resampler::new(from, 16_000);
            let mut pieces = Vec::new();
            // Uneven pieces, some shorter than the filter.
            let mut at = 0;
            for size in [1usize, 7, 300, 2, 5000, 13].into_iter().cycle() {
                if at >= input.len() {
                    break;
                }
                let end = (at + size).min(input.len());
                r.push(&input[at..end], &mut pieces);
                at = end;
            }
            r.finish(&mut pieces);
            assert_eq!(whole, pieces, "{from} Hz");
            assert!(r_kept_is_bounded(from));
        }
    }

    /// Pushing a long signal keeps only about one filter's width of input.
    fn r_kept_is_bounded(from: u32) -> bool {
        let mut r = Resampler::new(from, 16_000);
        let mut out = Vec::new();
        for _ in 0..100 {
            r.push(&[0.5; 4096], &mut out);
        }
        r.kept.len() <= 4096 + r.taps
    }
}
