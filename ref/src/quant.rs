//! quantize / dequantize.
//!
//! **Per-tensor quantize** follows FBGEMM's `QuantizeAvx2` (every element, tails included, takes
//! the vector path in PyTorch):
//!
//! ```text
//! inv = 1.0 / f32(scale)                 // multiply by the inverse: x / s differs near ties
//! t   = min(x * inv, 2147483520.0)       // f32::min drops NaN, so NaN -> 2147483520
//! q   = clamp(rne(t) + zp, qmin, qmax)   // zero point added AFTER rounding, as an integer
//! ```
//!
//! **Edge cases (our definition).** PyTorch's `cvtps2dq` returns `i32::MIN` for out-of-range
//! values and then adds the zero point with a *wrapping* i32 add, which maps `+inf`/NaN to 0 for
//! quint8 with `zp >= 128`. We **saturate instead**: `+inf`, NaN and any `x * inv >= 2^31` give
//! `qmax`; `-inf` and `x * inv <= -2^31` give `qmin`. This equals PyTorch everywhere outside that
//! wrap region (which no finite calibrated input reaches) and never panics.
//!
//! **Per-channel quantize** (weights; FBGEMM's scalar `Quantize`):
//! `q = clamp(rne(x * (1.0 / f32(scale_c))) + zp_c, qmin, qmax)`; ±inf saturate, NaN gives 0.
//!
//! **Dequantize**: per tensor `y = f32(scale) * f32(q - zp)` (FBGEMM `Dequantize`); per channel
//! `y = f32(f64(q - zp_c) * scale_c)` (one f64 product, rounded once).

use crate::QParams;

/// `cvtps2dq` with saturation instead of the `i32::MIN` "indefinite" value:
/// round half to even, NaN -> 0, out of range -> `i32::MIN`/`i32::MAX`.
/// (Rust's `as i32` on a float already saturates and maps NaN to 0.)
pub fn cvt_rne_saturating(x: f32) -> i32 {
    x.round_ties_even() as i32
}

fn quantize_per_tensor(x: f32, q: QParams, qmin: i32, qmax: i32) -> i32 {
    let inv = 1.0f32 / q.scale_f32();
    let t = (x * inv).min(2147483520.0);
    cvt_rne_saturating(t)
        .saturating_add(q.zero_point)
        .clamp(qmin, qmax)
}

/// Per-tensor quantize to quint8 (PyTorch `quantize_per_tensor(x, s, zp, torch.quint8)`).
pub fn quantize_u8(x: &[f32], q: QParams) -> Vec<u8> {
    x.iter()
        .map(|&v| quantize_per_tensor(v, q, 0, 255) as u8)
        .collect()
}

/// Per-tensor quantize to qint8.
pub fn quantize_i8(x: &[f32], q: QParams) -> Vec<i8> {
    x.iter()
        .map(|&v| quantize_per_tensor(v, q, -128, 127) as i8)
        .collect()
}

/// Per-channel quantize to qint8 along axis 0 (weights: `x` is `[channels, inner]` row-major).
pub fn quantize_per_channel_i8(x: &[f32], scales: &[f64], zero_points: &[i32]) -> Vec<i8> {
    let channels = scales.len();
    assert!(channels > 0 && zero_points.len() == channels && x.len().is_multiple_of(channels));
    let inner = x.len() / channels;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / inner.max(1);
            let inv = 1.0f32 / (scales[c] as f32);
            let r = if (v * inv).is_nan() {
                0
            } else {
                cvt_rne_saturating(v * inv)
            };
            r.saturating_add(zero_points[c]).clamp(-128, 127) as i8
        })
        .collect()
}

/// Per-tensor dequantize of quint8: `f32(scale) * f32(q - zp)`.
pub fn dequantize_u8(x: &[u8], q: QParams) -> Vec<f32> {
    let s = q.scale_f32();
    x.iter()
        .map(|&v| s * (i32::from(v) - q.zero_point) as f32)
        .collect()
}

/// Per-tensor dequantize of qint8.
pub fn dequantize_i8(x: &[i8], q: QParams) -> Vec<f32> {
    let s = q.scale_f32();
    x.iter()
        .map(|&v| s * (i32::from(v) - q.zero_point) as f32)
        .collect()
}

/// Per-channel dequantize of qint8 along axis 0: `f32(f64(q - zp_c) * scale_c)`.
pub fn dequantize_per_channel_i8(x: &[i8], scales: &[f64], zero_points: &[i32]) -> Vec<f32> {
    let channels = scales.len();
    assert!(channels > 0 && zero_points.len() == channels && x.len().is_multiple_of(channels));
    let inner = x.len() / channels;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / inner.max(1);
            (f64::from(i32::from(v) - zero_points[c]) * scales[c]) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even_and_zp_after_rounding() {
        let q = QParams::new(1.0, 10);
        assert_eq!(
            quantize_u8(&[-0.5, -1.5, 2.5, 0.5, 1.5], q),
            vec![10, 8, 12, 10, 12]
        );
    }

    #[test]
    fn non_finite_saturate() {
        let q = QParams::new(0.1, 200);
        let y = quantize_u8(
            &[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e30, -1e30],
            q,
        );
        assert_eq!(y, vec![255, 0, 255, 255, 0]);
        let q = QParams::new(0.1, -5);
        let y = quantize_i8(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN], q);
        assert_eq!(y, vec![127, -128, 127]);
    }
}
