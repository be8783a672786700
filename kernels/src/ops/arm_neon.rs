//! aarch64 NEON element-wise and pooling kernels: the portable bodies of [`super::scalar`]
//! compiled inside `#[target_feature(enable = "neon")]` entry points, where LLVM vectorizes the
//! channel loops (16 u8 / 4 f32 lanes) and lowers `f32::mul_add` to the fused `fmla`, so the
//! add's vector formula stays a true fused multiply-add.

use super::body;
use super::scalar::Scalar;
use super::{AddParams, PoolGeometry};

/// Quantize f32 → u8.
///
/// # Safety
///
/// The CPU supports NEON; `x.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_u8(x: &[f32], inv: f32, zp: i32, out: &mut [u8]) {
    super::scalar::quantize_u8(x, inv, zp, out)
}

/// Quantize f32 → i8.
///
/// # Safety
///
/// The CPU supports NEON; `x.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_i8(x: &[f32], inv: f32, zp: i32, out: &mut [i8]) {
    super::scalar::quantize_i8(x, inv, zp, out)
}

/// Dequantize u8 → f32.
///
/// # Safety
///
/// The CPU supports NEON; `x.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_u8(x: &[u8], scale: f32, zp: i32, out: &mut [f32]) {
    super::scalar::dequantize_u8(x, scale, zp, out)
}

/// quantized add (vector formula below `vec_len`).
///
/// # Safety
///
/// The CPU supports NEON; equal lengths.
#[target_feature(enable = "neon")]
pub unsafe fn add_u8(a: &[u8], b: &[u8], p: &AddParams, vec_len: usize, out: &mut [u8]) {
    super::scalar::add_u8(a, b, p, vec_len, out)
}

/// In-place quantized add.
///
/// # Safety
///
/// The CPU supports NEON; equal lengths.
#[target_feature(enable = "neon")]
pub unsafe fn add_u8_inplace(a_out: &mut [u8], b: &[u8], p: &AddParams, vec_len: usize) {
    super::scalar::add_u8_inplace(a_out, b, p, vec_len)
}

/// max_pool2d over NHWC.
///
/// # Safety
///
/// The CPU supports NEON; `x.len() == g.in_len()`, `out.len() >= g.out_len()`.
#[target_feature(enable = "neon")]
pub unsafe fn max_pool2d_u8(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    // SAFETY: scalar row ops need no feature; geometry per the contract.
    unsafe { body::max_pool::<Scalar>(x, g, out) }
}

/// adaptive_avg_pool2d over NHWC.
///
/// # Safety
///
/// The CPU supports NEON; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `1 ≤ oh ≤ h`, `1 ≤ ow ≤ w`.
#[target_feature(enable = "neon")]
pub unsafe fn adaptive_avg_pool2d_u8(x: &[u8], g: &PoolGeometry, zp: i32, out: &mut [u8]) {
    // SAFETY: scalar row ops need no feature; geometry per the contract.
    unsafe { body::adaptive_avg_pool::<Scalar>(x, g, zp, out) }
}

/// Quantize a planar `[c, hw]` image to interleaved `[hw, cs]` u8 (see
/// [`super::scalar::quantize_u8_to_nhwc`]).
///
/// # Safety
///
/// The CPU supports NEON; `x.len() = c·hw`, `out.len() = cs·hw`, `1 ≤ c ≤ cs`.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_u8_to_nhwc(
    x: &[f32],
    c: usize,
    cs: usize,
    inv: f32,
    zp: i32,
    fill: u8,
    out: &mut [u8],
) {
    super::scalar::quantize_u8_to_nhwc(x, c, cs, inv, zp, fill, out)
}
