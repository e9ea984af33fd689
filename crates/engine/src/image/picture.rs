//! Conversions between 8-bit RGB pictures, masks and the pipeline's tensors, with
//! diffusers' conventions: pixels ↔ [-1, 1], output rounded as `(x * 255).round()`.
use anyhow::Result;
use candle_core::{Device, Tensor};

use super::Picture;

/// (1, 3, H, W) in [-1, 1].
pub fn to_tensor(p: &Picture, device: &Device) -> Result<Tensor> {
    let (w, h) = (p.width as usize, p.height as usize);
    let mut planar = vec![0f32; 3 * w * h];
    for (i, px) in p.rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * w * h + i] = px[c] as f32 / 255.0 * 2.0 - 1.0;
        }
    }
    Ok(Tensor::from_vec(planar, (1, 3, h, w), device)?)
}

/// (1, 3, H, W) in about [-1, 1] → a picture.
pub fn from_tensor(t: &Tensor) -> Result<Picture> {
    let (_, c, h, w) = t.dims4()?;
    let unit = ((t.get(0)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let planar: Vec<f32> = unit.flatten_all()?.to_vec1()?;
    let mut rgb = vec![0u8; 3 * w * h];
    for i in 0..w * h {
        for ch in 0..3 {
            let v = planar[(ch % c) * w * h + i];
            rgb[i * 3 + ch] = (v * 255.0).round() as u8;
        }
    }
    Ok(Picture { width: w as u32, height: h as u32, rgb })
}

/// The repaint mask at latent resolution, (1, 1, h, w) of 0/1: binarised at 0.5, then
/// nearest-sampled (each latent cell takes its top-left pixel, as torch's `interpolate` does).
pub fn latent_mask(mask: &[f32], size: usize, scale: usize, device: &Device) -> Result<Tensor> {
    let side = size / scale;
    let values: Vec<f32> = (0..side * side)
        .map(|i| {
            let (y, x) = (i / side * scale, i % side * scale);
            if mask[y * size + x] >= 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(values, (1, 1, side, side), device)?)
}

/// The picture with the repainted region blanked (pixels where mask ≥ 0.5 set to 0, i.e. mid-grey), for 9-channel inpainting UNets.
pub fn masked(p: &Tensor, mask: &[f32], size: usize, device: &Device) -> Result<Tensor> {
    let keep: Vec<f32> = mask.iter().map(|&m| if m >= 0.5 { 0.0 } else { 1.0 }).collect();
    let keep = Tensor::from_vec(keep, (1, 1, size, size), device)?;
    Ok(p.broadcast_mul(&keep)?)
}
