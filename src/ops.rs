//! Element-wise and pooling ops of an int8 CNN: quantize, dequantize, add / add_relu,
//! max_pool2d, adaptive_avg_pool2d — NHWC, bit-exact with PyTorch's fbgemm backend.
//!
//! Every op validates its arguments and then runs the kernel of the chosen ISA
//! (`qkernels_kernels::ops`: scalar, AVX2, AVX-512, NEON), bit-identical to `qkernels_ref` on
//! every ISA. Output qparams of the pools are the input's (PyTorch keeps them).

use crate::validate::{
    check_capacity, check_len, check_nonzero, check_qparams_u8, checked_product,
};
use crate::{Isa, Pool2d, QParams, Result};
use qkernels_kernels::ops::{self as k, AddParams, PoolGeometry};

/// Calls `$f` from the ISA's kernel module (`isa` must already be checked as supported; an ISA of
/// another architecture cannot be, and falls to the portable kernels).
macro_rules! dispatch {
    ($isa:expr, $f:ident ( $($arg:expr),* )) => {{
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked `Isa::Avx512Vnni.is_supported()` (AVX-512 F/BW + FMA);
            // the argument contracts are established by the validation before the dispatch.
            Isa::Avx512Vnni => unsafe { k::x86_avx512::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked `Isa::Avx2.is_supported()` (AVX2 + FMA); contracts as above.
            Isa::Avx2 => unsafe { k::x86_avx2::$f($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: every aarch64 ISA includes NEON; contracts as above.
            Isa::Neon | Isa::NeonDot | Isa::NeonI8mm => unsafe { k::arm_neon::$f($($arg),*) },
            _ => k::scalar::$f($($arg),*),
        }
    }};
}

/// The add constants of `quantized::add` for these qparams.
pub(crate) fn add_params(a_q: QParams, b_q: QParams, out_q: QParams, relu: bool) -> AddParams {
    AddParams::new(
        a_q.scale_f32(),
        a_q.zero_point,
        b_q.scale_f32(),
        b_q.zero_point,
        out_q.scale_f32(),
        out_q.zero_point,
        relu,
    )
}

/// In-place add on a sub-range of a flattened tensor: elements whose *local* index is below
/// `vec_len` take the vector formula. `isa` must be supported; lengths equal.
pub(crate) fn add_inplace_on(isa: Isa, a_out: &mut [u8], b: &[u8], p: &AddParams, vec_len: usize) {
    debug_assert!(isa.is_supported() && a_out.len() == b.len());
    dispatch!(isa, add_u8_inplace(a_out, b, p, vec_len))
}

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
    let inv = 1.0f32 / q.scale_f32();
    dispatch!(isa, quantize_u8(x, inv, q.zero_point, out));
    Ok(())
}

/// The input step of an NHWC network in one pass: quantizes an NCHW f32 tensor
/// `[batch, c, hw]` (same formula and bytes as [`quantize_u8`]) and writes it as NHWC u8
/// `[batch, hw, cs]` with `cs ≥ c` channels per pixel, channels `c..cs` holding the zero point
/// (so a conv reading channel-padded input sees padded taps as `x − zp = 0`). Equal to
/// [`quantize_u8`] followed by an NCHW → NHWC transpose, without the intermediate buffer and
/// the byte-wise transpose. `out` may be longer than `batch·hw·cs`; only that prefix is written.
pub fn quantize_u8_nchw_to_nhwc_with_isa(
    isa: Isa,
    x: &[f32],
    batch: usize,
    c: usize,
    hw: usize,
    cs: usize,
    q: QParams,
    out: &mut [u8],
) -> Result<()> {
    crate::check_isa(isa)?;
    check_qparams_u8(q, "quantize")?;
    check_nonzero(batch, "quantize batch")?;
    check_nonzero(c, "quantize channels")?;
    check_nonzero(hw, "quantize pixels")?;
    if cs < c {
        return crate::invalid!("quantize: output channel stride {cs} < channels {c}");
    }
    let n_in = checked_product(&[batch, c, hw], "quantize input")?;
    let n_out = checked_product(&[batch, hw, cs], "quantize output")?;
    check_len(x.len(), n_in, "quantize input (NCHW)")?;
    check_capacity(out.len(), n_out, "quantize output (NHWC)")?;
    let inv = 1.0f32 / q.scale_f32();
    let fill = q.zero_point as u8;
    for (xi, oi) in x
        .chunks_exact(c * hw)
        .zip(out[..n_out].chunks_exact_mut(hw * cs))
    {
        dispatch!(
            isa,
            quantize_u8_to_nhwc(xi, c, cs, inv, q.zero_point, fill, oi)
        );
    }
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
    let inv = 1.0f32 / q.scale_f32();
    dispatch!(isa, quantize_i8(x, inv, q.zero_point, out));
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
    dispatch!(isa, dequantize_u8(x, q.scale_f32(), q.zero_point, out));
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
    let p = add_params(a_q, b_q, out_q, relu);
    let vec_len = a.len() / 64 * 64;
    dispatch!(isa, add_u8(a, b, &p, vec_len, out));
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
    let g = pool_geometry(n, h, w, c, oh, ow, p);
    dispatch!(isa, max_pool2d_u8(x, &g, &mut out[..olen]));
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
    let g = pool_geometry(n, h, w, c, oh, ow, &Pool2d::square(1, 1, 0));
    dispatch!(
        isa,
        adaptive_avg_pool2d_u8(x, &g, q.zero_point, &mut out[..olen])
    );
    Ok(())
}

fn pool_geometry(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    p: &Pool2d,
) -> PoolGeometry {
    PoolGeometry {
        n,
        h,
        w,
        c,
        oh,
        ow,
        kernel_h: p.kernel_h,
        kernel_w: p.kernel_w,
        stride_h: p.stride_h,
        stride_w: p.stride_w,
        pad_h: p.pad_h,
        pad_w: p.pad_w,
        dilation_h: p.dilation_h,
        dilation_w: p.dilation_w,
    }
}
