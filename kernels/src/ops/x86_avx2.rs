//! AVX2 + FMA element-wise and pooling kernels (x86-64).
//!
//! Register use: 8 f32/i32 lanes per `ymm`; u8 data is widened with `vpmovzxbd` and narrowed
//! back with `vpackssdw`/`vpackuswb` + a lane permute. Rounding is `vcvtps2dq` under the default
//! MXCSR (round half to even), guarded by a float clamp so it never hits the `i32::MIN`
//! "indefinite" result where the reference saturates.

use super::body::{self, MaxVec, RowOps};
use super::{AddParams, PoolGeometry, avg_finish_elem, dequantize_elem, quantize_elem};
use std::arch::x86_64::*;

/// Narrows four vectors of i32 already clamped to 0..=255 into 32 u8 in order.
#[inline(always)]
unsafe fn pack_u8x32(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller (inlined into #[target_feature] fns).
    unsafe {
        let p01 = _mm256_packs_epi32(v0, v1);
        let p23 = _mm256_packs_epi32(v2, v3);
        let b = _mm256_packus_epi16(p01, p23);
        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Narrows four vectors of i32 already clamped to -128..=127 into 32 i8 in order.
#[inline(always)]
unsafe fn pack_i8x32(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let p01 = _mm256_packs_epi32(v0, v1);
        let p23 = _mm256_packs_epi32(v2, v3);
        let b = _mm256_packs_epi16(p01, p23);
        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Narrows one vector of i32 clamped to 0..=255 into 8 u8 (low 64 bits).
#[inline(always)]
unsafe fn pack_u8x8(v: __m256i) -> __m128i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let lo = _mm256_castsi256_si128(v);
        let hi = _mm256_extracti128_si256::<1>(v);
        let w = _mm_packs_epi32(lo, hi);
        _mm_packus_epi16(w, w)
    }
}

/// `clamp(rne(min(x·inv, 2^31−128)) + zp, qmin, qmax)` for 8 lanes.
#[inline(always)]
unsafe fn quantize8(
    p: *const f32,
    inv: __m256,
    zp: __m256i,
    qmin: __m256i,
    qmax: __m256i,
) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller; `p` is valid for 8 f32 (caller's loop bound).
    unsafe {
        let t = _mm256_mul_ps(_mm256_loadu_ps(p), inv);
        // NaN → second operand, exactly like `f32::min` in the reference.
        let t = _mm256_min_ps(t, _mm256_set1_ps(2147483520.0));
        let r = _mm256_cvtps_epi32(t); // -inf / ≤ −2^31 → i32::MIN (= saturation)
        // Bound |r| before adding zp so the i32 add cannot wrap (the result clamps anyway).
        let r = _mm256_min_epi32(
            _mm256_max_epi32(r, _mm256_set1_epi32(-65536)),
            _mm256_set1_epi32(65536),
        );
        _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(r, zp), qmin), qmax)
    }
}

/// Quantize f32 → u8 (`inv = 1/f32(scale)`, `zp` in 0..=255).
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_u8(x: &[f32], inv: f32, zp: i32, out: &mut [u8]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n32 = n / 32 * 32;
    let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp));
    let (lo, hi) = (_mm256_set1_epi32(0), _mm256_set1_epi32(255));
    let mut i = 0;
    while i < n32 {
        // SAFETY: i + 32 ≤ n: 32 f32 readable from x, 32 bytes writable to out.
        unsafe {
            let p = x.as_ptr().add(i);
            let v0 = quantize8(p, vinv, vzp, lo, hi);
            let v1 = quantize8(p.add(8), vinv, vzp, lo, hi);
            let v2 = quantize8(p.add(16), vinv, vzp, lo, hi);
            let v3 = quantize8(p.add(24), vinv, vzp, lo, hi);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), pack_u8x32(v0, v1, v2, v3));
        }
        i += 32;
    }
    for j in n32..n {
        out[j] = quantize_elem(x[j], inv, zp, 0, 255) as u8;
    }
}

/// Quantize f32 → i8 (`inv = 1/f32(scale)`, `zp` in -128..=127).
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_i8(x: &[f32], inv: f32, zp: i32, out: &mut [i8]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n32 = n / 32 * 32;
    let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp));
    let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    let mut i = 0;
    while i < n32 {
        // SAFETY: i + 32 ≤ n: 32 f32 readable from x, 32 bytes writable to out.
        unsafe {
            let p = x.as_ptr().add(i);
            let v0 = quantize8(p, vinv, vzp, lo, hi);
            let v1 = quantize8(p.add(8), vinv, vzp, lo, hi);
            let v2 = quantize8(p.add(16), vinv, vzp, lo, hi);
            let v3 = quantize8(p.add(24), vinv, vzp, lo, hi);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), pack_i8x32(v0, v1, v2, v3));
        }
        i += 32;
    }
    for j in n32..n {
        out[j] = quantize_elem(x[j], inv, zp, -128, 127) as i8;
    }
}

/// Dequantize u8 → f32: `scale · f32(q − zp)`.
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dequantize_u8(x: &[u8], scale: f32, zp: i32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    let n8 = n / 8 * 8;
    let (vs, vzp) = (_mm256_set1_ps(scale), _mm256_set1_epi32(zp));
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 ≤ n: 8 bytes readable, 8 f32 writable.
        unsafe {
            let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(i).cast()));
            let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(q, vzp));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(vs, f));
        }
        i += 8;
    }
    for j in n8..n {
        out[j] = dequantize_elem(x[j], scale, zp);
    }
}

/// Vector formula of `quantized::add` on 8 lanes given as exact f32 values of the u8 inputs
/// (`fa = f32(qa)`, `fb = f32(qb)`); returns the results as i32 in 0..=255. The fused residual
/// epilogue (`requant`) feeds `fa` straight from its requantized registers.
///
/// # Safety
/// AVX2 and FMA are enabled in the caller.
#[inline(always)]
pub(crate) unsafe fn add_lanes(fa: __m256, fb: __m256, k: &AddConsts) -> __m256i {
    // SAFETY: AVX2 + FMA are enabled in every caller (contract).
    unsafe {
        let da = _mm256_fmadd_ps(k.sa, fa, k.pa);
        let db = _mm256_fmadd_ps(k.sb, fb, k.pb);
        let mut c = _mm256_add_ps(da, db);
        if k.relu {
            c = _mm256_max_ps(c, _mm256_setzero_ps());
        }
        let t = _mm256_mul_ps(c, k.inv);
        // Outside ±65536 the byte result is the clamp bound either way; keeps cvtps in range.
        let t = _mm256_max_ps(
            _mm256_min_ps(t, _mm256_set1_ps(65536.0)),
            _mm256_set1_ps(-65536.0),
        );
        let r = _mm256_add_epi32(_mm256_cvtps_epi32(t), k.zp);
        _mm256_min_epi32(
            _mm256_max_epi32(r, _mm256_setzero_si256()),
            _mm256_set1_epi32(255),
        )
    }
}

/// Vector-formula add of 8 lanes (i32 result clamped to 0..=255).
#[inline(always)]
unsafe fn add8(a: *const u8, b: *const u8, k: &AddConsts) -> __m256i {
    // SAFETY: AVX2 + FMA are enabled in every caller; `a`, `b` valid for 8 bytes.
    unsafe {
        let fa = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(a.cast())));
        let fb = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(b.cast())));
        add_lanes(fa, fb, k)
    }
}

/// Broadcast constants of the vector formula of `quantized::add` (see [`AddParams`]).
pub(crate) struct AddConsts {
    sa: __m256,
    sb: __m256,
    pa: __m256,
    pb: __m256,
    inv: __m256,
    zp: __m256i,
    relu: bool,
}

impl AddConsts {
    /// Broadcasts `p`.
    ///
    /// # Safety
    /// AVX is supported (the caller runs with AVX2 enabled).
    #[inline(always)]
    pub(crate) unsafe fn new(p: &AddParams) -> AddConsts {
        // SAFETY: AVX2 enabled in every caller (contract).
        unsafe {
            AddConsts {
                sa: _mm256_set1_ps(p.sa),
                sb: _mm256_set1_ps(p.sb),
                pa: _mm256_set1_ps(p.pa),
                pb: _mm256_set1_ps(p.pb),
                inv: _mm256_set1_ps(p.inv_out),
                zp: _mm256_set1_epi32(p.out_zp),
                relu: p.relu,
            }
        }
    }
}

/// Shared body of [`add_u8`] / [`add_u8_inplace`] on raw pointers (`out` may equal `a`).
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
    let v32 = v / 32 * 32;
    // SAFETY: AVX2 + FMA enabled in every caller; `a`, `b`, `out` valid for `n` elements, and
    // each element is read before it is written (in-place use reads a block, then stores it).
    unsafe {
        let k = AddConsts::new(p);
        let mut i = 0;
        while i < v32 {
            let r0 = add8(a.add(i), b.add(i), &k);
            let r1 = add8(a.add(i + 8), b.add(i + 8), &k);
            let r2 = add8(a.add(i + 16), b.add(i + 16), &k);
            let r3 = add8(a.add(i + 24), b.add(i + 24), &k);
            _mm256_storeu_si256(out.add(i).cast(), pack_u8x32(r0, r1, r2, r3));
            i += 32;
        }
        for j in v32..v {
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
/// The CPU supports AVX2 and FMA; `a`, `b`, `out` have equal lengths.
#[target_feature(enable = "avx2,fma")]
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
/// The CPU supports AVX2 and FMA; `a_out.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn add_u8_inplace(a_out: &mut [u8], b: &[u8], p: &AddParams, vec_len: usize) {
    debug_assert_eq!(a_out.len(), b.len());
    let n = b.len();
    let ptr = a_out.as_mut_ptr();
    // SAFETY: equal lengths (contract); `add_raw` reads each block before storing it.
    unsafe { add_raw(ptr, b.as_ptr(), ptr, n, p, vec_len) }
}

pub(crate) struct Avx2;

impl RowOps for Avx2 {
    #[inline(always)]
    unsafe fn max_taps(x: &[u8], offs: &[usize], dst: &mut [u8]) {
        let n = dst.len();
        let xp = x.as_ptr();
        let mut i = 0;
        // SAFETY: AVX2 enabled in the caller; `o + n <= x.len()` for every tap (contract) and
        // each access covers lanes i..i+32 (resp. 16) with that bound ≤ n.
        unsafe {
            while i + 32 <= n {
                let mut acc = _mm256_setzero_si256();
                for &o in offs {
                    acc = _mm256_max_epu8(acc, _mm256_loadu_si256(xp.add(o + i).cast()));
                }
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), acc);
                i += 32;
            }
            if i + 16 <= n {
                let mut acc = _mm_setzero_si128();
                for &o in offs {
                    acc = _mm_max_epu8(acc, _mm_loadu_si128(xp.add(o + i).cast()));
                }
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), acc);
                i += 16;
            }
        }
        for j in i..n {
            dst[j] = offs.iter().map(|&o| x[o + j]).max().unwrap_or(0);
        }
    }

    #[inline(always)]
    unsafe fn acc_into(acc: &mut [i32], src: &[u8]) {
        let n = acc.len().min(src.len());
        let mut i = 0;
        // SAFETY: AVX2 enabled in the caller; i + 16 ≤ n for every access.
        unsafe {
            while i + 16 <= n {
                let s = _mm_loadu_si128(src.as_ptr().add(i).cast());
                let lo = _mm256_cvtepu8_epi32(s);
                let hi = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(s));
                let a0 = acc.as_mut_ptr().add(i).cast::<__m256i>();
                let a1 = acc.as_mut_ptr().add(i + 8).cast::<__m256i>();
                _mm256_storeu_si256(a0, _mm256_add_epi32(_mm256_loadu_si256(a0), lo));
                _mm256_storeu_si256(a1, _mm256_add_epi32(_mm256_loadu_si256(a1), hi));
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
        // SAFETY: AVX2 enabled in the caller; i + 8 ≤ n for every access.
        unsafe {
            let off = _mm256_set1_epi32(zp.wrapping_mul(size));
            let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp));
            while i + 8 <= n {
                let s = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
                let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(s, off));
                // |f·inv| ≤ 255·(1 + ε): always in cvtps range.
                let r = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(f, vinv)), vzp);
                let r = _mm256_min_epi32(
                    _mm256_max_epi32(r, _mm256_setzero_si256()),
                    _mm256_set1_epi32(255),
                );
                _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), pack_u8x8(r));
                i += 8;
            }
        }
        for j in i..n {
            out[j] = avg_finish_elem(acc[j], size, inv, zp);
        }
    }
}

impl MaxVec for Avx2 {
    type V = __m256i;
    const LANES: usize = 32;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        // SAFETY: AVX enabled in the caller; `p` readable for 32 bytes (contract).
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const u8, n: usize) -> __m256i {
        // No byte-masked loads in AVX2: copy the `n < 32` bytes into a zeroed buffer.
        let mut buf = [0u8; 32];
        // SAFETY: `p` readable for `n ≤ 32` bytes (contract); AVX enabled in the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            _mm256_loadu_si256(buf.as_ptr().cast())
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256i) {
        // SAFETY: AVX enabled in the caller; `p` writable for 32 bytes (contract).
        unsafe { _mm256_storeu_si256(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut u8, v: __m256i, n: usize) {
        let mut buf = [0u8; 32];
        // SAFETY: AVX enabled in the caller; `p` writable for `n ≤ 32` bytes (contract).
        unsafe {
            _mm256_storeu_si256(buf.as_mut_ptr().cast(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
        }
    }
    #[inline(always)]
    unsafe fn max(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 enabled in the caller.
        unsafe { _mm256_max_epu8(a, b) }
    }
}

/// max_pool2d over NHWC, 32 channels per `vpmaxub`; 3×3 stride-2 windows take the separable
/// path of [`body::max_pool`].
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `oh`/`ow` the floor-mode output sizes.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn max_pool2d_u8(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    // SAFETY: features enabled here; geometry per the contract.
    unsafe { body::max_pool::<Avx2>(x, g, out) }
}

/// adaptive_avg_pool2d over NHWC, 16 channels per widening add.
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `1 ≤ oh ≤ h`, `1 ≤ ow ≤ w`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn adaptive_avg_pool2d_u8(x: &[u8], g: &PoolGeometry, zp: i32, out: &mut [u8]) {
    // SAFETY: features enabled here; geometry per the contract.
    unsafe { body::adaptive_avg_pool::<Avx2>(x, g, zp, out) }
}

/// Quantize a planar `[c, hw]` f32 image to interleaved `[hw, cs]` u8, channels `c..cs` set to
/// `fill` (see [`super::scalar::quantize_u8_to_nhwc`]); `c = 3`, `cs` 3 or 4 runs 8 pixels per
/// iteration (planes merged into one i32 per pixel, compacted to 3 bytes for `cs = 3`), other
/// channel counts the portable loop (`c = cs = 1` the plain quantize).
///
/// # Safety
///
/// The CPU supports AVX2 and FMA; `x.len() = c·hw`, `out.len() = cs·hw`, `1 ≤ c ≤ cs`.
#[target_feature(enable = "avx2,fma")]
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
    let n8 = hw / 8 * 8;
    let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp));
    let (lo, hi) = (_mm256_set1_epi32(0), _mm256_set1_epi32(255));
    let vfill = _mm256_set1_epi32(i32::from(fill) << 24);
    let shuf = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, //
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
    );
    let perm = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 0, 0);
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let mut p = 0;
    while p < n8 {
        // SAFETY: p + 8 ≤ hw: 8 f32 readable from each of the 3 planes; 8·cs bytes writable at
        // `op + cs·p` (24 = 16 + 8 bytes for `cs = 3`).
        unsafe {
            let r0 = quantize8(xp.add(p), vinv, vzp, lo, hi);
            let r1 = quantize8(xp.add(hw + p), vinv, vzp, lo, hi);
            let r2 = quantize8(xp.add(2 * hw + p), vinv, vzp, lo, hi);
            let v = _mm256_or_si256(
                _mm256_or_si256(r0, _mm256_slli_epi32::<8>(r1)),
                _mm256_slli_epi32::<16>(r2),
            );
            if cs == 4 {
                _mm256_storeu_si256(op.add(4 * p).cast(), _mm256_or_si256(v, vfill));
            } else {
                let v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, shuf), perm);
                let d = op.add(3 * p);
                _mm_storeu_si128(d.cast(), _mm256_castsi256_si128(v));
                _mm_storel_epi64(d.add(16).cast(), _mm256_extracti128_si256::<1>(v));
            }
        }
        p += 8;
    }
    super::scalar::quantize_u8_to_nhwc_from(x, c, cs, inv, zp, fill, out, n8);
}
