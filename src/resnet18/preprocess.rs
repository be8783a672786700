//! Image preprocessing with PyTorch's float arithmetic: bilinear resize exactly as
//! `F.interpolate(mode="bilinear", align_corners=False)` (no antialias) computes it on the CPU,
//! then torchvision's `Normalize` (`(x − mean) / std`, two f32 roundings).
//!
//! Every operation below is one f32 operation rounded once, in the order (and with the fused
//! multiply-adds) of PyTorch's x86-64 CPU kernel, so the result is bit-identical to PyTorch's
//! for any input: `tests/resnet18_golden.rs` checks it against `F.interpolate` on random images
//! up and down (`tests/data/resize_golden.safetensors`), and the digits test rebuilds the
//! model's float input from the 8×8 images with it. (Rust never contracts on its own, so the
//! FMAs here are explicit `mul_add`s.)

use crate::Result;
use crate::validate::{check_len, checked_product};

/// Largest preprocessed input accepted (elements of `[channels, oh, ow]`): 2^26 floats
/// (256 MiB), far above any real model input and far below what would exhaust memory.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 26;

/// Source indices and weights along one axis (PyTorch's `compute_indices_weights_linear`).
fn axis_weights(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|d| {
            if n_in == n_out {
                return (d, d, 1.0, 0.0);
            }
            let src = scale * (d as f32 + 0.5) - 0.5;
            let src = if src < 0.0 { 0.0 } else { src };
            let i0 = (src.floor() as usize).min(n_in - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Resizes `c` planes of `h × w` (CHW f32) to `oh × ow`, writing CHW into `dst`
/// (`c·oh·ow` elements), bit-identical to `F.interpolate(x, size=(oh, ow), mode="bilinear",
/// align_corners=False)` of PyTorch's x86-64 build running with more than one thread.
///
/// `Err(InvalidArgument)` if a size is 0, a size overflows or a slice length does not match.
pub fn resize_bilinear(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dst: &mut [f32],
) -> Result<()> {
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return crate::invalid!("resize_bilinear: empty size {h}×{w} → {oh}×{ow}");
    }
    check_len(
        src.len(),
        checked_product(&[c, h, w], "resize source")?,
        "resize source",
    )?;
    check_len(
        dst.len(),
        checked_product(&[c, oh, ow], "resize destination")?,
        "resize destination",
    )?;
    let ys = axis_weights(h, oh);
    let xs = axis_weights(w, ow);
    // PyTorch picks its kernel by output size (`_use_vectorized_kernel_cond_2d`): the
    // channels-last kernel when `oh + ow <= 128`, the generic one otherwise (for ≤ 3 channels
    // and more than one intra-op thread; one thread and 3 channels always take channels-last).
    let generic = oh + ow > 128;
    for ch in 0..c {
        let plane = &src[ch * h * w..][..h * w];
        let out = &mut dst[ch * oh * ow..][..oh * ow];
        for (oy, &(y0, y1, hy0, hy1)) in ys.iter().enumerate() {
            let r0 = &plane[y0 * w..][..w];
            let r1 = &plane[y1 * w..][..w];
            for (ox, &(x0, x1, wx0, wx1)) in xs.iter().enumerate() {
                out[oy * ow + ox] = if generic {
                    // generic kernel: `t0*h0 + t1*h1` over `ti = x_i0*w0 + x_i1*w1`, each
                    // `a*b + c*d` contracted by GCC into `fma(a, b, c*d)`
                    let t0 = r0[x0].mul_add(wx0, r0[x1] * wx1);
                    let t1 = r1[x0].mul_add(wx0, r1[x1] * wx1);
                    t0.mul_add(hy0, t1 * hy1)
                } else {
                    // channels-last kernel: corner weights rounded first, then
                    // `x00*w00 + x01*w01 + x10*w10 + x11*w11` as one product and three FMAs
                    let (w00, w01, w10, w11) = (hy0 * wx0, hy0 * wx1, hy1 * wx0, hy1 * wx1);
                    let v = r0[x0].mul_add(w00, r0[x1] * w01);
                    let v = r1[x0].mul_add(w10, v);
                    r1[x1].mul_add(w11, v)
                };
            }
        }
    }
    Ok(())
}

/// `x[c] = (x[c] − mean[c]) / std[c]` per channel of a CHW tensor (`mean.len()` channels).
/// `Err(InvalidArgument)` unless `mean` and `std` have the same non-zero length dividing `x`.
pub fn normalize(x: &mut [f32], mean: &[f32], std: &[f32]) -> Result<()> {
    if mean.is_empty() || mean.len() != std.len() || !x.len().is_multiple_of(mean.len()) {
        return crate::invalid!(
            "normalize: {} values, {} means, {} stds",
            x.len(),
            mean.len(),
            std.len()
        );
    }
    let plane = x.len() / mean.len();
    if plane == 0 {
        return Ok(());
    }
    for (ch, chunk) in x.chunks_mut(plane).enumerate() {
        for v in chunk {
            *v = (*v - mean[ch]) / std[ch];
        }
    }
    Ok(())
}

/// The model input for one image: `planes` is CHW f32 in [0, 1] with `c` = 1 (grey) or the
/// model's channel count; the result is `[channels, oh, ow]`: resized, a grey plane replicated
/// to every channel, normalised with `mean`/`std` (one value per channel).
///
/// # Panics
/// If `c` is neither 1 nor `mean.len()`, or sizes do not match.
pub fn image_to_input(
    planes: &[f32],
    c: usize,
    h: usize,
    w: usize,
    (oh, ow): (usize, usize),
    mean: &[f32],
    std: &[f32],
) -> Result<Vec<f32>> {
    let channels = mean.len();
    if c != 1 && c != channels {
        return crate::invalid!("image_to_input: {c} planes for {channels} channels");
    }
    let n_out = checked_product(&[channels.max(1), oh, ow], "preprocessed input")?;
    if n_out > MAX_INPUT_ELEMENTS {
        return crate::invalid!(
            "image_to_input: a {channels}×{oh}×{ow} input exceeds the limit of {MAX_INPUT_ELEMENTS} values"
        );
    }
    let mut resized = vec![0.0f32; c * oh * ow];
    resize_bilinear(planes, c, h, w, oh, ow, &mut resized)?;
    let mut out = if c == channels {
        resized
    } else {
        resized.repeat(channels)
    };
    normalize(&mut out, mean, std)?;
    Ok(out)
}
