//! Element-wise and pooling ops of an int8 CNN: quantize, dequantize, add / add_relu,
//! max_pool2d, adaptive_avg_pool2d — NHWC, bit-exact with PyTorch's fbgemm backend.
//!
//! Every op validates its arguments and then runs the kernel of the chosen ISA. Output qparams
//! of the pools are the input's (PyTorch keeps them).

use crate::validate::{
    check_capacity, check_len, check_nonzero, check_qparams_u8, checked_product,
};
use crate::{Isa, Pool2d, QParams, Result};

/// Per-tensor quantize f32 → u8 (fbgemm `QuantizeAvx2`: multiply by `1/scale`, round half to
/// even, add the zero point after rounding, saturate). `out.len()` must equal `x.len()`.
pub fn quantize_u8(x: &[f32], q: QParams, out: &mut [u8]) -> Result<()> {
    quantize_u8_with_isa(crate::active_isa(), x, q, out)
}

/// [`quantize_u8`] on an explicit ISA.
pub fn quantize_u8_with_isa(isa: Isa, x: &[f32], q: QParams, out: &mut [u8]) -> Result<()> {
    crate::check_isa(isa)?;
    check_qparams_u8(q, "quantize")?;
    check_len(out.len(), x.len(), "quantize output")?;
    out.copy_from_slice(&qkernels_ref::quantize_u8(x, q));
    Ok(())
}

/// Per-tensor quantize f32 → i8 (same formula as [`quantize_u8`], clamped to -128..=127; the
/// zero point must lie in -128..=127).
pub fn quantize_i8(x: &[f32], q: QParams, out: &mut [i8]) -> Result<()> {
    quantize_i8_with_isa(crate::active_isa(), x, q, out)
}

/// [`quantize_i8`] on an explicit ISA.
pub fn quantize_i8_with_isa(isa: Isa, x: &[f32], q: QParams, out: &mut [i8]) -> Result<()> {
    crate::check_isa(isa)?;
    crate::validate::check_scale(q.scale, "quantize_i8")?;
    if !(-128..=127).contains(&q.zero_point) {
        return crate::invalid!(
            "quantize_i8: zero point {} outside -128..=127",
            q.zero_point
        );
    }
    check_len(out.len(), x.len(), "quantize_i8 output")?;
    out.copy_from_slice(&qkernels_ref::quantize_i8(x, q));
    Ok(())
}

/// Per-tensor dequantize u8 → f32: `f32(scale) * f32(q − zp)`.
pub fn dequantize_u8(x: &[u8], q: QParams, out: &mut [f32]) -> Result<()> {
    dequantize_u8_with_isa(crate::active_isa(), x, q, out)
}

/// [`dequantize_u8`] on an explicit ISA.
pub fn dequantize_u8_with_isa(isa: Isa, x: &[u8], q: QParams, out: &mut [f32]) -> Result<()> {
    crate::check_isa(isa)?;
    check_qparams_u8(q, "dequantize")?;
    check_len(out.len(), x.len(), "dequantize output")?;
    out.copy_from_slice(&qkernels_ref::dequantize_u8(x, q));
    Ok(())
}

/// PyTorch `quantized::add` / `quantized::add_relu` of two same-shape contiguous tensors, as
/// computed with one thread (elements below `64·⌊n/64⌋` take the vector formula, the tail the
/// scalar one — see `docs/semantics.md`). `out` takes the add's own qparams `out_q`.
pub fn add_u8(
    a: &[u8],
    a_q: QParams,
    b: &[u8],
    b_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
) -> Result<()> {
    add_u8_with_isa(crate::active_isa(), a, a_q, b, b_q, out_q, relu, out)
}

/// [`add_u8`] on an explicit ISA.
pub fn add_u8_with_isa(
    isa: Isa,
    a: &[u8],
    a_q: QParams,
    b: &[u8],
    b_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
) -> Result<()> {
    crate::check_isa(isa)?;
    check_qparams_u8(a_q, "add input a")?;
    check_qparams_u8(b_q, "add input b")?;
    check_qparams_u8(out_q, "add output")?;
    check_len(b.len(), a.len(), "add input b")?;
    check_len(out.len(), a.len(), "add output")?;
    out.copy_from_slice(&qkernels_ref::add(a, a_q, b, b_q, out_q, relu));
    Ok(())
}

/// Output size of a pooling window over `h × w`, or `Err` when no window fits.
pub fn pool_output_size(h: usize, w: usize, p: &Pool2d) -> Result<(usize, usize)> {
    let params = crate::conv::Conv2dParams {
        in_channels: 1,
        out_channels: 1,
        kernel_h: p.kernel_h,
        kernel_w: p.kernel_w,
        stride_h: p.stride_h,
        stride_w: p.stride_w,
        pad_h: p.pad_h,
        pad_w: p.pad_w,
        dilation_h: p.dilation_h,
        dilation_w: p.dilation_w,
        groups: 1,
    };
    params.validate()?;
    if p.pad_h > p.kernel_h / 2 || p.pad_w > p.kernel_w / 2 {
        return crate::invalid!(
            "max_pool2d: padding ({}, {}) must be at most half the kernel ({}, {})",
            p.pad_h,
            p.pad_w,
            p.kernel_h,
            p.kernel_w
        );
    }
    params.output_size(h, w)
}

/// max_pool2d over NHWC `[n, h, w, c]` (floor mode; padding never wins). Returns `(oh, ow)`;
/// writes `n·oh·ow·c` elements to `out`.
pub fn max_pool2d_u8(
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    p: &Pool2d,
    out: &mut [u8],
) -> Result<(usize, usize)> {
    max_pool2d_u8_with_isa(crate::active_isa(), x, n, h, w, c, p, out)
}

/// [`max_pool2d_u8`] on an explicit ISA.
pub fn max_pool2d_u8_with_isa(
    isa: Isa,
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    p: &Pool2d,
    out: &mut [u8],
) -> Result<(usize, usize)> {
    crate::check_isa(isa)?;
    for (v, what) in [(n, "batch"), (h, "height"), (w, "width"), (c, "channels")] {
        check_nonzero(v, &format!("max_pool2d {what}"))?;
    }
    let len = checked_product(&[n, h, w, c], "max_pool2d input")?;
    check_len(x.len(), len, "max_pool2d input")?;
    let (oh, ow) = pool_output_size(h, w, p)?;
    let olen = checked_product(&[n, oh, ow, c], "max_pool2d output")?;
    check_capacity(out.len(), olen, "max_pool2d output")?;
    let (y, _, _) = qkernels_ref::max_pool2d_nhwc(x, n, h, w, c, p);
    out[..olen].copy_from_slice(&y);
    Ok((oh, ow))
}

/// adaptive_avg_pool2d over NHWC `[n, h, w, c]` to `[n, oh, ow, c]` with PyTorch's NHWC
/// formula; qparams unchanged (`zero_point` is the input's).
pub fn adaptive_avg_pool2d_u8(
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    q: QParams,
    out: &mut [u8],
) -> Result<()> {
    adaptive_avg_pool2d_u8_with_isa(crate::active_isa(), x, n, h, w, c, oh, ow, q, out)
}

/// [`adaptive_avg_pool2d_u8`] on an explicit ISA.
pub fn adaptive_avg_pool2d_u8_with_isa(
    isa: Isa,
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    q: QParams,
    out: &mut [u8],
) -> Result<()> {
    crate::check_isa(isa)?;
    check_qparams_u8(q, "adaptive_avg_pool2d")?;
    for (v, what) in [
        (n, "batch"),
        (h, "height"),
        (w, "width"),
        (c, "channels"),
        (oh, "output height"),
        (ow, "output width"),
    ] {
        check_nonzero(v, &format!("adaptive_avg_pool2d {what}"))?;
    }
    if oh > h || ow > w {
        return crate::invalid!("adaptive_avg_pool2d: output {oh}×{ow} larger than input {h}×{w}");
    }
    let len = checked_product(&[n, h, w, c], "adaptive_avg_pool2d input")?;
    check_len(x.len(), len, "adaptive_avg_pool2d input")?;
    let olen = checked_product(&[n, oh, ow, c], "adaptive_avg_pool2d output")?;
    check_capacity(out.len(), olen, "adaptive_avg_pool2d output")?;
    let y = qkernels_ref::adaptive_avg_pool2d_nhwc(x, n, h, w, c, oh, ow, q.zero_point);
    out[..olen].copy_from_slice(&y);
    Ok(())
}
