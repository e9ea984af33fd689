//! Uploaded pictures: the checks OpenAI makes (a PNG under 4 MB, square, a mask
//! of the same size, transparency where no mask is given) and their conversion
//! into what the pipeline takes (RGB at the output size, a repaint mask);
//! and the PNG encoding of results.
use crate::error::ApiError;
use hearth_engine::image::Picture;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageFormat, ImageReader};
use std::io::Cursor;

/// OpenAI's limit on an uploaded image or mask ("less than 4 MB").
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;
/// The largest side decoded: a small PNG can hold a huge, compressible picture.
const MAX_SIDE: u32 = 4096;

/// A decoded, checked upload.
pub struct Upload {
    image: DynamicImage,
}

/// Decodes the upload in form field `param` (`image` or `mask`) and checks it is a square PNG under 4 MB.
pub fn decode(bytes: &[u8], param: &str) -> Result<Upload, ApiError> {
    let not_png = || ApiError::invalid("Uploaded image must be a PNG and less than 4 MB.", Some(param));
    if bytes.len() >= MAX_IMAGE_BYTES || image::guess_format(bytes).ok() != Some(ImageFormat::Png) {
        return Err(not_png());
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ApiError::invalid(format!("Invalid {} - it is larger than {MAX_SIDE}x{MAX_SIDE} pixels.", what(param)), Some(param)),
        _ => not_png(),
    })?;
    if image.width() != image.height() {
        return Err(ApiError::invalid(format!("Invalid {} - image must be square, got {}x{}.", what(param), image.width(), image.height()), Some(param)));
    }
    Ok(Upload { image })
}

fn what(param: &str) -> &'static str {
    if param == "mask" {
        "mask image"
    } else {
        "input image"
    }
}

/// PIL's name of the picture's mode, as OpenAI's messages name it.
fn mode(color: ColorType) -> &'static str {
    match color {
        ColorType::L8 | ColorType::L16 => "L",
        ColorType::La8 | ColorType::La16 => "LA",
        ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => "RGBA",
        _ => "RGB",
    }
}

impl Upload {
    pub fn side(&self) -> u32 {
        self.image.width()
    }

    fn has_alpha(&self) -> bool {
        self.image.color().has_alpha()
    }

    /// The picture's colours at `size` × `size` (transparency dropped).
    pub fn rgb(&self, size: u32) -> Picture {
        let rgb = self.image.to_rgb8();
        let rgb = if rgb.width() == size { rgb } else { image::imageops::resize(&rgb, size, size, FilterType::CatmullRom) };
        Picture { width: size, height: size, rgb: rgb.into_raw() }
    }

    /// Where to repaint at `size` × `size`: 1.0 where this picture is fully transparent
    /// (alpha 0), 0.0 where it is kept; resizing softens the edge in between.
    fn repaint(&self, size: u32) -> Vec<f32> {
        let alpha = self.image.to_rgba8();
        let transparent = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_fn(alpha.width(), alpha.height(), |x, y| {
            image::Luma([if alpha.get_pixel(x, y)[3] == 0 { 1.0 } else { 0.0 }])
        });
        let scaled = if transparent.width() == size { transparent } else { image::imageops::resize(&transparent, size, size, FilterType::Triangle) };
        scaled.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect()
    }
}

/// An edit's image and mask, checked together: the mask (or, without one, the
/// image itself) needs an alpha channel, and the two must be the same size.
pub struct EditInput {
    image: Upload,
    mask: Option<Upload>,
}

impl EditInput {
    pub fn new(image: Upload, mask: Option<Upload>) -> Result<Self, ApiError> {
        match &mask {
            None if !image.has_alpha() => {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid input image - format must be in ['RGBA', 'LA'], got {}. Without a mask, the image's transparent areas (alpha 0) mark where it is edited.",
                        mode(image.image.color())
                    ),
                    Some("image"),
                ))
            }
            Some(m) if !m.has_alpha() => {
                return Err(ApiError::invalid(
                    format!("Invalid mask image - format must be in ['RGBA', 'LA'], got {}. The mask's transparent areas (alpha 0) mark where the image is edited.", mode(m.image.color())),
                    Some("mask"),
                ))
            }
            Some(m) if m.side() != image.side() => {
                return Err(ApiError::invalid(
                    format!("Invalid mask image - mask size ({0}x{0}) must match the image size ({1}x{1}).", m.side(), image.side()),
                    Some("mask"),
                ))
            }
            _ => {}
        }
        Ok(Self { image, mask })
    }

    /// The source picture and the repaint mask at `size`.
    pub fn at(&self, size: u32) -> (Picture, Vec<f32>) {
        (self.image.rgb(size), self.mask.as_ref().unwrap_or(&self.image).repaint(size))
    }
}

/// A result as PNG bytes.
pub fn encode_png(picture: &Picture) -> anyhow::Result<Vec<u8>> {
    let buffer = image::RgbImage::from_raw(picture.width, picture.height, picture.rgb.clone())
        .ok_or_else(|| anyhow::anyhow!("a {}x{} picture with {} bytes", picture.width, picture.height, picture.rgb.len()))?;
    let mut png = Vec::new();
    buffer.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn rgba(side: u32, hole: bool) -> DynamicImage {
        // The left half is transparent when `hole`.
        DynamicImage::ImageRgba8(image::RgbaImage::from_fn(side, side, |x, _| image::Rgba([200, 100, 50, if hole && x < side / 2 { 0 } else { 255 }])))
    }

    fn message(e: ApiError) -> (String, Option<String>) {
        (e.body.error.message, e.body.error.param)
    }

    #[test]
    fn refuses_what_openai_refuses() {
        let (m, p) = message(decode(b"GIF89a not a png", "image").err().unwrap());
        assert_eq!((m.as_str(), p.as_deref()), ("Uploaded image must be a PNG and less than 4 MB.", Some("image")));
        let mut truncated = png(rgba(8, false));
        truncated.truncate(40);
        assert!(decode(&truncated, "mask").is_err());
        let wide = png(DynamicImage::ImageRgb8(image::RgbImage::new(8, 4)));
        assert_eq!(message(decode(&wide, "image").err().unwrap()).0, "Invalid input image - image must be square, got 8x4.");
        let mut big = png(rgba(8, false));
        big.resize(MAX_IMAGE_BYTES, 0);
        assert_eq!(message(decode(&big, "image").err().unwrap()).0, "Uploaded image must be a PNG and less than 4 MB.");
    }

    #[test]
    fn edits_need_alpha_and_matching_sizes() {
        let rgb = decode(&png(DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))), "image").unwrap();
        let e = EditInput::new(rgb, None).err().unwrap();
        assert!(e.body.error.message.starts_with("Invalid input image - format must be in ['RGBA', 'LA'], got RGB."));
        let image = decode(&png(rgba(8, false)), "image").unwrap();
        let mask = decode(&png(rgba(16, true)), "mask").unwrap();
        let (m, p) = message(EditInput::new(image, Some(mask)).err().unwrap());
        assert_eq!((m.as_str(), p.as_deref()), ("Invalid mask image - mask size (16x16) must match the image size (8x8).", Some("mask")));
    }

    #[test]
    fn transparent_areas_are_repainted() {
        let edit = EditInput::new(decode(&png(rgba(8, true)), "image").unwrap(), None).unwrap();
        let (init, mask) = edit.at(8);
        assert_eq!((init.width, init.rgb.len(), mask.len()), (8, 8 * 8 * 3, 64));
        assert_eq!(&init.rgb[..3], &[200, 100, 50]);
        assert_eq!((mask[0], mask[7]), (1.0, 0.0), "left half repainted, right half kept");
        // Scaled up, the halves stay where they were.
        let (init, mask) = edit.at(32);
        assert_eq!((init.rgb.len(), mask.len()), (32 * 32 * 3, 32 * 32));
        assert_eq!((mask[32 * 5], mask[32 * 5 + 31]), (1.0, 0.0));
    }

    #[test]
    fn results_encode_as_png() {
        let picture = Picture { width: 4, height: 4, rgb: vec![7; 48] };
        let bytes = encode_png(&picture).unwrap();
        let back = decode(&bytes, "image").unwrap();
        assert_eq!(back.rgb(4), picture);
    }
}
