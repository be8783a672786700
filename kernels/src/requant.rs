//! GEMM epilogue: zero-point correction and requantization of one i32 tile, vectorised per ISA.
//!
//! The arithmetic is exactly `qkernels_ref::RequantParams::apply` after
//! `qkernels_ref::gemm::zero_point_correction` (fbgemm's float path):
//!
//! ```text
//! raw = acc − col_term[j] − row_sum[i]·w_zp[j]          (wrapping i32; col_term = a_zp·col_off)
//! x   = f32(raw);  x = x + bias_acc[j]  (if any)         (separately rounded: no FMA)
//! q   = clamp(rne(x · mult[j]) + out_zp, qmin, qmax)      (rne saturates; NaN → 0)
//! ```
//!
//! **Why the SIMD form is exact.** With `lo = qmin − out_zp` and `hi = qmax − out_zp` (small
//! integers, exact in f32, `lo ≤ hi`), rounding is monotone and fixes integers, so
//! `clamp(sat(rne(y)) + zp, qmin, qmax) = rne(clamp(y, lo, hi)) + zp` for every non-NaN `y`;
//! NaN is first replaced by 0.0, which is what `rne` (saturating `as i32`) gives it. So the
//! vector code clamps in f32 (no i32 overflow can follow), converts with round-to-nearest-even,
//! adds the zero point and narrows to u8. Parameters outside the u8 range (never produced by the
//! validated API) take the scalar path, which is the reference formula itself.
//!
//! Every function here is safe: the ISA is checked per tile (a cached feature test), and
//! unsupported ISAs run the scalar code, which computes the same bytes.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::isa::Isa;

/// Per-column constants of one requantization, sliced to the columns of the tile.
#[derive(Clone, Copy, Debug)]
pub struct RequantCols<'a> {
    /// `a_zp · col_off[j]` (wrapping).
    pub col_term: &'a [i32],
    /// Weight zero points, `None` when every one is 0 (row sums are then not needed).
    pub w_zp: Option<&'a [i32]>,
    /// Bias in accumulator units (`RequantParams::bias_acc`), if the layer has one.
    pub bias: Option<&'a [f32]>,
    /// `RequantParams::mult`.
    pub mult: &'a [f32],
    pub out_zp: i32,
    pub qmin: i32,
    pub qmax: i32,
}

/// Corrected accumulator of one element (reference formula).
#[inline(always)]
fn correct(acc: i32, col_term: i32, row_sum: i32, w_zp: i32) -> i32 {
    acc.wrapping_sub(col_term)
        .wrapping_sub(row_sum.wrapping_mul(w_zp))
}

/// Requantization of one element: `qkernels_ref::RequantParams::apply`, verbatim.
#[inline(always)]
fn requant_one(raw: i32, j: usize, p: &RequantCols<'_>) -> u8 {
    let mut x = raw as f32;
    if let Some(b) = p.bias {
        x += b[j];
    }
    let r = (x * p.mult[j]).round_ties_even() as i32;
    r.saturating_add(p.out_zp).clamp(p.qmin, p.qmax) as u8
}

fn check_shapes<T>(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    out: &[T],
    ldc: usize,
) {
    assert!(cols <= ld_tile && cols <= ldc);
    assert!(rows == 0 || tile.len() >= (rows - 1) * ld_tile + cols);
    assert!(rows == 0 || out.len() >= (rows - 1) * ldc + cols);
    assert!(row_sums.len() >= rows);
}

#[cfg(target_arch = "x86_64")]
/// Whether the vector paths' f32 clamp bounds are exact (always true for validated u8 params).
fn params_in_u8_range(p: &RequantCols<'_>) -> bool {
    (0..=255).contains(&p.out_zp)
        && (0..=255).contains(&p.qmin)
        && (0..=255).contains(&p.qmax)
        && p.qmin <= p.qmax
}

/// The epilogue implementation chosen once for an ISA (the feature test is done here, not per
/// row): AVX-512, AVX2 or scalar, all computing the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epilogue {
    level: Level,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Epilogue {
    /// The fastest implementation usable for kernels of `isa` on this CPU.
    pub fn new(isa: Isa) -> Epilogue {
        #[cfg(target_arch = "x86_64")]
        {
            if isa == Isa::Avx512Vnni && isa.is_supported() {
                return Epilogue {
                    level: Level::Avx512,
                };
            }
            if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && Isa::Avx2.is_supported() {
                return Epilogue { level: Level::Avx2 };
            }
        }
        let _ = isa;
        Epilogue {
            level: Level::Scalar,
        }
    }

    /// Requantizes one row: `out[j] = requant(acc[j] − col_term[j] − row_sum·w_zp[j])` for
    /// `j < out.len()`.
    #[inline]
    pub fn requant_row(&self, acc: &[i32], row_sum: i32, p: &RequantCols<'_>, out: &mut [u8]) {
        let cols = out.len();
        // SAFETY: `out` is an exclusive slice of `cols` bytes: one row.
        unsafe { self.requant_tile_raw(acc, cols, 1, cols, &[row_sum], p, out.as_mut_ptr(), cols) }
    }

    /// Requantizes a `rows × cols` tile (`tile[i·ld_tile + j]`) into `out[i·ldc + j]` (one call
    /// per microkernel tile: the checks and the dispatch are paid once per tile).
    ///
    /// # Safety
    /// `out` is valid for writes of `out[i·ldc + j]` for `i < rows`, `j < cols`, and no live
    /// reference covers those bytes during the call. (All other inputs are checked.)
    #[inline]
    pub unsafe fn requant_tile_raw(
        &self,
        tile: &[i32],
        ld_tile: usize,
        rows: usize,
        cols: usize,
        row_sums: &[i32],
        p: &RequantCols<'_>,
        out: *mut u8,
        ldc: usize,
    ) {
        assert!(cols <= ld_tile && row_sums.len() >= rows);
        assert!(rows == 0 || tile.len() >= (rows - 1) * ld_tile + cols);
        assert!(p.col_term.len() >= cols && p.mult.len() >= cols);
        assert!(p.w_zp.is_none_or(|z| z.len() >= cols));
        assert!(p.bias.is_none_or(|b| b.len() >= cols));
        match self.level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if params_in_u8_range(p) => {
                // SAFETY: `Level::Avx512` is only constructed when AVX-512 is supported; input
                // lengths asserted above; `out` per this fn's contract.
                unsafe { requant_tile_avx512(tile, ld_tile, rows, cols, row_sums, p, out, ldc) }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 | Level::Avx512 if params_in_u8_range(p) => {
                // SAFETY: both levels imply AVX2 support; as above.
                unsafe { requant_tile_avx2(tile, ld_tile, rows, cols, row_sums, p, out, ldc) }
            }
            _ => {
                for i in 0..rows {
                    for j in 0..cols {
                        let wz = p.w_zp.map_or(0, |z| z[j]);
                        let raw = correct(tile[i * ld_tile + j], p.col_term[j], row_sums[i], wz);
                        // SAFETY: `i < rows`, `j < cols`: inside the caller's output.
                        unsafe { *out.add(i * ldc + j) = requant_one(raw, j, p) };
                    }
                }
            }
        }
    }
}

/// Requantizes a `rows × cols` i32 tile (`tile[i·ld_tile + j]`) into `out[i·ldc + j]`.
/// `row_sums[i]` is used only when `p.w_zp` is `Some`. Same bytes on every ISA.
pub fn requant_tile(
    isa: Isa,
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: &mut [u8],
    ldc: usize,
) {
    check_shapes(tile, ld_tile, rows, cols, row_sums, out, ldc);
    // SAFETY: `out` is an exclusive slice holding `(rows−1)·ldc + cols` bytes (checked).
    unsafe {
        Epilogue::new(isa).requant_tile_raw(
            tile,
            ld_tile,
            rows,
            cols,
            row_sums,
            p,
            out.as_mut_ptr(),
            ldc,
        )
    }
}

/// Scalar epilogue (the reference formula).
pub fn requant_tile_scalar(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: &mut [u8],
    ldc: usize,
) {
    for i in 0..rows {
        for j in 0..cols {
            let wz = p.w_zp.map_or(0, |z| z[j]);
            let raw = correct(tile[i * ld_tile + j], p.col_term[j], row_sums[i], wz);
            out[i * ldc + j] = requant_one(raw, j, p);
        }
    }
}

/// Applies only the zero-point correction: `out[i·ldc + j] = tile − col_term − row_sum·w_zp`.
pub fn correct_tile(
    isa: Isa,
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    col_term: &[i32],
    w_zp: Option<&[i32]>,
    out: &mut [i32],
    ldc: usize,
) {
    check_shapes(tile, ld_tile, rows, cols, row_sums, out, ldc);
    assert!(col_term.len() >= cols && w_zp.is_none_or(|z| z.len() >= cols));
    // Plain integer loops: LLVM vectorises them with the baseline ISA; the i32 output mode is
    // bandwidth-bound, so no per-ISA code is needed.
    let _ = isa;
    for i in 0..rows {
        let src = &tile[i * ld_tile..][..cols];
        let dst = &mut out[i * ldc..][..cols];
        match w_zp {
            Some(z) => {
                let rs = row_sums[i];
                for j in 0..cols {
                    dst[j] = correct(src[j], col_term[j], rs, z[j]);
                }
            }
            None => {
                for j in 0..cols {
                    dst[j] = src[j].wrapping_sub(col_term[j]);
                }
            }
        }
    }
}

/// AVX-512 epilogue, 16 columns per vector, masked tails.
///
/// # Safety
/// AVX-512 F/BW/VL supported; `tile`, `row_sums` and the column slices hold `rows × cols`
/// (checked by the callers); `out` is valid for writes of `out[i·ldc + j]`, `i < rows`,
/// `j < cols`, and nothing else references those bytes; params in u8 range.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn requant_tile_avx512(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: *mut u8,
    ldc: usize,
) {
    let lo = _mm512_set1_ps((p.qmin - p.out_zp) as f32);
    let hi = _mm512_set1_ps((p.qmax - p.out_zp) as f32);
    let zp = _mm512_set1_epi32(p.out_zp);
    for i in 0..rows {
        let rs = _mm512_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..cols].as_ptr();
        // SAFETY: row `i < rows` of the caller's output (contract of this fn).
        let dst = unsafe { out.add(i * ldc) };
        let mut j = 0;
        while j < cols {
            let n = (cols - j).min(16);
            let m: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
            // SAFETY: lanes `j..j+n` are inside the row of `tile`, `out` and every column slice
            // (lengths ≥ cols); masked lanes are not accessed. Full vectors use plain loads (a
            // masked load cannot take its data from the microkernel's just-issued stores).
            unsafe {
                let ld = |ptr: *const i32| {
                    if n == 16 {
                        _mm512_loadu_si512(ptr.add(j) as *const __m512i)
                    } else {
                        _mm512_maskz_loadu_epi32(m, ptr.add(j))
                    }
                };
                let ldf = |ptr: *const f32| {
                    if n == 16 {
                        _mm512_loadu_ps(ptr.add(j))
                    } else {
                        _mm512_maskz_loadu_ps(m, ptr.add(j))
                    }
                };
                let mut raw = _mm512_sub_epi32(ld(src), ld(p.col_term.as_ptr()));
                if let Some(z) = p.w_zp {
                    raw = _mm512_sub_epi32(raw, _mm512_mullo_epi32(rs, ld(z.as_ptr())));
                }
                let mut x = _mm512_cvtepi32_ps(raw);
                if let Some(b) = p.bias {
                    x = _mm512_add_ps(x, ldf(b.as_ptr()));
                }
                let y = _mm512_mul_ps(x, ldf(p.mult.as_ptr()));
                let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y);
                let y = _mm512_maskz_mov_ps(ordered, y);
                let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                let r = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    y,
                );
                let q = _mm512_cvtepi32_epi8(_mm512_add_epi32(r, zp));
                if n == 16 {
                    _mm_storeu_si128(dst.add(j) as *mut __m128i, q);
                } else {
                    _mm_mask_storeu_epi8(dst.add(j) as *mut i8, m, q);
                }
            }
            j += 16;
        }
    }
}

/// AVX2 epilogue, 8 columns per vector, scalar (reference-formula) tail.
///
/// # Safety
/// AVX2 supported; otherwise as [`requant_tile_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_tile_avx2(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: *mut u8,
    ldc: usize,
) {
    let lo = _mm256_set1_ps((p.qmin - p.out_zp) as f32);
    let hi = _mm256_set1_ps((p.qmax - p.out_zp) as f32);
    let zp = _mm256_set1_epi32(p.out_zp);
    let full = cols / 8 * 8;
    for i in 0..rows {
        let rs = _mm256_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..cols].as_ptr();
        // SAFETY: row `i < rows` of the caller's output (contract of this fn).
        let dst = unsafe { out.add(i * ldc) };
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ cols`: every 8-lane load/store is inside its row or column slice.
            unsafe {
                let ld = |s: *const i32| _mm256_loadu_si256(s.add(j) as *const __m256i);
                let mut raw = _mm256_sub_epi32(ld(src), ld(p.col_term.as_ptr()));
                if let Some(z) = p.w_zp {
                    raw = _mm256_sub_epi32(raw, _mm256_mullo_epi32(rs, ld(z.as_ptr())));
                }
                let mut x = _mm256_cvtepi32_ps(raw);
                if let Some(b) = p.bias {
                    x = _mm256_add_ps(x, _mm256_loadu_ps(b.as_ptr().add(j)));
                }
                let y = _mm256_mul_ps(x, _mm256_loadu_ps(p.mult.as_ptr().add(j)));
                let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(y, y);
                let y = _mm256_andnot_ps(nan, y);
                let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
                let r = _mm256_add_epi32(_mm256_cvtps_epi32(y), zp);
                let w = _mm256_packs_epi32(r, r);
                let b8 = _mm256_packus_epi16(w, w);
                let q = _mm_unpacklo_epi32(
                    _mm256_castsi256_si128(b8),
                    _mm256_extracti128_si256::<1>(b8),
                );
                _mm_storel_epi64(dst.add(j) as *mut __m128i, q);
            }
        }
        for j in full..cols {
            let wz = p.w_zp.map_or(0, |z| z[j]);
            let raw = correct(tile[i * ld_tile + j], p.col_term[j], row_sums[i], wz);
            // SAFETY: `j < cols` in row `i < rows` of the caller's output.
            unsafe { *dst.add(j) = requant_one(raw, j, p) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ISA's epilogue against the reference formula, including NaN/inf multipliers,
    /// huge biases, ties, ReLU and tails.
    #[test]
    fn epilogue_matches_reference_formula() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for cols in [1usize, 7, 8, 9, 15, 16, 17, 33] {
            for case in 0..12 {
                let rows = 3;
                let tile: Vec<i32> = (0..rows * cols)
                    .map(|t| match (case + t) % 5 {
                        0 => i32::MAX - (next() % 3) as i32,
                        1 => i32::MIN + (next() % 3) as i32,
                        _ => (next() % 200_001) as i32 - 100_000,
                    })
                    .collect();
                let col_term: Vec<i32> = (0..cols).map(|_| (next() % 5001) as i32 - 2500).collect();
                let w_zp: Vec<i32> = (0..cols).map(|_| (next() % 7) as i32 - 3).collect();
                let bias: Vec<f32> = (0..cols)
                    .map(|j| match (case + j) % 6 {
                        0 => 1.0e12,
                        1 => -1.0e12,
                        2 => 0.5,
                        _ => (next() % 10_000) as f32 - 5000.5,
                    })
                    .collect();
                let mult: Vec<f32> = (0..cols)
                    .map(|j| match (case * 7 + j) % 13 {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => 0.5,
                        3 => 1.0,
                        _ => (next() % 1000) as f32 * 1.0e-4,
                    })
                    .collect();
                let row_sums: Vec<i32> = (0..rows).map(|_| (next() % 40_000) as i32).collect();
                let out_zp = (next() % 256) as i32;
                let relu = case % 2 == 0;
                let p = RequantCols {
                    col_term: &col_term,
                    w_zp: (case % 3 != 0).then_some(&w_zp[..]),
                    bias: (case % 4 != 1).then_some(&bias[..]),
                    mult: &mult,
                    out_zp,
                    qmin: if relu { out_zp } else { 0 },
                    qmax: 255,
                };
                let rq = qkernels_ref::RequantParams {
                    mult: mult.clone(),
                    bias_acc: p.bias.map(<[f32]>::to_vec),
                    out_zp,
                    qmin: p.qmin,
                    qmax: 255,
                };
                let want: Vec<u8> = (0..rows * cols)
                    .map(|t| {
                        let (i, j) = (t / cols, t % cols);
                        let raw = qkernels_ref::gemm::zero_point_correction(
                            tile[t],
                            1,
                            col_term[j],
                            row_sums[i],
                            p.w_zp.map_or(0, |z| z[j]),
                        );
                        rq.apply(raw, j)
                    })
                    .collect();
                for isa in Isa::supported() {
                    let mut got = vec![0u8; rows * cols];
                    requant_tile(isa, &tile, cols, rows, cols, &row_sums, &p, &mut got, cols);
                    assert_eq!(got, want, "{isa} cols={cols} case={case}");
                }
            }
        }
    }
}
