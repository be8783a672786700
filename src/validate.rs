//! Argument validation shared by the Rust API, the C ABI, the CLI and the model loader.
//!
//! Kernels trust their contracts; everything a caller hands us is checked here first, so bad
//! input becomes an [`Error`](crate::Error), never a panic or undefined behaviour.

use crate::{Error, QParams, Result, WeightQParams};

/// Checks that a scale is usable by the kernels: finite and > 0 both as `f64` and after the
/// rounding to `f32` the kernels use, with a finite reciprocal.
pub fn check_scale(scale: f64, what: &str) -> Result<()> {
    let s = scale as f32;
    if !(scale.is_finite() && scale > 0.0 && s.is_finite() && s > 0.0 && (1.0f32 / s).is_finite()) {
        return crate::invalid!(
            "{what}: scale {scale} must be finite, > 0 and representable as f32"
        );
    }
    Ok(())
}

/// Activation (quint8) quantization parameters: valid scale, zero point in 0..=255.
pub fn check_qparams_u8(q: QParams, what: &str) -> Result<()> {
    check_scale(q.scale, what)?;
    if !(0..=255).contains(&q.zero_point) {
        return crate::invalid!("{what}: zero point {} outside 0..=255", q.zero_point);
    }
    Ok(())
}

/// Weight (qint8) quantization parameters for `channels` output channels.
pub fn check_weight_qparams(wq: &WeightQParams, channels: usize, what: &str) -> Result<()> {
    let expect = if wq.per_channel { channels } else { 1 };
    if wq.scales.len() != expect || wq.zero_points.len() != expect {
        return crate::invalid!(
            "{what}: {} weight scales and {} zero points, expected {expect} ({})",
            wq.scales.len(),
            wq.zero_points.len(),
            if wq.per_channel {
                "per channel"
            } else {
                "per tensor"
            }
        );
    }
    for (i, (&s, &zp)) in wq.scales.iter().zip(&wq.zero_points).enumerate() {
        check_scale(s, &format!("{what}: weight scale [{i}]"))?;
        if !(-128..=127).contains(&zp) {
            return crate::invalid!("{what}: weight zero point [{i}] = {zp} outside -128..=127");
        }
    }
    Ok(())
}

/// Product of dimensions, or an error if it overflows `usize`.
pub fn checked_product(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: size {dims:?} overflows usize")))
}

/// Checks that a buffer holds exactly `want` elements.
pub fn check_len(len: usize, want: usize, what: &str) -> Result<()> {
    if len != want {
        return crate::invalid!("{what}: length {len}, expected {want}");
    }
    Ok(())
}

/// Checks that a buffer holds at least `want` elements.
pub fn check_capacity(len: usize, want: usize, what: &str) -> Result<()> {
    if len < want {
        return crate::invalid!("{what}: capacity {len}, need {want}");
    }
    Ok(())
}

/// Checks that a dimension is non-zero.
pub fn check_nonzero(v: usize, what: &str) -> Result<()> {
    if v == 0 {
        return crate::invalid!("{what} must be > 0");
    }
    Ok(())
}

/// Output extent of a sliding window (conv or pool) along one axis:
/// `(input + 2·pad − dilation·(kernel − 1) − 1) / stride + 1`.
///
/// `Err` when `kernel`, `stride` or `dilation` is 0, when the window does not fit in the padded
/// input (no output), or when the padded extent does not fit in `isize` (kernels index the
/// padded input with signed offsets, so it must — no real tensor comes near that).
pub fn window_output_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    what: &str,
) -> Result<usize> {
    check_nonzero(kernel, &format!("{what}: kernel size"))?;
    check_nonzero(stride, &format!("{what}: stride"))?;
    check_nonzero(dilation, &format!("{what}: dilation"))?;
    let span = dilation
        .checked_mul(kernel - 1)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: kernel span overflows")))?;
    let padded = pad
        .checked_mul(2)
        .and_then(|v| v.checked_add(input))
        .filter(|&v| v <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what}: padded input {input} + 2·{pad} overflows isize"
            ))
        })?;
    if padded < span {
        return crate::invalid!(
            "{what}: kernel extent {span} larger than padded input {padded}: no output"
        );
    }
    Ok((padded - span) / stride + 1)
}
