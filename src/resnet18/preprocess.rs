//! Image preprocessing with PyTorch's float arithmetic: bilinear resize exactly as
//! `F.interpolate(mode="bilinear", align_corners=False)` (no antialias) computes it on the CPU,
//! then torchvision's `Normalize` (`(x − mean) / std`, two f32 roundings).
//!
//! Every operation below is one f32 operation rounded once, in PyTorch's order, and Rust never
//! contracts a multiply and an add into an FMA, so the result is bit-identical to PyTorch's for
//! any input (for the digits model it is checked against the stored float inputs of all 297
//! test images).

/// Source indices and weights along one axis (PyTorch's `compute_indices_weights_linear`).
fn axis_weights(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|d| {
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
/// (`c·oh·ow` elements). Sizes must be ≥ 1.
pub fn resize_bilinear(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dst: &mut [f32],
) {
    assert!(
        h > 0 && w > 0 && oh > 0 && ow > 0,
        "resize_bilinear: empty size"
    );
    assert_eq!(src.len(), c * h * w, "resize_bilinear: source length");
    assert_eq!(
        dst.len(),
        c * oh * ow,
        "resize_bilinear: destination length"
    );
    let ys = axis_weights(h, oh);
    let xs = axis_weights(w, ow);
    for ch in 0..c {
        let plane = &src[ch * h * w..][..h * w];
        let out = &mut dst[ch * oh * ow..][..oh * ow];
        for (oy, &(y0, y1, hy0, hy1)) in ys.iter().enumerate() {
            let r0 = &plane[y0 * w..][..w];
            let r1 = &plane[y1 * w..][..w];
            for (ox, &(x0, x1, wx0, wx1)) in xs.iter().enumerate() {
                let mut t0 = r0[x0] * wx0;
                t0 += r0[x1] * wx1;
                let mut t1 = r1[x0] * wx0;
                t1 += r1[x1] * wx1;
                let mut v = t0 * hy0;
                v += t1 * hy1;
                out[oy * ow + ox] = v;
            }
        }
    }
}

/// `x[c] = (x[c] − mean[c]) / std[c]` per channel of a CHW tensor (`mean.len()` channels).
pub fn normalize(x: &mut [f32], mean: &[f32], std: &[f32]) {
    assert_eq!(mean.len(), std.len(), "normalize: mean/std lengths");
    let plane = x.len() / mean.len().max(1);
    for (ch, chunk) in x.chunks_mut(plane.max(1)).enumerate().take(mean.len()) {
        for v in chunk {
            *v = (*v - mean[ch]) / std[ch];
        }
    }
}

/// The model input for one image: `planes` is CHW f32 in [0, 1] with `c` = 1 (grey) or the
/// model's channel count; the result is `[channels, oh, ow]`: resized, a grey plane replicated
/// to every channel, normalised with `mean`/`std` (one value per channel).
pub fn image_to_input(
    planes: &[f32],
    c: usize,
    h: usize,
    w: usize,
    (oh, ow): (usize, usize),
    mean: &[f32],
    std: &[f32],
) -> Vec<f32> {
    let channels = mean.len();
    assert!(
        c == 1 || c == channels,
        "image_to_input: {c} planes for {channels} channels"
    );
    let mut resized = vec![0.0f32; c * oh * ow];
    resize_bilinear(planes, c, h, w, oh, ow, &mut resized);
    let mut out = if c == channels {
        resized
    } else {
        resized.repeat(channels)
    };
    normalize(&mut out, mean, std);
    out
}
