//! Portable kernels: the formulas of [`super`] applied element by element. `Isa::Scalar` runs
//! these; the SIMD modules use the same element functions for their tails.

use super::body::{self, MaxVec, RowOps};
use super::{AddParams, PoolGeometry, avg_finish_elem, dequantize_elem, quantize_elem};

/// Quantize f32 → u8 with `inv = 1/f32(scale)` and zero point `zp` (0..=255).
pub fn quantize_u8(x: &[f32], inv: f32, zp: i32, out: &mut [u8]) {
    debug_assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_elem(v, inv, zp, 0, 255) as u8;
    }
}

/// Quantize f32 → i8 with `inv = 1/f32(scale)` and zero point `zp` (-128..=127).
pub fn quantize_i8(x: &[f32], inv: f32, zp: i32, out: &mut [i8]) {
    debug_assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_elem(v, inv, zp, -128, 127) as i8;
    }
}

/// Dequantize u8 → f32: `scale · f32(q − zp)`.
pub fn dequantize_u8(x: &[u8], scale: f32, zp: i32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    for (o, &q) in out.iter_mut().zip(x) {
        *o = dequantize_elem(q, scale, zp);
    }
}

/// quantized add: elements `i < vec_len` take the vector (FMA) formula, the rest the scalar one.
pub fn add_u8(a: &[u8], b: &[u8], p: &AddParams, vec_len: usize, out: &mut [u8]) {
    debug_assert!(a.len() == b.len() && a.len() == out.len());
    let v = vec_len.min(a.len());
    for i in 0..v {
        out[i] = p.vector_elem(a[i], b[i]);
    }
    for i in v..a.len() {
        out[i] = p.scalar_elem(a[i], b[i]);
    }
}

/// In-place quantized add: `a_out[i] = add(a_out[i], b[i])` with the same formula rule.
pub fn add_u8_inplace(a_out: &mut [u8], b: &[u8], p: &AddParams, vec_len: usize) {
    debug_assert_eq!(a_out.len(), b.len());
    let v = vec_len.min(b.len());
    for i in 0..v {
        a_out[i] = p.vector_elem(a_out[i], b[i]);
    }
    for i in v..b.len() {
        a_out[i] = p.scalar_elem(a_out[i], b[i]);
    }
}

pub(crate) struct Scalar;

impl RowOps for Scalar {
    #[inline(always)]
    unsafe fn max_taps(x: &[u8], offs: &[usize], dst: &mut [u8]) {
        dst.fill(0);
        let n = dst.len();
        for &o in offs {
            for (d, &s) in dst.iter_mut().zip(&x[o..o + n]) {
                *d = (*d).max(s);
            }
        }
    }
    #[inline(always)]
    unsafe fn acc_into(acc: &mut [i32], src: &[u8]) {
        for (a, &s) in acc.iter_mut().zip(src) {
            *a = a.wrapping_add(i32::from(s));
        }
    }
    #[inline(always)]
    unsafe fn avg_finish(acc: &[i32], size: i32, inv: f32, zp: i32, out: &mut [u8]) {
        for (o, &s) in out.iter_mut().zip(acc) {
            *o = avg_finish_elem(s, size, inv, zp);
        }
    }
}

/// 16 u8 lanes as an array: the loops vectorise to whatever the target has (SSE2, NEON).
impl MaxVec for Scalar {
    type V = [u8; 16];
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> [u8; 16] {
        // SAFETY: `p` readable for 16 bytes (contract).
        unsafe { p.cast::<[u8; 16]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const u8, n: usize) -> [u8; 16] {
        let mut v = [0u8; 16];
        // SAFETY: `p` readable for `n < 16` bytes (contract).
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n) };
        v
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: [u8; 16]) {
        // SAFETY: `p` writable for 16 bytes (contract).
        unsafe { p.cast::<[u8; 16]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut u8, v: [u8; 16], n: usize) {
        // SAFETY: `p` writable for `n < 16` bytes (contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n) }
    }
    #[inline(always)]
    unsafe fn max(a: [u8; 16], b: [u8; 16]) -> [u8; 16] {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
}

/// max_pool2d over NHWC (see [`PoolGeometry`]); `x.len() == g.in_len()`,
/// `out.len() >= g.out_len()`.
pub fn max_pool2d_u8(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    assert!(x.len() == g.in_len() && out.len() >= g.out_len());
    // SAFETY: the scalar row ops need no CPU feature; lengths checked above.
    unsafe { body::max_pool::<Scalar>(x, g, out) }
}

/// adaptive_avg_pool2d over NHWC to `g.oh × g.ow`; `x.len() == g.in_len()`,
/// `out.len() >= g.out_len()`, `1 ≤ oh ≤ h`, `1 ≤ ow ≤ w`.
pub fn adaptive_avg_pool2d_u8(x: &[u8], g: &PoolGeometry, zp: i32, out: &mut [u8]) {
    assert!(x.len() == g.in_len() && out.len() >= g.out_len());
    assert!(g.oh >= 1 && g.oh <= g.h && g.ow >= 1 && g.ow <= g.w);
    // SAFETY: the scalar row ops need no CPU feature; the geometry was checked above.
    unsafe { body::adaptive_avg_pool::<Scalar>(x, g, zp, out) }
}

/// Quantize one planar image to interleaved channels: `x` is `[c, hw]` f32 (one NCHW image),
/// `out` is `[hw, cs]` u8 with `cs ≥ c`; channel `ch < c` of pixel `p` is
/// `quantize(x[ch·hw + p])`, channels `c..cs` hold `fill`. Pixels before `p0` are left alone
/// (the SIMD kernels finish their tails with this).
pub fn quantize_u8_to_nhwc_from(
    x: &[f32],
    c: usize,
    cs: usize,
    inv: f32,
    zp: i32,
    fill: u8,
    out: &mut [u8],
    p0: usize,
) {
    debug_assert!(c >= 1 && cs >= c && x.len().is_multiple_of(c));
    let hw = x.len() / c;
    debug_assert_eq!(out.len(), hw * cs);
    for (p, px) in out.chunks_exact_mut(cs).enumerate().skip(p0) {
        for (ch, o) in px[..c].iter_mut().enumerate() {
            *o = quantize_elem(x[ch * hw + p], inv, zp, 0, 255) as u8;
        }
        px[c..].fill(fill);
    }
}

/// [`quantize_u8_to_nhwc_from`] over the whole image: the input step of a CNN (quantize the
/// NCHW float input and write NHWC, optionally channel-padded, in one pass).
pub fn quantize_u8_to_nhwc(
    x: &[f32],
    c: usize,
    cs: usize,
    inv: f32,
    zp: i32,
    fill: u8,
    out: &mut [u8],
) {
    quantize_u8_to_nhwc_from(x, c, cs, inv, zp, fill, out, 0)
}
