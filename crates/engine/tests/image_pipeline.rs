//! The image pipeline against diffusers on the same weights: tests/fixtures/tiny-sd is a
//! Stable-Diffusion-1.x-shaped pipeline with tiny random weights (a stand-in, not a model),
//! and reference.safetensors holds what diffusers computed from the same inputs
//! (scripts/images/make_tiny_sd.py). Noise is passed explicitly, so no RNG is shared.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use hearth_engine::image::{ImageEngine, ImageError, ImageJob, Picture};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

impl Reference {
    fn load() -> Self {
        let dir = fixture_dir();
        let tensors = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let meta = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        Self { tensors, meta }
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        self.tensors[name].flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1().unwrap()
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        self.tensors[name].flatten_all().unwrap().to_vec1().unwrap()
    }
    fn job(&self, init: Option<Picture>, mask: Option<Vec<f32>>, strength: f32) -> ImageJob {
        ImageJob {
            prompt: self.meta["prompt"].as_str().unwrap().to_string(),
            n: 1,
            size: self.meta["size"].as_u64().unwrap() as u32,
            seed: 0,
            steps: Some(self.meta["steps"].as_u64().unwrap() as usize),
            guidance: Some(self.meta["guidance"].as_f64().unwrap() as f32),
            init,
            mask,
            strength,
        }
    }
    fn source(&self) -> Picture {
        let size = self.meta["size"].as_u64().unwrap() as u32;
        Picture { width: size, height: size, rgb: self.bytes("source.pixels") }
    }
}

fn engine() -> ImageEngine {
    ImageEngine::load(&fixture_dir(), 2).expect("the tiny diffusers pipeline loads")
}

/// Largest |a - b| over the largest |b|: the random weights make latents of magnitude ~20,
/// so the error is judged relative to the signal.
fn relative_max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Pixels: every channel within ±2 of diffusers' (f32 reordering can move a value across a rounding edge).
fn assert_pixels_close(got: &Picture, want: &[u8], what: &str) {
    assert_eq!(got.rgb.len(), want.len(), "{what}: pixel count");
    let worst = got.rgb.iter().zip(want).map(|(a, b)| (*a as i16 - *b as i16).abs()).max().unwrap();
    let off = got.rgb.iter().zip(want).filter(|(a, b)| a != b).count();
    eprintln!("{what}: worst pixel diff {worst}, {off} of {} channels differ", want.len());
    assert!(worst <= 2, "{what}: a pixel differs from diffusers by {worst}");
    // A stand-in that made a flat picture would pass trivially; this one has structure.
    let distinct: std::collections::HashSet<u8> = want.iter().copied().collect();
    assert!(distinct.len() > 64, "{what}: the reference picture is degenerate");
}

#[test]
fn prompt_tokens_and_embeddings_match_transformers() {
    let reference = Reference::load();
    let (ids, hidden) = engine().prompt_embeddings(reference.meta["prompt"].as_str().unwrap()).unwrap();
    let want_ids: Vec<i64> = reference.tensors["prompt.input_ids"].to_vec1().unwrap();
    assert_eq!(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), want_ids);
    let diff = relative_max_diff(&hidden, &reference.f32s("prompt.embeddings"));
    assert!(diff < 1e-4, "text encoder differs from transformers by {diff} (relative)");
}

#[test]
fn text_to_image_reproduces_diffusers() {
    let reference = Reference::load();
    let job = reference.job(None, None, 1.0);
    let noise = vec![reference.f32s("txt2img.init_latents")];
    let out = engine().generate_from_noise(&job, &noise, &AtomicBool::new(false)).unwrap();
    let diff = relative_max_diff(&out[0].latents, &reference.f32s("txt2img.latents"));
    eprintln!("txt2img: latents relative max diff {diff}");
    assert!(diff < 1e-3, "final latents differ from diffusers by {diff} (relative)");
    assert_pixels_close(&out[0].picture, &reference.bytes("txt2img.pixels"), "txt2img");
}

#[test]
fn image_to_image_reproduces_diffusers() {
    let reference = Reference::load();
    let strength = reference.meta["img2img_strength"].as_f64().unwrap() as f32;
    let job = reference.job(Some(reference.source()), None, strength);
    let noise = vec![reference.f32s("img2img.noise")];
    let out = engine().generate_from_noise(&job, &noise, &AtomicBool::new(false)).unwrap();
    assert_pixels_close(&out[0].picture, &reference.bytes("img2img.pixels"), "img2img");
}

#[test]
fn inpainting_reproduces_diffusers() {
    let reference = Reference::load();
    let mask: Vec<f32> = reference.bytes("inpaint.mask").iter().map(|&m| m as f32 / 255.0).collect();
    let job = reference.job(Some(reference.source()), Some(mask), 1.0);
    let noise = vec![reference.f32s("img2img.noise")];
    let out = engine().generate_from_noise(&job, &noise, &AtomicBool::new(false)).unwrap();
    assert_pixels_close(&out[0].picture, &reference.bytes("inpaint.pixels"), "inpaint");
}

fn small_job(n: usize, seed: u64) -> ImageJob {
    ImageJob { prompt: "a red otter".into(), n, size: 256, seed, steps: Some(2), guidance: Some(5.0), init: None, mask: None, strength: 1.0 }
}

#[test]
fn pictures_differ_by_seed_and_repeat_for_the_same_seed() {
    let engine = engine();
    let cancel = AtomicBool::new(false);
    let pair = engine.generate(&small_job(2, 41), &cancel).unwrap();
    assert_eq!(pair.len(), 2);
    assert!(pair.iter().all(|p| p.width == 256 && p.height == 256 && p.rgb.len() == 256 * 256 * 3));
    assert_ne!(pair[0], pair[1], "the two pictures of one job share their noise");
    // Picture 1 of seed 41 is picture 0 of seed 42.
    let again = engine.generate(&small_job(1, 42), &cancel).unwrap();
    assert_eq!(again[0], pair[1]);
}

#[test]
fn a_raised_cancel_flag_stops_the_job() {
    let result = engine().generate(&small_job(1, 1), &AtomicBool::new(true));
    assert!(matches!(result, Err(ImageError::Cancelled)), "got {result:?}");
}

#[test]
fn sizes_it_cannot_make_are_invalid() {
    let engine = engine();
    assert_eq!(engine.sizes(), vec![256, 512, 1024]);
    for size in [0, 200, 300] {
        let job = ImageJob { size, ..small_job(1, 1) };
        let result = engine.generate(&job, &AtomicBool::new(false));
        assert!(matches!(result, Err(ImageError::Invalid(_))), "size {size}: {result:?}");
    }
    let wrong_source = ImageJob { init: Some(Picture { width: 8, height: 8, rgb: vec![0; 192] }), ..small_job(1, 1) };
    assert!(matches!(engine.generate(&wrong_source, &AtomicBool::new(false)), Err(ImageError::Invalid(_))));
}
