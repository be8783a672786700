//! PNG/JPEG → model input, following the model's metadata (`preprocess`, `input_size`,
//! `mean`, `std`): pixels to [0, 1] floats (`x / 255`, `x / 65535` for 16-bit images), grey
//! when the model is a grayscale one (PIL's `convert("L")` integer formula for colour images),
//! bilinear resize with PyTorch's arithmetic, grey replicated to every channel, normalised.

use image::{DynamicImage, ImageReader};
use qkernels::resnet18::{Metadata, preprocess};
use std::path::Path;

/// PIL's `convert("L")`: `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16` (ITU-R 601-2).
fn pil_luma(r: u32, g: u32, b: u32) -> u32 {
    (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
}

/// Decoded planes: `(CHW floats in [0, 1], channels (1 or 3), height, width)`.
fn planes(img: &DynamicImage, grey: bool) -> (Vec<f32>, usize, usize, usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let sixteen = matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    let colour = img.color().has_color();
    if !colour {
        let v: Vec<f32> = if sixteen {
            img.to_luma16()
                .pixels()
                .map(|p| p.0[0] as f32 / 65535.0)
                .collect()
        } else {
            img.to_luma8()
                .pixels()
                .map(|p| p.0[0] as f32 / 255.0)
                .collect()
        };
        return (v, 1, h, w);
    }
    if grey {
        let v: Vec<f32> = if sixteen {
            img.to_rgb16()
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u64::from);
                    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32 / 65535.0
                })
                .collect()
        } else {
            img.to_rgb8()
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u32::from);
                    pil_luma(r, g, b) as f32 / 255.0
                })
                .collect()
        };
        return (v, 1, h, w);
    }
    let mut v = vec![0f32; 3 * h * w];
    if sixteen {
        for (i, p) in img.to_rgb16().pixels().enumerate() {
            for c in 0..3 {
                v[c * h * w + i] = p.0[c] as f32 / 65535.0;
            }
        }
    } else {
        for (i, p) in img.to_rgb8().pixels().enumerate() {
            for c in 0..3 {
                v[c * h * w + i] = p.0[c] as f32 / 255.0;
            }
        }
    }
    (v, 3, h, w)
}

/// Reads one image and returns the model input `[channels, H, W]` (`H, W` = `input_size`).
pub fn load_input(path: &Path, meta: &Metadata) -> Result<Vec<f32>, String> {
    let img = ImageReader::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .decode()
        .map_err(|e| format!("{}: not a readable PNG/JPEG image ({e})", path.display()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!("{}: empty image", path.display()));
    }
    let channels = meta.input_channels;
    let grey = meta.grayscale() || channels == 1;
    let (p, c, h, w) = planes(&img, grey);
    if c != 1 && c != channels {
        return Err(format!(
            "{}: a {c}-channel image for a {channels}-channel model",
            path.display()
        ));
    }
    preprocess::image_to_input(&p, c, h, w, meta.input_size, &meta.mean, &meta.std)
        .map_err(|e| format!("{}: {e}", path.display()))
}
