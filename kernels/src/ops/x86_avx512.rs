//! AVX-512 (F + BW) element-wise and pooling kernels (x86-64).
//!
//! 16 f32/i32 lanes per `zmm`; u8 is widened with `vpmovzxbd` and narrowed with `vpmovdb`
//! after an explicit clamp (no lane-crossing pack fix-ups needed, unlike AVX2). Same float
//! guards as the AVX2 kernels; `quantized::add` runs 64 elements — exactly PyTorch's vector
//! block — per iteration.

use super::body::{self, MaxVec, RowOps};
use super::{AddParams, PoolGeometry, avg_finish_elem, dequantize_elem, quantize_elem};
use std::arch::x86_64::*;

/// `clamp(rne(min(x·inv, 2^31−128)) + zp, qmin, qmax)` for 16 lanes, as i32.
#[inline(always)]
unsafe fn quantize16_i32(
    p: *const f32,
    inv: __m512,
    zp: __m512i,
    qmin: __m512i,
    qmax: __m512i,
) -> __m512i {
    // SAFETY: AVX-512F is enabled in every caller; `p` valid for 16 f32.
    unsafe {
        let t = _mm512_mul_ps(_mm512_loadu_ps(p), inv);
        // NaN → second operand, like `f32::min` in the reference.
        let t = _mm512_min_ps(t, _mm512_set1_ps(2147483520.0));
        let r = _mm512_cvtps_epi32(t);
        let r = _mm512_min_epi32(
            _mm512_max_epi32(r, _mm512_set1_epi32(-65536)),
            _mm512_set1_epi32(65536),
        );
        _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(r, zp), qmin), qmax)
    }
}

#[inline(always)]
unsafe fn quantize16(
    p: *const f32,
    inv: __m512,
    zp: __m512i,
    qmin: __m512i,
    qmax: __m512i,
) -> __m128i {
    // SAFETY: AVX-512F is enabled in every caller; `p` valid for 16 f32.
    unsafe { _mm512_cvtepi32_epi8(quantize16_i32(p, inv, zp, qmin, qmax)) }
}

/// Quantize f32 → u8 (`inv = 1/f32(scale)`, `zp` in 0..=255).
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn quantize_u8(x: &[f32], inv: f32, zp: i32, out: &mut [u8]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n16 = n / 16 * 16;
    let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zp));
    let (lo, hi) = (_mm512_set1_epi32(0), _mm512_set1_epi32(255));
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 ≤ n.
        unsafe {
            let r = quantize16(x.as_ptr().add(i), vinv, vzp, lo, hi);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), r);
        }
        i += 16;
    }
    for j in n16..n {
        out[j] = quantize_elem(x[j], inv, zp, 0, 255) as u8;
    }
}

/// Quantize f32 → i8 (`inv = 1/f32(scale)`, `zp` in -128..=127).
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn quantize_i8(x: &[f32], inv: f32, zp: i32, out: &mut [i8]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n16 = n / 16 * 16;
    let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zp));
    let (lo, hi) = (_mm512_set1_epi32(-128), _mm512_set1_epi32(127));
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 ≤ n.
        unsafe {
            let r = quantize16(x.as_ptr().add(i), vinv, vzp, lo, hi);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), r);
        }
        i += 16;
    }
    for j in n16..n {
        out[j] = quantize_elem(x[j], inv, zp, -128, 127) as i8;
    }
}

/// Dequantize u8 → f32: `scale · f32(q − zp)`.
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn dequantize_u8(x: &[u8], scale: f32, zp: i32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n16 = n / 16 * 16;
    let (vs, vzp) = (_mm512_set1_ps(scale), _mm512_set1_epi32(zp));
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 ≤ n.
        unsafe {
            let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(x.as_ptr().add(i).cast()));
            let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, vzp));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(vs, f));
        }
        i += 16;
    }
    for j in n16..n {
        out[j] = dequantize_elem(x[j], scale, zp);
    }
}

/// Broadcast constants of the vector formula of `quantized::add` (see [`AddParams`]).
pub(crate) struct AddConsts {
    sa: __m512,
    sb: __m512,
    pa: __m512,
    pb: __m512,
    inv: __m512,
    zp: __m512i,
    relu: bool,
}

impl AddConsts {
    /// Broadcasts `p`.
    ///
    /// # Safety
    /// AVX-512F is supported (the caller runs with it enabled).
    #[inline(always)]
    pub(crate) unsafe fn new(p: &AddParams) -> AddConsts {
        // SAFETY: AVX-512F enabled in every caller (contract).
        unsafe {
            AddConsts {
                sa: _mm512_set1_ps(p.sa),
                sb: _mm512_set1_ps(p.sb),
                pa: _mm512_set1_ps(p.pa),
                pb: _mm512_set1_ps(p.pb),
                inv: _mm512_set1_ps(p.inv_out),
                zp: _mm512_set1_epi32(p.out_zp),
                relu: p.relu,
            }
        }
    }
}

/// Vector formula of `quantized::add` on 16 lanes given as exact f32 values of the u8 inputs
/// (`fa = f32(qa)`, `fb = f32(qb)`); returns the results as i32 in 0..=255. The fused residual
/// epilogue (`requant`) feeds `fa` straight from its requantized registers.
///
/// # Safety
/// AVX-512F and FMA are enabled in the caller.
#[inline(always)]
pub(crate) unsafe fn add_lanes(fa: __m512, fb: __m512, k: &AddConsts) -> __m512i {
    // SAFETY: AVX-512F + FMA enabled in every caller (contract).
    unsafe {
        let da = _mm512_fmadd_ps(k.sa, fa, k.pa);
        let db = _mm512_fmadd_ps(k.sb, fb, k.pb);
        let mut c = _mm512_add_ps(da, db);
        if k.relu {
            c = _mm512_max_ps(c, _mm512_setzero_ps());
        }
        let t = _mm512_mul_ps(c, k.inv);
        let t = _mm512_max_ps(
            _mm512_min_ps(t, _mm512_set1_ps(65536.0)),
            _mm512_set1_ps(-65536.0),
        );
        let r = _mm512_add_epi32(_mm512_cvtps_epi32(t), k.zp);
        _mm512_min_epi32(
            _mm512_max_epi32(r, _mm512_setzero_si512()),
            _mm512_set1_epi32(255),
        )
    }
}

/// [`add_lanes`] for params with [`AddParams::conversion_in_range`], narrowed to u8: without the
/// ±65536 guard (it cannot change a result there) and with an unsigned saturating narrow
/// (`vpmovusdb`) for the upper clamp. Same bytes as `_mm512_cvtepi32_epi8(add_lanes(..))`.
///
/// # Safety
/// AVX-512F and FMA are enabled in the caller; `k` built from params in range; `RELU` equals
/// their `relu`.
#[inline(always)]
pub(crate) unsafe fn add_lanes_in_range_u8<const RELU: bool>(
    fa: __m512,
    fb: __m512,
    k: &AddConsts,
) -> __m128i {
    // SAFETY: AVX-512F + FMA enabled in every caller (contract).
    unsafe {
        let da = _mm512_fmadd_ps(k.sa, fa, k.pa);
        let db = _mm512_fmadd_ps(k.sb, fb, k.pb);
        let mut c = _mm512_add_ps(da, db);
        if RELU {
            c = _mm512_max_ps(c, _mm512_setzero_ps());
        }
        let t = _mm512_mul_ps(c, k.inv);
        let r = _mm512_add_epi32(_mm512_cvtps_epi32(t), k.zp);
        _mm512_cvtusepi32_epi8(_mm512_max_epi32(r, _mm512_setzero_si512()))
    }
}

/// [`add_lanes_in_range_u8`] before the output zero point and the narrowing: the rounded
/// quotient `rne(c · inv_out)` as i32 (exact: `|c · inv_out| < 2³⁰` for params in range). The
/// fused epilogue adds the zero point and narrows four of these at once with saturating packs.
///
/// # Safety
/// As [`add_lanes_in_range_u8`].
#[inline(always)]
pub(crate) unsafe fn add_lanes_in_range_i32<const RELU: bool>(
    fa: __m512,
    fb: __m512,
    k: &AddConsts,
) -> __m512i {
    // SAFETY: AVX-512F + FMA enabled in every caller (contract).
    unsafe {
        let da = _mm512_fmadd_ps(k.sa, fa, k.pa);
        let db = _mm512_fmadd_ps(k.sb, fb, k.pb);
        let mut c = _mm512_add_ps(da, db);
        if RELU {
            c = _mm512_max_ps(c, _mm512_setzero_ps());
        }
        _mm512_cvtps_epi32(_mm512_mul_ps(c, k.inv))
    }
}

#[inline(always)]
unsafe fn add16(a: *const u8, b: *const u8, k: &AddConsts) -> __m128i {
    // SAFETY: AVX-512F + FMA enabled in every caller; `a`, `b` valid for 16 bytes.
    unsafe {
        let fa = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(a.cast())));
        let fb = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(b.cast())));
        _mm512_cvtepi32_epi8(add_lanes(fa, fb, k))
    }
}

#[inline(always)]
unsafe fn add_raw(
    a: *const u8,
    b: *const u8,
    out: *mut u8,
    n: usize,
    p: &AddParams,
    vec_len: usize,
) {
    let v = vec_len.min(n);
    let v64 = v / 64 * 64;
    // SAFETY: AVX-512F/BW + FMA enabled in every caller; pointers valid for `n` elements; each
    // 64-element block is fully read before it is stored (in-place use).
    unsafe {
        let k = AddConsts::new(p);
        let mut i = 0;
        while i < v64 {
            let r0 = add16(a.add(i), b.add(i), &k);
            let r1 = add16(a.add(i + 16), b.add(i + 16), &k);
            let r2 = add16(a.add(i + 32), b.add(i + 32), &k);
            let r3 = add16(a.add(i + 48), b.add(i + 48), &k);
            _mm_storeu_si128(out.add(i).cast(), r0);
            _mm_storeu_si128(out.add(i + 16).cast(), r1);
            _mm_storeu_si128(out.add(i + 32).cast(), r2);
            _mm_storeu_si128(out.add(i + 48).cast(), r3);
            i += 64;
        }
        for j in v64..v {
            *out.add(j) = p.vector_elem(*a.add(j), *b.add(j));
        }
        for j in v..n {
            *out.add(j) = p.scalar_elem(*a.add(j), *b.add(j));
        }
    }
}

/// quantized add: elements `i < vec_len` take the vector (FMA) formula, the rest the scalar one.
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `a`, `b`, `out` have equal lengths.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn add_u8(a: &[u8], b: &[u8], p: &AddParams, vec_len: usize, out: &mut [u8]) {
    debug_assert!(a.len() == b.len() && a.len() == out.len());
    // SAFETY: equal lengths (contract); features enabled here.
    unsafe {
        add_raw(
            a.as_ptr(),
            b.as_ptr(),
            out.as_mut_ptr(),
            a.len(),
            p,
            vec_len,
        )
    }
}

/// In-place quantized add `a_out[i] = add(a_out[i], b[i])`.
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `a_out.len() == b.len()`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn add_u8_inplace(a_out: &mut [u8], b: &[u8], p: &AddParams, vec_len: usize) {
    debug_assert_eq!(a_out.len(), b.len());
    let n = b.len();
    let ptr = a_out.as_mut_ptr();
    // SAFETY: equal lengths (contract); `add_raw` reads each block before storing it.
    unsafe { add_raw(ptr, b.as_ptr(), ptr, n, p, vec_len) }
}

pub(crate) struct Avx512;

impl RowOps for Avx512 {
    #[inline(always)]
    unsafe fn max_taps(x: &[u8], offs: &[usize], dst: &mut [u8]) {
        let n = dst.len();
        let xp = x.as_ptr();
        let mut i = 0;
        // SAFETY: AVX-512BW enabled in the caller; `o + n <= x.len()` for every tap (contract);
        // full-width accesses cover lanes i..i+64 ≤ n, the masked tail only lanes below n − i.
        unsafe {
            while i + 64 <= n {
                let mut acc = _mm512_setzero_si512();
                for &o in offs {
                    acc = _mm512_max_epu8(acc, _mm512_loadu_si512(xp.add(o + i).cast()));
                }
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), acc);
                i += 64;
            }
            if i < n {
                let m: __mmask64 = (1u64 << (n - i)) - 1;
                let mut acc = _mm512_setzero_si512();
                for &o in offs {
                    let v = _mm512_maskz_loadu_epi8(m, xp.add(o + i).cast());
                    acc = _mm512_max_epu8(acc, v);
                }
                _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i).cast(), m, acc);
            }
        }
    }

    #[inline(always)]
    unsafe fn acc_into(acc: &mut [i32], src: &[u8]) {
        let n = acc.len().min(src.len());
        let mut i = 0;
        // SAFETY: AVX-512F enabled in the caller; i + 16 ≤ n for every access.
        unsafe {
            while i + 16 <= n {
                let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(src.as_ptr().add(i).cast()));
                let a = acc.as_mut_ptr().add(i).cast::<__m512i>();
                _mm512_storeu_si512(a, _mm512_add_epi32(_mm512_loadu_si512(a), s));
                i += 16;
            }
        }
        for j in i..n {
            acc[j] = acc[j].wrapping_add(i32::from(src[j]));
        }
    }

    #[inline(always)]
    unsafe fn avg_finish(acc: &[i32], size: i32, inv: f32, zp: i32, out: &mut [u8]) {
        let n = acc.len().min(out.len());
        let mut i = 0;
        // SAFETY: AVX-512F enabled in the caller; i + 16 ≤ n for every access.
        unsafe {
            let off = _mm512_set1_epi32(zp.wrapping_mul(size));
            let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zp));
            while i + 16 <= n {
                let s = _mm512_loadu_si512(acc.as_ptr().add(i).cast());
                let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(s, off));
                let r = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(f, vinv)), vzp);
                let r = _mm512_min_epi32(
                    _mm512_max_epi32(r, _mm512_setzero_si512()),
                    _mm512_set1_epi32(255),
                );
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(r));
                i += 16;
            }
        }
        for j in i..n {
            out[j] = avg_finish_elem(acc[j], size, inv, zp);
        }
    }
}

impl MaxVec for Avx512 {
    type V = __m512i;
    const LANES: usize = 64;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        // SAFETY: AVX-512F enabled in the caller; `p` readable for 64 bytes (contract).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const u8, n: usize) -> __m512i {
        // SAFETY: AVX-512BW enabled in the caller; the mask covers the `n < 64` readable bytes
        // (masked-off lanes are not accessed).
        unsafe { _mm512_maskz_loadu_epi8((1u64 << n) - 1, p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m512i) {
        // SAFETY: AVX-512F enabled in the caller; `p` writable for 64 bytes (contract).
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut u8, v: __m512i, n: usize) {
        // SAFETY: AVX-512BW enabled in the caller; the mask covers the `n < 64` writable bytes.
        unsafe { _mm512_mask_storeu_epi8(p.cast(), (1u64 << n) - 1, v) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512BW enabled in the caller.
        unsafe { _mm512_max_epu8(a, b) }
    }
}

/// max_pool2d over NHWC, 64 channels per `vpmaxub` (masked channel tail); 3×3 stride-2
/// windows take the separable path of [`body::max_pool`].
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `oh`/`ow` the floor-mode output sizes.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn max_pool2d_u8(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    // SAFETY: features enabled here; geometry per the contract.
    unsafe { body::max_pool::<Avx512>(x, g, out) }
}

/// adaptive_avg_pool2d over NHWC, 16 channels per widening add.
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `1 ≤ oh ≤ h`, `1 ≤ ow ≤ w`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn adaptive_avg_pool2d_u8(x: &[u8], g: &PoolGeometry, zp: i32, out: &mut [u8]) {
    // SAFETY: features enabled here; geometry per the contract.
    unsafe { body::adaptive_avg_pool::<Avx512>(x, g, zp, out) }
}

/// Quantize a planar `[c, hw]` f32 image to interleaved `[hw, cs]` u8, channels `c..cs` set to
/// `fill` (see [`super::scalar::quantize_u8_to_nhwc`]). The RGB input step (`c = 3`, `cs` 3 or
/// 4) runs 16 pixels per iteration: the three quantized planes are merged into one i32 per
/// pixel (`r | g << 8 | b << 16 | fill << 24`), stored whole for `cs = 4` or compacted to 3
/// bytes per pixel (in-lane byte shuffle + dword permute + masked store) for `cs = 3`.
/// Other channel counts take the portable loop (`c = cs = 1` the plain quantize).
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW and FMA; `x.len() = c·hw`, `out.len() = cs·hw`, `1 ≤ c ≤ cs`.
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn quantize_u8_to_nhwc(
    x: &[f32],
    c: usize,
    cs: usize,
    inv: f32,
    zp: i32,
    fill: u8,
    out: &mut [u8],
) {
    debug_assert!(c >= 1 && cs >= c && x.len().is_multiple_of(c));
    let hw = x.len() / c;
    debug_assert_eq!(out.len(), hw * cs);
    if c == 1 && cs == 1 {
        // SAFETY: same ISA; equal lengths.
        return unsafe { quantize_u8(x, inv, zp, out) };
    }
    if c != 3 || cs > 4 {
        return super::scalar::quantize_u8_to_nhwc(x, c, cs, inv, zp, fill, out);
    }
    let n16 = hw / 16 * 16;
    let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zp));
    let (lo, hi) = (_mm512_set1_epi32(0), _mm512_set1_epi32(255));
    let vfill = _mm512_set1_epi32(i32::from(fill) << 24);
    // Per 128-bit lane: bytes 0-2 of each of the 4 dwords to the front.
    let shuf = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
    ));
    // The 3 valid dwords of each lane, packed: 48 contiguous bytes.
    let perm = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 0, 0, 0, 0);
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let mut p = 0;
    while p < n16 {
        // SAFETY: p + 16 ≤ hw: 16 f32 readable from each of the 3 planes; 16·cs bytes writable
        // at `op + cs·p` (the `cs = 3` store is masked to 12 dwords = 48 bytes).
        unsafe {
            let r0 = quantize16_i32(xp.add(p), vinv, vzp, lo, hi);
            let r1 = quantize16_i32(xp.add(hw + p), vinv, vzp, lo, hi);
            let r2 = quantize16_i32(xp.add(2 * hw + p), vinv, vzp, lo, hi);
            let v = _mm512_or_si512(
                _mm512_or_si512(r0, _mm512_slli_epi32::<8>(r1)),
                _mm512_slli_epi32::<16>(r2),
            );
            if cs == 4 {
                _mm512_storeu_si512(op.add(4 * p).cast(), _mm512_or_si512(v, vfill));
            } else {
                let v = _mm512_permutexvar_epi32(perm, _mm512_shuffle_epi8(v, shuf));
                _mm512_mask_storeu_epi32(op.add(3 * p).cast(), 0x0FFF, v);
            }
        }
        p += 16;
    }
    super::scalar::quantize_u8_to_nhwc_from(x, c, cs, inv, zp, fill, out, n16);
}
