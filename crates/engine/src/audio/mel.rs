//! Whisper's log-mel spectrogram: 25 ms periodic-Hann frames every 10 ms
//! (n_fft 400, hop 160 at 16 kHz, centred with reflect padding), power
//! spectrum, Slaney mel filterbank, log10, clamp to (max − 8), then (x + 4) / 4.
//! The DFT is a matmul against a cos/sin table: n_fft 400 is not a power of
//! two, and one matmul over a window's frames is fast on candle's gemm. The
//! spectrogram is computed 30 s at a time (`raw_chunk`), so a transcription
//! holds it for about two windows, never for the whole audio.
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::f64::consts::PI;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30 s window.
pub const WINDOW_FRAMES: usize = 3000;
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;

pub struct MelFrontend {
    n_mels: usize,
    /// `[N_FFT, bins]` window-weighted cos and sin.
    dft_cos: Tensor,
    dft_sin: Tensor,
    /// `[bins, n_mels]`.
    filters_t: Tensor,
}

impl MelFrontend {
    pub fn new(n_mels: usize) -> Result<Self> {
        let bins = N_FFT / 2 + 1;
        let hann: Vec<f64> = (0..N_FFT).map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos()).collect();
        let mut cos = Vec::with_capacity(N_FFT * bins);
        let mut sin = Vec::with_capacity(N_FFT * bins);
        for (n, w) in hann.iter().enumerate() {
            for k in 0..bins {
                let angle = 2.0 * PI * ((n * k) % N_FFT) as f64 / N_FFT as f64;
                cos.push((w * angle.cos()) as f32);
                sin.push((w * angle.sin()) as f32);
            }
        }
        let filters = slaney_filterbank(n_mels, bins);
        let mut filters_t = vec![0f32; bins * n_mels];
        for m in 0..n_mels {
            for b in 0..bins {
                filters_t[b * n_mels + m] = filters[m * bins + b] as f32;
            }
        }
        let dev = Device::Cpu;
        Ok(Self {
            n_mels,
            dft_cos: Tensor::from_vec(cos, (N_FFT, bins), &dev)?,
            dft_sin: Tensor::from_vec(sin, (N_FFT, bins), &dev)?,
            filters_t: Tensor::from_vec(filters_t, (bins, n_mels), &dev)?,
        })
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Log-mel `[n_mels, frames]` of 16 kHz `samples` followed by 30 s of
    /// silence (as Whisper pads, so the last window is complete); the frames
    /// holding content are the first `samples.len() / HOP`. (Transcription
    /// reads the same values chunk by chunk: `raw_chunk`, `normalise`.)
    #[cfg(test)]
    pub fn log_mel(&self, samples: &[f32]) -> Result<Tensor> {
        let frames = frame_count(samples.len());
        let mut out = vec![0f32; self.n_mels * frames];
        let mut max = f32::NEG_INFINITY;
        for first in (0..frames).step_by(WINDOW_FRAMES) {
            let log = self.raw_chunk(samples, 0, Some(samples.len()), first)?;
            for (i, row) in log.chunks_exact(self.n_mels).enumerate() {
                for (m, &v) in row.iter().enumerate() {
                    out[m * frames + first + i] = v;
                    max = max.max(v);
                }
            }
        }
        let floor = max - 8.0;
        out.iter_mut().for_each(|v| *v = normalise(*v, floor));
        Ok(Tensor::from_vec(out, (self.n_mels, frames), &Device::Cpu)?)
    }

    /// log10 mel power of the frames `[first, first + WINDOW_FRAMES)` (fewer at
    /// the end), row-major `[frames][n_mels]`, before `normalise`. `held` are
    /// samples `[offset, offset + held.len())` of audio `len` samples long
    /// (None while its end is not known, which these frames do not reach); it
    /// must hold every sample of the audio within `N_FFT / 2` of these frames.
    /// The spectrogram is always computed in these chunks, so a chunk computed
    /// again, or from a different part of memory, has the same values.
    pub fn raw_chunk(&self, held: &[f32], offset: usize, len: Option<usize>, first: usize) -> Result<Vec<f32>> {
        let half = N_FFT / 2;
        let count = len.map_or(WINDOW_FRAMES, |len| WINDOW_FRAMES.min(frame_count(len) - first));
        // Reflect padding (without repeating the edge sample), as torch.stft(center=True),
        // of the samples followed by the silence.
        let n = len.map_or(isize::MAX, |len| (len + WINDOW_SAMPLES) as isize);
        let at = |i: isize| -> f32 {
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            let j = j.clamp(0, n - 1) as usize;
            j.checked_sub(offset).and_then(|k| held.get(k)).copied().unwrap_or(0.0)
        };
        let mut framed = Vec::with_capacity(count * N_FFT);
        for f in first..first + count {
            let start = (f * HOP) as isize - half as isize;
            framed.extend((0..N_FFT as isize).map(|i| at(start + i)));
        }
        let chunk = Tensor::from_slice(&framed, (count, N_FFT), &Device::Cpu)?;
        let re = chunk.matmul(&self.dft_cos)?;
        let im = chunk.matmul(&self.dft_sin)?;
        let power = (re.sqr()? + im.sqr()?)?;
        let mel = power.matmul(&self.filters_t)?; // [count, n_mels]
        let log = mel.clamp(1e-10f32, f32::MAX)?.log()?.affine(1.0 / std::f64::consts::LN_10, 0.0)?;
        Ok(log.flatten_all()?.to_vec1()?)
    }
}

/// Spectrogram frames of `len` samples and the 30 s of padding: torch.stft
/// yields 1 + n / HOP frames; Whisper drops the last one.
pub fn frame_count(len: usize) -> usize {
    (len + WINDOW_SAMPLES) / HOP
}

/// A log10 value scaled as Whisper's input: clamped to 8 below the audio's
/// loudest (`floor` = max − 8), then (x + 4) / 4.
pub fn normalise(v: f32, floor: f32) -> f32 {
    (v.max(floor) + 4.0) / 4.0
}

/// Slaney-style mel scale (linear below 1 kHz, logarithmic above), as librosa's default.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel, logstep) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if hz < min_log_hz {
        hz / f_sp
    } else {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel, logstep) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if mel < min_log_mel {
        mel * f_sp
    } else {
        min_log_hz * ((mel - min_log_mel) * logstep).exp()
    }
}

/// Triangular filters `[n_mels][bins]` from 0 to 8 kHz, area-normalised ("slaney" norm).
fn slaney_filterbank(n_mels: usize, bins: usize) -> Vec<f64> {
    let fmax = SAMPLE_RATE as f64 / 2.0;
    let fft_freqs: Vec<f64> = (0..bins).map(|i| i as f64 * fmax / (bins - 1) as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let points: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut out = vec![0.0; n_mels * bins];
    for m in 0..n_mels {
        let (left, centre, right) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (right - left);
        for (b, &f) in fft_freqs.iter().enumerate() {
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            out[m * bins + b] = rising.min(falling).max(0.0) * norm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
    }

    #[test]
    fn a_tone_lands_in_its_mel_band() -> Result<()> {
        let front = MelFrontend::new(80)?;
        let tone: Vec<f32> = (0..SAMPLE_RATE).map(|i| (2.0 * PI * 1000.0 * i as f64 / SAMPLE_RATE as f64).sin() as f32 * 0.5).collect();
        let mel = front.log_mel(&tone)?; // [80, frames]
        assert_eq!(mel.dims(), &[80, (SAMPLE_RATE + WINDOW_SAMPLES) / HOP]);
        let column: Vec<f32> = mel.narrow(1, 50, 1)?.flatten_all()?.to_vec1()?;
        let loudest = column.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let centre = hz_to_mel(1000.0);
        let band = |m: usize| hz_to_mel(mel_to_hz(hz_to_mel(8000.0) * (m + 1) as f64 / 81.0));
        assert!((band(loudest) - centre).abs() < 1.0, "1 kHz peaks in band {loudest}");
        Ok(())
    }
}
