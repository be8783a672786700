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
//! validated API) take the scalar path, which is the reference formula itself. Full-width blocks
//! (64 columns on AVX-512, 16 on AVX2) go further: only `min(hi, y)` stays in float, and the
//! saturating packs `i32 → i16 → u8` (zero point added in i16) do the rest of the clamp; the NaN
//! guard is dropped when it provably cannot change a byte (see `requant_tile64_avx512`).
//!
//! **Fused residual add.** [`Epilogue::requant_add_tile_raw`] also applies a ResNet residual
//! join, `quantized::add(conv_out, skip)` (+ ReLU), to the tile while it is L1-hot: the conv's
//! u8 value `q` of an element is formed exactly as above and then fed to the add as `f32(q)`
//! (exact, `q` ∈ 0..=255), so the bytes equal conv-then-add. The add's two formulas are chosen by
//! the element's *flat* index in the output tensor ([`TileAdd::vec_len`]), as PyTorch's
//! one-thread `qadd_kernel` does; a separate pass over the whole output (re-read from L2/L3, on
//! one thread) is no longer needed, and the add runs in parallel with the GEMM.
//!
//! **Fused into the microkernel.** The 64-column AVX-512 path is written on `__m512i`
//! accumulators (`requant64`, `requant_add64`): the tile epilogue loads a stored row into
//! them, and the VNNI `6x64c4` kernels' fused entries ([`Tile64`], `requant_acc64`) pass their
//! accumulator registers, so both paths run one implementation and give the same bytes.
//!
//! Every function here is safe: the ISA is checked per tile (a cached feature test), and
//! unsupported ISAs run the scalar code, which computes the same bytes.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::isa::Isa;
use crate::ops::AddParams;

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

impl<'a> RequantCols<'a> {
    /// The constants of columns `j0 .. j0 + n` (every per-column slice cut to them).
    #[inline]
    pub fn range(&self, j0: usize, n: usize) -> RequantCols<'a> {
        let cut = |s: &'a [i32]| &s[j0..j0 + n];
        RequantCols {
            col_term: cut(self.col_term),
            w_zp: self.w_zp.map(cut),
            bias: self.bias.map(|b| &b[j0..j0 + n]),
            mult: &self.mult[j0..j0 + n],
            ..*self
        }
    }
}

/// The residual add fused into one tile's epilogue: `out[i·ldc + j] = add(q[i][j],
/// skip[i·ldskip + j])`, where `q` is the tile's requantized u8 value.
#[derive(Clone, Copy, Debug)]
pub struct TileAdd<'a> {
    /// The skip operand from the tile's element (0, 0); row `i` starts at `i·ldskip`.
    pub skip: &'a [u8],
    /// Row stride of `skip`.
    pub ldskip: usize,
    /// The add's constants (qparams of the conv output, the skip and the add's output).
    pub params: &'a AddParams,
    /// Formula rule: tile element `(i, j)` takes the vector (FMA) formula iff
    /// `i·ldc + j < vec_len` (`ldc` is the output row stride, so `i·ldc + j` is the element's
    /// flat index relative to the tile's first element), else the scalar one.
    pub vec_len: usize,
}

/// The epilogue of one full 64-column u8 tile requantized straight from a microkernel's
/// accumulator registers (`IgemmKernel::ukernel_requant`): the same bytes as
/// [`Epilogue::requant_tile_raw`] / [`Epilogue::requant_add_tile_raw`] on the stored tile, by
/// the same code ([`Tile64::supports`] says when it applies).
#[derive(Clone, Copy, Debug)]
pub struct Tile64<'a> {
    /// The tile's 64 columns: every slice holds ≥ 64 elements, `w_zp` is `None`, params in u8
    /// range.
    pub cols: RequantCols<'a>,
    /// Whether the NaN guard runs: must be `true` when [`nan_guard_needed`] is for these columns
    /// (the driver decides once per call over all its columns, a superset).
    pub guard: bool,
    /// The fused residual add (params with [`AddParams::conversion_in_range`] and `out_zp` in
    /// 0..=255; `skip` holds the tile's `mr` rows of 64 bytes), if any.
    pub add: Option<TileAdd<'a>>,
}

impl Tile64<'_> {
    /// Whether a call with these requant params and this fused add (if any) can use the fused
    /// 64-column epilogue: no weight zero point, requant params in u8 range, and for the add the
    /// guard-free in-range parameters of its 64-column narrowing. Everything else keeps the
    /// tile path.
    pub fn supports(p: &RequantCols<'_>, add: Option<&AddParams>) -> bool {
        p.w_zp.is_none()
            && (0..=255).contains(&p.out_zp)
            && (0..=255).contains(&p.qmin)
            && (0..=255).contains(&p.qmax)
            && p.qmin <= p.qmax
            && add.is_none_or(|a| a.conversion_in_range() && (0..=255).contains(&a.out_zp))
    }
}

/// Whether the 64-column requantization needs its NaN guard for these columns: a product
/// `(f32(raw) + bias) · mult` can be NaN only for a non-finite `mult` or a `bias` that is NaN or
/// larger than `2^126` in magnitude, and even then the guard changes no byte when `qmin ==
/// out_zp` (see `requant_tile64_avx512`). Scalar; called once per GEMM call, not per tile.
pub fn nan_guard_needed(p: &RequantCols<'_>) -> bool {
    let big = f32::from_bits(0x7E80_0000); // 2^126
    p.qmin != p.out_zp
        && (p.mult.iter().any(|m| !m.is_finite())
            || p.bias
                .is_some_and(|b| b.iter().any(|&b| b.is_nan() || b.abs() > big)))
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
    /// Scalar requantization, NEON residual add.
    #[cfg(target_arch = "aarch64")]
    Neon,
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
        #[cfg(target_arch = "aarch64")]
        {
            if matches!(isa, Isa::Neon | Isa::NeonDot | Isa::NeonI8mm) && Isa::Neon.is_supported() {
                return Epilogue { level: Level::Neon };
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

    /// [`Epilogue::requant_tile_raw`] followed by the residual add `add` on the same elements:
    /// `out[i·ldc + j] = add(requant(tile[i][j]), skip[i·ldskip + j])`, one pass over the tile.
    ///
    /// # Safety
    /// As [`Epilogue::requant_tile_raw`]; `add.skip` does not overlap the output bytes.
    #[inline]
    pub unsafe fn requant_add_tile_raw(
        &self,
        tile: &[i32],
        ld_tile: usize,
        rows: usize,
        cols: usize,
        row_sums: &[i32],
        p: &RequantCols<'_>,
        add: &TileAdd<'_>,
        out: *mut u8,
        ldc: usize,
    ) {
        assert!(cols <= ld_tile && row_sums.len() >= rows);
        assert!(rows == 0 || tile.len() >= (rows - 1) * ld_tile + cols);
        assert!(rows == 0 || add.skip.len() >= (rows - 1) * add.ldskip + cols);
        assert!(p.col_term.len() >= cols && p.mult.len() >= cols);
        assert!(p.w_zp.is_none_or(|z| z.len() >= cols));
        assert!(p.bias.is_none_or(|b| b.len() >= cols));
        match self.level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if params_in_u8_range(p) => {
                // SAFETY: `Level::Avx512` implies AVX-512 F/BW/VL + FMA (`Isa::Avx512Vnni`
                // includes AVX2 + FMA); lengths asserted above; `out` per this fn's contract.
                unsafe {
                    requant_add_tile_avx512(tile, ld_tile, rows, cols, row_sums, p, add, out, ldc)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 | Level::Avx512 if params_in_u8_range(p) => {
                // SAFETY: both levels imply AVX2 + FMA support; as above.
                unsafe {
                    requant_add_tile_avx2(tile, ld_tile, rows, cols, row_sums, p, add, out, ldc)
                }
            }
            _ => {
                // SAFETY: per this fn's contract.
                unsafe { self.requant_tile_raw(tile, ld_tile, rows, cols, row_sums, p, out, ldc) };
                for i in 0..rows {
                    // SAFETY: row `i < rows` of the caller's output (`cols` bytes), written just
                    // above and referenced by nothing else; `skip` does not overlap it.
                    let row = unsafe { std::slice::from_raw_parts_mut(out.add(i * ldc), cols) };
                    let skip = &add.skip[i * add.ldskip..][..cols];
                    let vec_len = add.vec_len.saturating_sub(i * ldc);
                    self.add_row(row, skip, add.params, vec_len);
                }
            }
        }
    }

    /// In-place residual add of one output row (the generic half of
    /// [`Epilogue::requant_add_tile_raw`]): elements below `vec_len` take the vector formula.
    #[inline]
    fn add_row(&self, row: &mut [u8], skip: &[u8], p: &AddParams, vec_len: usize) {
        match self.level {
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `Level::Neon` is only constructed when NEON is supported; equal lengths.
            Level::Neon => unsafe { crate::ops::arm_neon::add_u8_inplace(row, skip, p, vec_len) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: both levels imply AVX2 + FMA support; equal lengths.
            Level::Avx2 | Level::Avx512 => unsafe {
                crate::ops::x86_avx2::add_u8_inplace(row, skip, p, vec_len)
            },
            _ => crate::ops::scalar::add_u8_inplace(row, skip, p, vec_len),
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

/// Requantizes lanes `j .. j + n` (`n ≤ 16`, mask `m` of the low `n` lanes) of one tile row
/// `src` up to the clamped product `clamp(y, lo, hi)` (f32; NaN → 0), before rounding and the
/// output zero point.
///
/// # Safety
/// AVX-512 F/BW/VL enabled in the caller; lanes `j .. j + n` are inside `src` and every column
/// slice of `p`; masked lanes are not accessed.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant16_clamped(
    src: *const i32,
    j: usize,
    n: usize,
    m: __mmask16,
    rs: __m512i,
    p: &RequantCols<'_>,
    lo: __m512,
    hi: __m512,
) -> __m512 {
    // SAFETY: per this fn's contract. Full vectors use plain loads (a masked load cannot take its
    // data from the microkernel's just-issued stores).
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
        _mm512_min_ps(_mm512_max_ps(y, lo), hi)
    }
}

/// [`requant16_clamped`] rounded half to even to i32 (zero point not yet added).
///
/// # Safety
/// As [`requant16_clamped`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant16(
    src: *const i32,
    j: usize,
    n: usize,
    m: __mmask16,
    rs: __m512i,
    p: &RequantCols<'_>,
    lo: __m512,
    hi: __m512,
) -> __m512i {
    // SAFETY: per this fn's contract.
    unsafe {
        let y = requant16_clamped(src, j, n, m, rs, p, lo, hi);
        _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y)
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
    if cols == 64 {
        // SAFETY: this fn's contract with `cols == 64`; features enabled here.
        unsafe { requant_tile64_avx512(tile, ld_tile, rows, row_sums, p, out, ldc) };
        return;
    }
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
            // (lengths ≥ cols); masked lanes are not accessed.
            unsafe {
                let r = requant16(src, j, n, m, rs, p, lo, hi);
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

/// Per-column constants of a full 64-column tile, held in registers across its rows.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Cols64 {
    col_term: [__m512i; 4],
    w_zp: Option<[__m512i; 4]>,
    bias: Option<[__m512; 4]>,
    mult: [__m512; 4],
}

/// Loads the constants of columns `0..64` of `p` and, if `check`, tells whether
/// `y = (f32(raw) + bias) · mult` is NaN-free for every `raw: i32` (see
/// [`requant_tile64_avx512`]; `false` when not checked).
///
/// # Safety
/// AVX-512F enabled in the caller; every column slice of `p` holds ≥ 64 elements.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_cols64(p: &RequantCols<'_>, check: bool) -> (Cols64, bool) {
    // SAFETY: per this fn's contract: lanes `0..64` are inside every column slice.
    unsafe {
        // Plain loops, no closures (see `requant64_vec`).
        let zero_i = _mm512_setzero_si512();
        let zero_f = _mm512_setzero_ps();
        let mut k = Cols64 {
            col_term: [zero_i; 4],
            w_zp: p.w_zp.map(|_| [zero_i; 4]),
            bias: p.bias.map(|_| [zero_f; 4]),
            mult: [zero_f; 4],
        };
        for c in 0..4 {
            k.col_term[c] = _mm512_loadu_si512(p.col_term.as_ptr().add(16 * c) as *const __m512i);
            k.mult[c] = _mm512_loadu_ps(p.mult.as_ptr().add(16 * c));
            if let (Some(d), Some(z)) = (k.w_zp.as_mut(), p.w_zp) {
                d[c] = _mm512_loadu_si512(z.as_ptr().add(16 * c) as *const __m512i);
            }
            if let (Some(d), Some(b)) = (k.bias.as_mut(), p.bias) {
                d[c] = _mm512_loadu_ps(b.as_ptr().add(16 * c));
            }
        }
        // Lanes that may produce NaN: `mult` not finite (NaN or ±inf: `|mult| ≥ inf` or
        // unordered), or `bias` NaN or `|bias| > 2^126`.
        if !check {
            return (k, false);
        }
        let inf = _mm512_set1_ps(f32::INFINITY);
        let big = _mm512_set1_ps(f32::from_bits(0x7E80_0000)); // 2^126
        let mut bad: __mmask16 = 0;
        for c in 0..4 {
            bad |= _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(_mm512_abs_ps(k.mult[c]), inf);
            if let Some(b) = k.bias {
                bad |= _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(_mm512_abs_ps(b[c]), big);
            }
        }
        (k, bad == 0)
    }
}

/// `y = (f32(acc − col_term − rs·w_zp) + bias) · mult` for the 16 columns of vector `c` of a
/// 64-column tile (`acc` holds that vector's accumulators), NaN lanes zeroed when `GUARD` (see
/// [`requant_tile64_avx512`]).
///
/// # Safety
/// AVX-512F enabled in the caller; `c < 4`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn product64<const GUARD: bool>(k: &Cols64, acc: __m512i, c: usize, rs: __m512i) -> __m512 {
    // SAFETY: value-only intrinsics; AVX-512F is the caller's contract.
    unsafe {
        let mut raw = _mm512_sub_epi32(acc, k.col_term[c]);
        if let Some(z) = k.w_zp {
            raw = _mm512_sub_epi32(raw, _mm512_mullo_epi32(rs, z[c]));
        }
        let mut x = _mm512_cvtepi32_ps(raw);
        if let Some(b) = k.bias {
            x = _mm512_add_ps(x, b[c]);
        }
        let y = _mm512_mul_ps(x, k.mult[c]);
        if GUARD {
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y), y)
        } else {
            y
        }
    }
}

/// The 64 i32 of one stored tile row as the four accumulator vectors [`requant64`] takes.
///
/// # Safety
/// AVX-512F enabled in the caller; `src` readable for 64 i32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_row64(src: *const i32) -> [__m512i; 4] {
    // SAFETY: per this fn's contract.
    unsafe {
        [
            _mm512_loadu_si512(src as *const __m512i),
            _mm512_loadu_si512(src.add(16) as *const __m512i),
            _mm512_loadu_si512(src.add(32) as *const __m512i),
            _mm512_loadu_si512(src.add(48) as *const __m512i),
        ]
    }
}

/// Broadcast output constants of the 64-column requantization ([`requant64`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Out64 {
    /// `qmax − out_zp` (f32).
    hi: __m512,
    /// `out_zp` in every i16 lane.
    zp16: __m512i,
    /// `qmin` in every byte.
    qmin8: __m512i,
    /// The 4×4 dword transpose undoing the packs' 128-bit lane interleave.
    perm: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl Out64 {
    /// # Safety
    /// AVX-512F enabled in the caller.
    #[inline(always)]
    unsafe fn new(out_zp: i32, qmin: i32, qmax: i32) -> Out64 {
        // SAFETY: value-only intrinsics; AVX-512F is the caller's contract.
        unsafe {
            Out64 {
                hi: _mm512_set1_ps((qmax - out_zp) as f32),
                zp16: _mm512_set1_epi16(out_zp as i16),
                qmin8: _mm512_set1_epi8(qmin as u8 as i8),
                perm: _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
            }
        }
    }
}

/// The 64 output bytes of one tile row from its 64 i32 accumulators `acc` (four vectors, in
/// column order): the whole requantization of [`requant_tile64_avx512`] (see there for why it
/// is exact), shared by the tile epilogue (which loads `acc` from the stored tile) and the fused
/// microkernels (which pass their accumulator registers).
///
/// # Safety
/// AVX-512 F/BW enabled in the caller; `o` built from params in u8 range with `qmin ≤ qmax`;
/// `!GUARD` only when the NaN guard is provably not needed (see [`nan_guard_needed`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant64<const GUARD: bool>(
    k: &Cols64,
    o: &Out64,
    acc: &[__m512i; 4],
    rs: __m512i,
) -> __m512i {
    // SAFETY: value-only intrinsics; AVX-512 F/BW is the caller's contract.
    unsafe {
        let v0 = requant64_vec::<GUARD>(k, o, acc, 0, rs);
        let v1 = requant64_vec::<GUARD>(k, o, acc, 1, rs);
        let v2 = requant64_vec::<GUARD>(k, o, acc, 2, rs);
        let v3 = requant64_vec::<GUARD>(k, o, acc, 3, rs);
        let w01 = _mm512_add_epi16(_mm512_packs_epi32(v0, v1), o.zp16);
        let w23 = _mm512_add_epi16(_mm512_packs_epi32(v2, v3), o.zp16);
        let b = _mm512_permutexvar_epi32(o.perm, _mm512_packus_epi16(w01, w23));
        _mm512_max_epu8(b, o.qmin8)
    }
}

/// Vector `c` of [`requant64`]: `cvt_rne(min(hi, y))` (i32, zero point not yet added). A
/// function, not a closure: helpers without `#[target_feature]` must not hold closures, which
/// do not inherit the caller's features and then call the intrinsics out of line.
///
/// # Safety
/// As [`requant64`]; `c < 4`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant64_vec<const GUARD: bool>(
    k: &Cols64,
    o: &Out64,
    acc: &[__m512i; 4],
    c: usize,
    rs: __m512i,
) -> __m512i {
    // SAFETY: value-only intrinsics; AVX-512F is the caller's contract.
    unsafe {
        let y = product64::<GUARD>(k, acc[c], c, rs);
        // `min(hi, y)`, not `min(y, hi)`: `vminps` returns its second operand when one is NaN,
        // so a NaN `y` stays NaN (see the doc of `requant_tile64_avx512`).
        _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_min_ps(o.hi, y),
        )
    }
}

/// AVX-512 epilogue of a full 64-column tile (the driver's usual case): the per-column
/// constants stay in registers for all rows, four vectors are narrowed together by saturating
/// packs, and the NaN guard is dropped when the constants cannot produce NaN.
///
/// **Exactness.** Let `y = (f32(raw) + bias) · mult`, `hi = qmax − zp` and
/// `r = cvt_rne(min(hi, y))` (i32; `cvt` returns `i32::MIN` for anything below `−2^31`, which
/// is also what the reference's saturating `as i32` gives, and `min` keeps `+inf`/huge values
/// from the conversion's overflow value). The reference is `clamp(sat(rne(y)) + zp, qmin,
/// qmax)`. Here `r ≤ hi`, `packs_epi32` saturates `r` to `[−32768, hi]`, the i16 add of `zp`
/// cannot wrap (`−32768 + 255 < 0`, `hi + zp = qmax ≤ 255`), `packus_epi16` clamps the sum to
/// `[0, qmax]` and `max_epu8(·, qmin)` gives `clamp(r + zp, qmin, qmax)` (as `0 ≤ qmin ≤ qmax`):
/// every saturation happens only where the result is clamped to the same bound anyway. The
/// packs interleave 128-bit lanes (byte dword `4k + c` holds columns `16c + 4k ..+4`); one
/// `vpermd` with the 4×4 transpose `[0, 4, 8, 12, 1, 5, …]` restores column order.
///
/// **NaN guard.** The reference maps NaN `y` to 0 (saturating `as i32`), so `GUARD` zeroes
/// unordered lanes first. It is not needed when every `mult[j]` is finite and every `bias[j]`
/// is finite with `|bias| ≤ 2^126`: then `x = f32(raw) + bias` is finite (`|f32(raw)| ≤ 2^31`,
/// so `|x| ≤ 2^126 + 2^31 < f32::MAX` before rounding and rounding is monotone), and a finite
/// × finite product is finite or ±inf, never NaN (NaN needs a NaN operand or `0 · inf`);
/// ±inf is then handled by `min` and the conversion as above. The check is a few mask
/// compares per tile on the constants already in registers, and it is skipped when
/// `qmin == zp` (every fused-ReLU layer, and `zp = 0`): there a NaN `y` needs no guard at all.
/// `min(hi, y)` keeps it NaN (`vminps` returns the second operand if either is NaN), the
/// conversion gives `i32::MIN` for it, and the packs turn that into `max(0, qmin) = qmin = zp`
/// — exactly the reference's `clamp(0 + zp, qmin, qmax)`.
///
/// # Safety
/// As [`requant_tile_avx512`] with `cols == 64` (so `ld_tile ≥ 64`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn requant_tile64_avx512(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: *mut u8,
    ldc: usize,
) {
    // SAFETY: the column slices hold ≥ 64 = cols elements (checked by the callers).
    let (k, nan_free) = unsafe { load_cols64(p, p.qmin != p.out_zp) };
    // SAFETY: this fn's contract, forwarded.
    unsafe {
        if nan_free || p.qmin == p.out_zp {
            requant_rows64::<false>(&k, tile, ld_tile, rows, row_sums, p, out, ldc)
        } else {
            requant_rows64::<true>(&k, tile, ld_tile, rows, row_sums, p, out, ldc)
        }
    }
}

/// Row loop of [`requant_tile64_avx512`], with or without the NaN guard.
///
/// # Safety
/// As [`requant_tile64_avx512`] (AVX-512 F/BW/VL supported); `!GUARD` only when
/// [`load_cols64`] reported the constants NaN-free (else the bytes of NaN lanes are wrong).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn requant_rows64<const GUARD: bool>(
    k: &Cols64,
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    out: *mut u8,
    ldc: usize,
) {
    // SAFETY: AVX-512F enabled here.
    let o = unsafe { Out64::new(p.out_zp, p.qmin, p.qmax) };
    for i in 0..rows {
        let rs = _mm512_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..64].as_ptr();
        // SAFETY: lanes `0..64` of row `i` of `tile` (sliced above); row `i < rows` of the
        // caller's output holds 64 bytes (contract); params in u8 range and `GUARD` per this
        // fn's contract.
        unsafe {
            let acc = load_row64(src);
            let b = requant64::<GUARD>(k, &o, &acc, rs);
            _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, b);
        }
    }
}

/// `y = (f32(src[j ..] − col_term − rs·w_zp) + bias) · mult` for lanes `j .. j + 8` of one tile
/// row, NaN lanes zeroed when `GUARD`.
///
/// # Safety
/// AVX2 enabled in the caller; lanes `j .. j + 8` are inside `src` and every column slice of `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn product8<const GUARD: bool>(
    src: *const i32,
    j: usize,
    rs: __m256i,
    p: &RequantCols<'_>,
) -> __m256 {
    // SAFETY: per this fn's contract.
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
        if GUARD {
            _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(y, y), y)
        } else {
            y
        }
    }
}

/// Requantizes lanes `j .. j + 8` of one tile row `src` to `rne(clamp(y, lo, hi))` as i32,
/// *before* the output zero point is added.
///
/// # Safety
/// AVX2 enabled in the caller; lanes `j .. j + 8` are inside `src` and every column slice of `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant8(
    src: *const i32,
    j: usize,
    rs: __m256i,
    p: &RequantCols<'_>,
    lo: __m256,
    hi: __m256,
) -> __m256i {
    // SAFETY: per this fn's contract.
    unsafe {
        let y = product8::<true>(src, j, rs, p);
        let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
        _mm256_cvtps_epi32(y)
    }
}

/// Narrows 8 i32 lanes in 0..=255 to 8 bytes at `dst`.
///
/// # Safety
/// AVX2 enabled in the caller; `dst` valid for 8 bytes of writes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store8(dst: *mut u8, r: __m256i) {
    // SAFETY: per this fn's contract.
    unsafe {
        let w = _mm256_packs_epi32(r, r);
        let b8 = _mm256_packus_epi16(w, w);
        let q = _mm_unpacklo_epi32(
            _mm256_castsi256_si128(b8),
            _mm256_extracti128_si256::<1>(b8),
        );
        _mm_storel_epi64(dst as *mut __m128i, q);
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
    // SAFETY: this fn's contract, forwarded; AVX2 enabled here.
    unsafe {
        if p.qmin == p.out_zp {
            requant_rows_avx2::<false>(tile, ld_tile, rows, cols, row_sums, p, out, ldc)
        } else {
            requant_rows_avx2::<true>(tile, ld_tile, rows, cols, row_sums, p, out, ldc)
        }
    }
}

/// Body of [`requant_tile_avx2`]: blocks of 16 columns (the AVX2 kernels' tile width) are
/// narrowed by saturating packs with the float clamp reduced to `min(hi, y)`, exactly as in
/// [`requant_tile64_avx512`] (same proof; `_mm_shuffle_epi32::<0xD8>` undoes the packs' lane
/// interleave). `GUARD` zeroes NaN products; it may be `false` only when `qmin == out_zp`,
/// where a NaN `y` survives `min(hi, y)` and ends as `qmin = zp`, the reference's byte. The
/// remaining 8-column blocks and the scalar tail are as before.
///
/// # Safety
/// As [`requant_tile_avx2`]; `!GUARD` only when `p.qmin == p.out_zp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn requant_rows_avx2<const GUARD: bool>(
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
    let zp16 = _mm256_set1_epi16(p.out_zp as i16);
    let qmin8 = _mm_set1_epi8(p.qmin as u8 as i8);
    let full16 = cols / 16 * 16;
    let full = cols / 8 * 8;
    for i in 0..rows {
        let rs = _mm256_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..cols].as_ptr();
        // SAFETY: row `i < rows` of the caller's output (contract of this fn).
        let dst = unsafe { out.add(i * ldc) };
        for j in (0..full16).step_by(16) {
            // SAFETY: `j + 16 ≤ cols`: every access is inside its row or column slice.
            unsafe {
                // `min(hi, y)`: `vminps` returns the second operand if either is NaN.
                let r0 = _mm256_cvtps_epi32(_mm256_min_ps(hi, product8::<GUARD>(src, j, rs, p)));
                let r1 =
                    _mm256_cvtps_epi32(_mm256_min_ps(hi, product8::<GUARD>(src, j + 8, rs, p)));
                let w = _mm256_add_epi16(_mm256_packs_epi32(r0, r1), zp16);
                let b =
                    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                let b = _mm_max_epu8(_mm_shuffle_epi32::<0xD8>(b), qmin8);
                _mm_storeu_si128(dst.add(j) as *mut __m128i, b);
            }
        }
        for j in (full16..full).step_by(8) {
            // SAFETY: `j + 8 ≤ cols`: every 8-lane load/store is inside its row or column slice.
            unsafe {
                let r = _mm256_add_epi32(requant8(src, j, rs, p, lo, hi), zp);
                store8(dst.add(j), r);
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

/// AVX-512 requantize + residual add ([`Epilogue::requant_add_tile_raw`]), 16 columns per
/// vector, masked tails: the requantized lanes go straight into the add's vector formula as
/// `f32(q) = roundscale(clamp(y)) + f32(zp)` (exact: `q` ∈ qmin..=qmax ⊂ 0..=255), with no u8
/// or i32 round trip, and the add drops its conversion guard when the params allow it
/// ([`AddParams::conversion_in_range`]). A row that reaches the
/// scalar-formula tail of the tensor is requantized, then added in place by the row kernel with
/// its local formula split.
///
/// # Safety
/// AVX-512 F/BW/VL and FMA supported; otherwise as [`requant_tile_avx512`]; `add.skip` holds
/// `(rows − 1)·ldskip + cols` bytes and does not overlap the output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn requant_add_tile_avx512(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    add: &TileAdd<'_>,
    out: *mut u8,
    ldc: usize,
) {
    let ap = add.params;
    // SAFETY: this fn's contract, forwarded; features enabled here.
    unsafe {
        match (ap.conversion_in_range(), ap.relu) {
            (true, true) => requant_add_rows_avx512::<true, true>(
                tile, ld_tile, rows, cols, row_sums, p, add, out, ldc,
            ),
            (true, false) => requant_add_rows_avx512::<true, false>(
                tile, ld_tile, rows, cols, row_sums, p, add, out, ldc,
            ),
            _ => requant_add_rows_avx512::<false, false>(
                tile, ld_tile, rows, cols, row_sums, p, add, out, ldc,
            ),
        }
    }
}

/// Body of [`requant_add_tile_avx512`] with the add's guard-free path (`IN_RANGE`, see
/// [`AddParams::conversion_in_range`]) and its ReLU (`RELU`, used by the guard-free path only)
/// resolved at compile time.
///
/// # Safety
/// As [`requant_add_tile_avx512`] (AVX-512 F/BW/VL + FMA supported); `IN_RANGE` only when the params are in range, `RELU == add.params.relu` when `IN_RANGE`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn requant_add_rows_avx512<const IN_RANGE: bool, const RELU: bool>(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    add: &TileAdd<'_>,
    out: *mut u8,
    ldc: usize,
) {
    use crate::ops::x86_avx512 as ops;
    let lo = _mm512_set1_ps((p.qmin - p.out_zp) as f32);
    let hi = _mm512_set1_ps((p.qmax - p.out_zp) as f32);
    let zpf = _mm512_set1_ps(p.out_zp as f32);
    // SAFETY: AVX-512F enabled here.
    let k = unsafe { ops::AddConsts::new(add.params) };
    // Full 64-column rows: the register-resident constants of `requant_add64`.
    let pack64 = (IN_RANGE && cols == 64 && (0..=255).contains(&add.params.out_zp)).then(|| {
        // SAFETY: `cols == 64`: every column slice holds ≥ 64 elements (checked by the
        // callers); AVX-512F enabled here.
        unsafe { (load_cols64(p, false).0, Add64::new(p, add.params)) }
    });
    for i in 0..rows {
        let skip = &add.skip[i * add.ldskip..][..cols];
        // SAFETY: row `i < rows` of the caller's output (contract of this fn).
        let dst = unsafe { out.add(i * ldc) };
        let row_vec = add.vec_len.saturating_sub(i * ldc);
        if row_vec < cols {
            // SAFETY: one row of the caller's tile and output (contract); the row slice is
            // referenced by nothing else, `skip` does not overlap it; features enabled here.
            unsafe {
                requant_tile_avx512(
                    &tile[i * ld_tile..],
                    ld_tile,
                    1,
                    cols,
                    &row_sums[i..],
                    p,
                    dst,
                    ldc,
                );
                let row = std::slice::from_raw_parts_mut(dst, cols);
                ops::add_u8_inplace(row, skip, add.params, row_vec);
            }
            continue;
        }
        let rs = _mm512_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..cols].as_ptr();
        if let Some((k64, a64)) = &pack64 {
            // SAFETY: columns `0..64` are inside the row of `tile`, `skip` (sliced above to
            // `cols = 64`) and `out`; the add's params are in range and `RELU` is theirs.
            unsafe {
                let acc = load_row64(src);
                let b = requant_add64::<RELU>(k64, a64, &acc, rs, skip.as_ptr());
                _mm512_storeu_si512(dst as *mut __m512i, b);
            }
            continue;
        }
        let mut j = 0;
        while j < cols {
            let n = (cols - j).min(16);
            let m: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
            // SAFETY: lanes `j..j+n` are inside the row of `tile`, `skip`, `out` and every
            // column slice (lengths ≥ cols); masked lanes are not accessed.
            unsafe {
                // f32(q) = rne(clamp(y)) + zp, exact in f32 (small integers): round in float.
                let y = requant16_clamped(src, j, n, m, rs, p, lo, hi);
                let rounded =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
                let fa = _mm512_add_ps(rounded, zpf);
                let sb = if n == 16 {
                    _mm_loadu_si128(skip.as_ptr().add(j) as *const __m128i)
                } else {
                    _mm_maskz_loadu_epi8(m, skip.as_ptr().add(j) as *const i8)
                };
                let fb = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sb));
                let r = if IN_RANGE {
                    ops::add_lanes_in_range_u8::<RELU>(fa, fb, &k)
                } else {
                    _mm512_cvtepi32_epi8(ops::add_lanes(fa, fb, &k))
                };
                if n == 16 {
                    _mm_storeu_si128(dst.add(j) as *mut __m128i, r);
                } else {
                    _mm_mask_storeu_epi8(dst.add(j) as *mut i8, m, r);
                }
            }
            j += 16;
        }
    }
}

/// Broadcast constants of [`requant_add64`]: the requantization's clamp bounds and zero point
/// and the add's constants.
#[cfg(target_arch = "x86_64")]
struct Add64 {
    lo: __m512,
    hi: __m512,
    zpf: __m512,
    add_zp16: __m512i,
    perm: __m512i,
    k: crate::ops::x86_avx512::AddConsts,
}

#[cfg(target_arch = "x86_64")]
impl Add64 {
    /// # Safety
    /// AVX-512F enabled in the caller.
    #[inline(always)]
    unsafe fn new(p: &RequantCols<'_>, ap: &AddParams) -> Add64 {
        // SAFETY: value-only intrinsics; AVX-512F is the caller's contract.
        unsafe {
            Add64 {
                lo: _mm512_set1_ps((p.qmin - p.out_zp) as f32),
                hi: _mm512_set1_ps((p.qmax - p.out_zp) as f32),
                zpf: _mm512_set1_ps(p.out_zp as f32),
                add_zp16: _mm512_set1_epi16(ap.out_zp as i16),
                perm: _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
                k: crate::ops::x86_avx512::AddConsts::new(ap),
            }
        }
    }
}

/// Requantize + residual add of one full 64-column row with the add's vector formula, from the
/// row's 64 i32 accumulators `acc` (column order) and its 64 skip bytes: the conv byte
/// `q = rne(clamp(y, lo, hi)) + zp` enters the add as `f32(q)` (rounded in float: exact, small
/// integers), and the add's four i32 quotients `r` are narrowed together. For the add's `zp` in
/// 0..=255, `packus(adds16(packs(r), zp)) = clamp(r + zp, 0, 255)`: `packs` saturates only where
/// `|r| > 32767`, and then `r + zp` clamps to the same byte as the saturated value plus `zp`
/// (`adds` saturates likewise); `vpermd` undoes the packs' 128-bit lane interleave (see
/// [`requant_tile64_avx512`]). Shared by the tile epilogue and the fused microkernels.
///
/// # Safety
/// AVX-512 F/BW + FMA enabled in the caller; `skip` readable for 64 bytes; `a` built from
/// requant params in u8 range and add params with [`AddParams::conversion_in_range`] and
/// `out_zp` in 0..=255; `RELU` equals the add's `relu`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant_add64<const RELU: bool>(
    k: &Cols64,
    a: &Add64,
    acc: &[__m512i; 4],
    rs: __m512i,
    skip: *const u8,
) -> __m512i {
    // SAFETY: per this fn's contract.
    unsafe {
        let r0 = requant_add64_vec::<RELU>(k, a, acc, 0, rs, skip);
        let r1 = requant_add64_vec::<RELU>(k, a, acc, 1, rs, skip);
        let r2 = requant_add64_vec::<RELU>(k, a, acc, 2, rs, skip);
        let r3 = requant_add64_vec::<RELU>(k, a, acc, 3, rs, skip);
        let w01 = _mm512_adds_epi16(_mm512_packs_epi32(r0, r1), a.add_zp16);
        let w23 = _mm512_adds_epi16(_mm512_packs_epi32(r2, r3), a.add_zp16);
        _mm512_permutexvar_epi32(a.perm, _mm512_packus_epi16(w01, w23))
    }
}

/// Vector `c` of [`requant_add64`]: the add's rounded i32 quotient (zero point not yet added).
/// A function, not a closure (see [`requant64_vec`]).
///
/// # Safety
/// As [`requant_add64`]; `c < 4`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn requant_add64_vec<const RELU: bool>(
    k: &Cols64,
    a: &Add64,
    acc: &[__m512i; 4],
    c: usize,
    rs: __m512i,
    skip: *const u8,
) -> __m512i {
    use crate::ops::x86_avx512 as ops;
    // SAFETY: per this fn's contract (`skip + 16c` readable for 16 bytes).
    unsafe {
        let y = product64::<true>(k, acc[c], c, rs);
        let y = _mm512_min_ps(_mm512_max_ps(y, a.lo), a.hi);
        let rounded = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let fa = _mm512_add_ps(rounded, a.zpf);
        let sb = _mm_loadu_si128(skip.add(16 * c) as *const __m128i);
        let fb = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sb));
        ops::add_lanes_in_range_i32::<RELU>(fa, fb, &a.k)
    }
}

/// Runs `$body` with `$i` bound to each row index and `$a` to that row of `$acc` (an array of
/// at most 8 rows), unrolled with constant indices: the rows stay in registers (a loop that
/// LLVM does not unroll indexes the array in memory), and no closure is involved (closures in
/// helpers without `#[target_feature]` call the intrinsics out of line).
#[cfg(target_arch = "x86_64")]
macro_rules! unrolled_rows {
    ($acc:expr, |$i:ident, $a:ident| $body:block) => {{
        debug_assert!($acc.len() <= 8);
        if let Some($a) = $acc.get(0) {
            let $i = 0usize;
            $body
        }
        if let Some($a) = $acc.get(1) {
            let $i = 1usize;
            $body
        }
        if let Some($a) = $acc.get(2) {
            let $i = 2usize;
            $body
        }
        if let Some($a) = $acc.get(3) {
            let $i = 3usize;
            $body
        }
        if let Some($a) = $acc.get(4) {
            let $i = 4usize;
            $body
        }
        if let Some($a) = $acc.get(5) {
            let $i = 5usize;
            $body
        }
        if let Some($a) = $acc.get(6) {
            let $i = 6usize;
            $body
        }
        if let Some($a) = $acc.get(7) {
            let $i = 7usize;
            $body
        }
    }};
}

/// The fused 64-column epilogue ([`Tile64`]) of a microkernel's accumulators: the `R ≤ 8` rows
/// of `acc` (four vectors of 16 columns each, in column order) are requantized — and added to
/// their skip rows — and stored as `out[i·ldc .. + 64]`, with exactly the code of the tile
/// epilogue ([`requant64`], [`requant_add64`]), straight from registers. A tile that reaches
/// the add's scalar-formula tail of the tensor (`vec_len` inside it: never in ResNet, whose
/// tensors are multiples of 64 elements) is stored as an i32 tile and goes through the tile
/// epilogue itself ([`requant_add_tile_avx512`]).
///
/// # Safety
/// AVX-512 F/BW/VL + FMA enabled in the caller; `t` satisfies [`Tile64`]'s field contracts
/// (checked by `debug_assert!`; the skip length by `assert!`); `out` is valid for writes of
/// `out[i·ldc + j]`, `i < R`, `j < 64`, nothing else references those bytes and the skip rows
/// do not overlap them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn requant_acc64<const R: usize>(
    acc: &[[__m512i; 4]; R],
    t: &Tile64<'_>,
    out: *mut u8,
    ldc: usize,
) {
    let p = &t.cols;
    debug_assert!((1..=8).contains(&R) && ldc >= 64);
    debug_assert!(Tile64::supports(p, t.add.as_ref().map(|a| a.params)));
    debug_assert!(p.col_term.len() >= 64 && p.mult.len() >= 64);
    debug_assert!(p.bias.is_none_or(|b| b.len() >= 64));
    debug_assert!(t.guard || !nan_guard_needed(&p.range(0, 64)));
    // SAFETY: per this fn's contract: the column slices hold ≥ 64 elements, params are in range,
    // `out` rows `i < R` hold 64 writable bytes; skip rows checked below.
    unsafe {
        let (k, _) = load_cols64(p, false);
        let rs = _mm512_setzero_si512();
        let Some(add) = &t.add else {
            let o = Out64::new(p.out_zp, p.qmin, p.qmax);
            if t.guard {
                unrolled_rows!(acc, |i, a| {
                    let b = requant64::<true>(&k, &o, a, rs);
                    _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, b);
                });
            } else {
                unrolled_rows!(acc, |i, a| {
                    let b = requant64::<false>(&k, &o, a, rs);
                    _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, b);
                });
            }
            return;
        };
        assert!(add.skip.len() >= (R - 1) * add.ldskip + 64);
        if add.vec_len < (R - 1) * ldc + 64 {
            requant_add_acc64_split(*acc, t, add, out, ldc);
        } else if add.params.relu {
            let a64 = Add64::new(p, add.params);
            unrolled_rows!(acc, |i, a| {
                let skip = add.skip.as_ptr().add(i * add.ldskip);
                let b = requant_add64::<true>(&k, &a64, a, rs, skip);
                _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, b);
            });
        } else {
            let a64 = Add64::new(p, add.params);
            unrolled_rows!(acc, |i, a| {
                let skip = add.skip.as_ptr().add(i * add.ldskip);
                let b = requant_add64::<false>(&k, &a64, a, rs, skip);
                _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, b);
            });
        }
    }
}

/// A full 64-column tile whose epilogue is **deferred**: its kernel stored the i32
/// accumulators (`rows` rows of 64, row stride 64) instead of requantizing them, and the *next*
/// tile's kernel requantizes them, one row between two of its own taps or K-step runs
/// (software pipelining across tiles).
///
/// **Why.** A tile's epilogue is ≈ 200 vector instructions that need only the finished
/// accumulators; issued as one burst after the K loop they fill the scheduler and the next
/// tile's `vpdpbusd` stream waits behind them: ≈ 3 % of a 3×3 conv with K = 576, ≈ 7 % with the
/// fused residual add, ≈ 5 % of the stem (K = 147), measured by dropping the epilogue. Spread
/// over the next tile's K loop a row at a time, they run on the vector ports `vpdpbusd` leaves
/// idle.
///
/// **Why assembly.** The row code runs between K steps with 24 accumulators live, leaving 8
/// vector registers. Written with intrinsics, the optimiser hoisted the row's per-column
/// constants out of the K loop and spilled them (and the stored rows) to the stack around every
/// row: slower than not deferring at all. The row is therefore one `asm!` block
/// ([`deferred_row64`]) that reads every constant as a memory operand and needs at most six
/// vector registers. It is the instruction sequence of [`requant64`] / [`requant_add64`], in
/// the same order with the same operands (listed there), so the bytes are the same; a layer
/// without bias adds `+0.0`, which changes no value (`f32(raw)` is never `−0.0`). The tests
/// compare it byte for byte with the immediate epilogue and the reference.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the row code is x86-64 only
pub struct Deferred<'a> {
    /// Row `i` of the stored accumulators at `acc + 64·i` (i32).
    pub acc: *const i32,
    /// Rows of the tile, `1..=8`.
    pub rows: usize,
    /// Row `i` of the tile's output at `out + i·ldc` (64 bytes).
    pub out: *mut u8,
    pub ldc: usize,
    /// The tile's 64 columns of the per-column constants (`bias` all zeros when the layer has
    /// none) and the call's broadcast constants.
    cols: DeferCols<'a>,
    /// Row `i` of the residual's skip at `skip + i·ldskip` (fused add only).
    skip: *const u8,
    ldskip: usize,
    kind: DeferKind,
}

#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct DeferCols<'a> {
    col_term: &'a [i32],
    bias: &'a [f32],
    mult: &'a [f32],
    k: &'a DeferConsts,
}

/// Which row program a deferred tile runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeferKind {
    Requant,
    RequantGuard,
    Add,
    AddRelu,
}

impl DeferKind {
    /// The row program of an epilogue with NaN guard `guard` and fused add `add`, if any.
    #[inline]
    fn of(guard: bool, add: Option<&AddParams>) -> DeferKind {
        match add {
            None if guard => DeferKind::RequantGuard,
            None => DeferKind::Requant,
            Some(a) if a.relu => DeferKind::AddRelu,
            Some(_) => DeferKind::Add,
        }
    }
}

/// 64 zero biases (a layer without bias adds these: exact, see [`Deferred`]).
static ZERO_BIAS: [f32; 64] = [0.0; 64];

/// The broadcast constants of one call's deferred row programs, laid out for the `asm!` of
/// [`deferred_row64`] (vector operands first, then the scalars it broadcasts with `{1to16}`).
/// Built once per call ([`DeferConsts::new`]).
#[repr(C, align(64))]
#[derive(Clone, Debug)]
pub struct DeferConsts {
    /// Offset 0: the i16 zero point added after the first pack (requant: `out_zp`; fused add:
    /// the add's `out_zp`, saturating).
    zp16: [i16; 32],
    /// Offset 64: `qmin` in every byte (requant only).
    qmin8: [u8; 64],
    /// Offset 128: the dword permutation undoing the packs' lane interleave.
    perm: [i32; 16],
    /// Offset 192: `qmax − out_zp`, `qmin − out_zp`, `out_zp` (f32).
    hi: f32,
    lo: f32,
    zpf: f32,
    /// Offset 204: the add's `sa`, `sb`, `pa`, `pb`, `1/out_scale`, and 0.0.
    sa: f32,
    sb: f32,
    pa: f32,
    pb: f32,
    inv: f32,
    zero: f32,
    kind: DeferKind,
}

impl DeferConsts {
    /// The constants of the deferred epilogue of tiles with requant params `p` and fused add
    /// `add` (params [`Tile64::supports`]), NaN guard `guard`.
    pub fn new(p: &RequantCols<'_>, add: Option<&AddParams>, guard: bool) -> DeferConsts {
        let kind = DeferKind::of(guard, add);
        let zp16 = add.map_or(p.out_zp, |a| a.out_zp);
        let a = add
            .copied()
            .unwrap_or(AddParams::new(1.0, 0, 1.0, 0, 1.0, 0, false));
        DeferConsts {
            zp16: [zp16 as i16; 32],
            qmin8: [p.qmin as u8; 64],
            perm: [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15],
            hi: (p.qmax - p.out_zp) as f32,
            lo: (p.qmin - p.out_zp) as f32,
            zpf: p.out_zp as f32,
            sa: a.sa,
            sb: a.sb,
            pa: a.pa,
            pb: a.pb,
            inv: a.inv_out,
            zero: 0.0,
            kind,
        }
    }
}

impl<'a> Deferred<'a> {
    /// Whether a tile of `rows` rows with epilogue `ep` can be deferred: always, except a fused
    /// add whose scalar-formula tail starts inside the tile (never in ResNet: see
    /// [`requant_acc64`]), which keeps the immediate path.
    #[inline]
    pub fn supports(ep: &Tile64<'_>, rows: usize, ldc: usize) -> bool {
        (1..=8).contains(&rows)
            && ep.cols.col_term.len() >= 64
            && ep
                .add
                .as_ref()
                .is_none_or(|a| a.vec_len >= (rows - 1) * ldc + 64)
    }

    /// A tile of `rows` rows (accumulators at `acc`) whose epilogue `ep` — with the call's
    /// constants `k`, built from the same params — writes `out + i·ldc`.
    ///
    /// # Panics
    /// If not [`Deferred::supports`], or `k` was built for another kind of epilogue (guard,
    /// add, ReLU).
    #[inline]
    pub fn new(
        acc: *const i32,
        rows: usize,
        ep: &Tile64<'a>,
        k: &'a DeferConsts,
        out: *mut u8,
        ldc: usize,
    ) -> Deferred<'a> {
        assert!(Deferred::supports(ep, rows, ldc));
        let p = &ep.cols;
        let kind = DeferKind::of(ep.guard, ep.add.as_ref().map(|a| a.params));
        assert_eq!(kind, k.kind, "deferred-epilogue constants of another kind");
        let (skip, ldskip) = ep
            .add
            .as_ref()
            .map_or((std::ptr::null(), 0), |a| (a.skip.as_ptr(), a.ldskip));
        Deferred {
            acc,
            rows,
            out,
            ldc,
            cols: DeferCols {
                col_term: &p.col_term[..64],
                bias: p.bias.map_or(&ZERO_BIAS[..], |b| &b[..64]),
                mult: &p.mult[..64],
                k,
            },
            skip,
            ldskip,
            kind,
        }
    }
}

/// One requantized vector of the plain row program (`requant64_vec`): `t = cvt_rne(min(hi,
/// (f32(acc − col_term) + bias) · mult))`, NaN lanes zeroed first when guarded. Offsets: `$o`
/// bytes into the row's accumulators and column constants.
#[cfg(target_arch = "x86_64")]
macro_rules! defer_vec_requant {
    ($o:literal, $t:literal, guard) => {
        concat!(
            defer_vec_product!($o, $t),
            "vcmpordps {m}, {", $t, ":z}, {", $t, ":z}\n",
            "vmovaps {", $t, ":z} {{{m}}} {{z}}, {", $t, ":z}\n",
            defer_vec_requant!(@tail $t),
        )
    };
    ($o:literal, $t:literal, plain) => {
        concat!(defer_vec_product!($o, $t), defer_vec_requant!(@tail $t))
    };
    (@tail $t:literal) => {
        concat!(
            "vminps {", $t, ":z}, {hi:z}, {", $t, ":z}\n",
            "vcvtps2dq {", $t, ":z}, {", $t, ":z}, {{rn-sae}}\n",
        )
    };
}

/// `(f32(acc − col_term) + bias) · mult` of one vector (`product64`), into `$t`.
#[cfg(target_arch = "x86_64")]
macro_rules! defer_vec_product {
    ($o:literal, $t:literal) => {
        concat!(
            "vmovdqu32 {",
            $t,
            ":z}, zmmword ptr [{acc} + ",
            $o,
            "]\n",
            "vpsubd {",
            $t,
            ":z}, {",
            $t,
            ":z}, zmmword ptr [{ct} + ",
            $o,
            "]\n",
            "vcvtdq2ps {",
            $t,
            ":z}, {",
            $t,
            ":z}\n",
            "vaddps {",
            $t,
            ":z}, {",
            $t,
            ":z}, zmmword ptr [{bias} + ",
            $o,
            "]\n",
            "vmulps {",
            $t,
            ":z}, {",
            $t,
            ":z}, zmmword ptr [{mult} + ",
            $o,
            "]\n",
        )
    };
}

/// One vector of the add row program (`requant_add64_vec`): the guarded product clamped to
/// `[lo, hi]`, rounded, `+ zp` (the conv byte as f32), then the add's vector formula with the
/// skip bytes at `skip + $s`: `cvt(((fa·sa + pa) + (fb·sb + pb)) [max 0] · inv)`.
#[cfg(target_arch = "x86_64")]
macro_rules! defer_vec_add {
    ($o:literal, $s:literal, $t:literal, relu) => {
        concat!(
            defer_vec_add!(@sum $o, $s, $t),
            "vmaxps {", $t, ":z}, {", $t, ":z}, dword ptr [{k} + 224]{{1to16}}\n",
            defer_vec_add!(@tail $t),
        )
    };
    ($o:literal, $s:literal, $t:literal, plain) => {
        concat!(defer_vec_add!(@sum $o, $s, $t), defer_vec_add!(@tail $t))
    };
    (@sum $o:literal, $s:literal, $t:literal) => {
        concat!(
            defer_vec_product!($o, $t),
            "vcmpordps {m}, {", $t, ":z}, {", $t, ":z}\n",
            "vmovaps {", $t, ":z} {{{m}}} {{z}}, {", $t, ":z}\n",
            "vmaxps {", $t, ":z}, {", $t, ":z}, dword ptr [{k} + 196]{{1to16}}\n",
            "vminps {", $t, ":z}, {", $t, ":z}, dword ptr [{k} + 192]{{1to16}}\n",
            "vrndscaleps {", $t, ":z}, {", $t, ":z}, 8\n",
            "vaddps {", $t, ":z}, {", $t, ":z}, dword ptr [{k} + 200]{{1to16}}\n",
            "vpmovzxbd {u:z}, xmmword ptr [{skip} + ", $s, "]\n",
            "vcvtdq2ps {u:z}, {u:z}\n",
            "vfmadd132ps {", $t, ":z}, {pa:z}, dword ptr [{k} + 204]{{1to16}}\n",
            "vfmadd132ps {u:z}, {pb:z}, dword ptr [{k} + 208]{{1to16}}\n",
            "vaddps {", $t, ":z}, {", $t, ":z}, {u:z}\n",
        )
    };
    (@tail $t:literal) => {
        concat!(
            "vmulps {", $t, ":z}, {", $t, ":z}, dword ptr [{k} + 220]{{1to16}}\n",
            "vcvtps2dq {", $t, ":z}, {", $t, ":z}\n",
        )
    };
}

/// Row `i` of a deferred tile: requantized (and added to its skip row) from the stored
/// accumulators into `out + i·ldc` — one `asm!` block per row program, the instruction
/// sequence of [`requant64`] / [`requant_add64`] (see [`Deferred`] for why assembly). Inlined
/// into the microkernels' K loops.
///
/// # Safety
/// The CPU supports AVX-512 F/BW and FMA; `i < d.rows`; `d.acc` readable for `64·rows` i32;
/// output row `i` writable for 64 bytes, not referenced elsewhere, not overlapping the skip
/// rows or `d.acc`; skip row `i` readable for 64 bytes (fused add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
#[inline]
pub(crate) unsafe fn deferred_row64(d: &Deferred<'_>, i: usize) {
    debug_assert!(i < d.rows);
    let c = &d.cols;
    // SAFETY: per this fn's contract; `c`'s slices hold 64 elements (`Deferred::new`) and `k`
    // is 64-byte aligned with the layout the offsets below name (`DeferConsts`).
    unsafe {
        let acc = d.acc.add(64 * i);
        let out = d.out.add(i * d.ldc);
        let (ct, bias, mult, k) = (c.col_term.as_ptr(), c.bias.as_ptr(), c.mult.as_ptr(), c.k);
        // Scratch vector registers of the asm blocks (outputs only: typed, never read).
        let (_zhi, _zt0, _zt1, _zt2, _zpa, _zpb, _zu): (
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
        );
        match d.kind {
            DeferKind::Requant | DeferKind::RequantGuard => {
                macro_rules! plain {
                    ($guard:ident) => {
                        std::arch::asm!(
                            "/* mask {m} */",
                            "vbroadcastss {hi:z}, dword ptr [{k} + 192]",
                            defer_vec_requant!(0, "t0", $guard),
                            defer_vec_requant!(64, "t1", $guard),
                            "vpackssdw {t0:z}, {t0:z}, {t1:z}",
                            "vpaddw {t0:z}, {t0:z}, zmmword ptr [{k}]",
                            defer_vec_requant!(128, "t1", $guard),
                            defer_vec_requant!(192, "t2", $guard),
                            "vpackssdw {t1:z}, {t1:z}, {t2:z}",
                            "vpaddw {t1:z}, {t1:z}, zmmword ptr [{k}]",
                            "vpackuswb {t0:z}, {t0:z}, {t1:z}",
                            "vmovdqa32 {t1:z}, zmmword ptr [{k} + 128]",
                            "vpermd {t0:z}, {t1:z}, {t0:z}",
                            "vpmaxub {t0:z}, {t0:z}, zmmword ptr [{k} + 64]",
                            "vmovdqu8 zmmword ptr [{out}], {t0:z}",
                            acc = in(reg) acc,
                            ct = in(reg) ct,
                            bias = in(reg) bias,
                            mult = in(reg) mult,
                            k = in(reg) k,
                            out = in(reg) out,
                            hi = out(zmm_reg) _zhi,
                            t0 = out(zmm_reg) _zt0,
                            t1 = out(zmm_reg) _zt1,
                            t2 = out(zmm_reg) _zt2,
                            m = out(kreg) _,
                            options(nostack, preserves_flags),
                        )
                    };
                }
                if d.kind == DeferKind::RequantGuard {
                    plain!(guard);
                } else {
                    plain!(plain);
                }
            }
            DeferKind::Add | DeferKind::AddRelu => {
                let skip = d.skip.add(i * d.ldskip);
                macro_rules! add {
                    ($relu:ident) => {
                        std::arch::asm!(
                            "vbroadcastss {pa:z}, dword ptr [{k} + 212]",
                            "vbroadcastss {pb:z}, dword ptr [{k} + 216]",
                            defer_vec_add!(0, 0, "t0", $relu),
                            defer_vec_add!(64, 16, "t1", $relu),
                            "vpackssdw {t0:z}, {t0:z}, {t1:z}",
                            "vpaddsw {t0:z}, {t0:z}, zmmword ptr [{k}]",
                            defer_vec_add!(128, 32, "t1", $relu),
                            defer_vec_add!(192, 48, "t2", $relu),
                            "vpackssdw {t1:z}, {t1:z}, {t2:z}",
                            "vpaddsw {t1:z}, {t1:z}, zmmword ptr [{k}]",
                            "vpackuswb {t0:z}, {t0:z}, {t1:z}",
                            "vmovdqa32 {t1:z}, zmmword ptr [{k} + 128]",
                            "vpermd {t0:z}, {t1:z}, {t0:z}",
                            "vmovdqu8 zmmword ptr [{out}], {t0:z}",
                            acc = in(reg) acc,
                            ct = in(reg) ct,
                            bias = in(reg) bias,
                            mult = in(reg) mult,
                            k = in(reg) k,
                            out = in(reg) out,
                            skip = in(reg) skip,
                            pa = out(zmm_reg) _zpa,
                            pb = out(zmm_reg) _zpb,
                            u = out(zmm_reg) _zu,
                            t0 = out(zmm_reg) _zt0,
                            t1 = out(zmm_reg) _zt1,
                            t2 = out(zmm_reg) _zt2,
                            m = out(kreg) _,
                            options(nostack, preserves_flags),
                        )
                    };
                }
                if d.kind == DeferKind::AddRelu {
                    add!(relu);
                } else {
                    add!(plain);
                }
            }
        }
    }
}

/// Finishes a deferred tile on its own (the last one of a run of tiles): every row, by
/// [`deferred_row64`].
///
/// # Safety
/// The CPU supports AVX-512 F/BW and FMA (a [`Deferred`] comes from an AVX-512 VNNI kernel);
/// `d` as in [`deferred_row64`] for every `i < d.rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub unsafe fn finish_deferred(d: &Deferred<'_>) {
    for i in 0..d.rows {
        // SAFETY: this fn's contract; features enabled here.
        unsafe { deferred_row64(d, i) };
    }
}

/// The rare half of [`requant_acc64`]: a tile reaching the add's scalar-formula tail is stored
/// as an i32 tile and runs the tile epilogue ([`requant_add_tile_avx512`]), so its rows get
/// exactly the unfused treatment (requantize, then add in place with the row's split). Out of
/// line and on a copy of the accumulators (passed by value), so the caller's stay in registers.
///
/// # Safety
/// As [`requant_acc64`] with `t.add == Some(add)`, skip rows checked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
#[inline(never)]
#[cold]
unsafe fn requant_add_acc64_split<const R: usize>(
    acc: [[__m512i; 4]; R],
    t: &Tile64<'_>,
    add: &TileAdd<'_>,
    out: *mut u8,
    ldc: usize,
) {
    let mut tile = [0i32; 8 * 64];
    for (i, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: row `i < R ≤ 8`, vector `c < 4`: inside `tile`.
            unsafe {
                _mm512_storeu_si512(tile.as_mut_ptr().add(64 * i + 16 * c) as *mut __m512i, *v)
            };
        }
    }
    // SAFETY: `tile` holds R rows of 64 i32; the column slices hold ≥ 64 elements, params in
    // range (`Tile64`'s contract); `out` and the skip rows per this fn's contract; features
    // enabled here.
    unsafe { requant_add_tile_avx512(&tile, 64, R, 64, &[0; 8], &t.cols, add, out, ldc) }
}

/// AVX2 requantize + residual add ([`Epilogue::requant_add_tile_raw`]), 8 columns per vector
/// (requantized lanes fed to the add as `f32(q)`), scalar reference-formula tail columns; rows
/// reaching the tensor's scalar-formula tail as in [`requant_add_tile_avx512`].
///
/// # Safety
/// AVX2 and FMA supported; otherwise as [`requant_add_tile_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn requant_add_tile_avx2(
    tile: &[i32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    row_sums: &[i32],
    p: &RequantCols<'_>,
    add: &TileAdd<'_>,
    out: *mut u8,
    ldc: usize,
) {
    use crate::ops::x86_avx2 as ops;
    let lo = _mm256_set1_ps((p.qmin - p.out_zp) as f32);
    let hi = _mm256_set1_ps((p.qmax - p.out_zp) as f32);
    let zp = _mm256_set1_epi32(p.out_zp);
    // SAFETY: AVX2 enabled here.
    let k = unsafe { ops::AddConsts::new(add.params) };
    let zpf = _mm256_set1_ps(p.out_zp as f32);
    let full16 = cols / 16 * 16;
    let full = cols / 8 * 8;
    for i in 0..rows {
        let skip = &add.skip[i * add.ldskip..][..cols];
        // SAFETY: row `i < rows` of the caller's output (contract of this fn).
        let dst = unsafe { out.add(i * ldc) };
        let row_vec = add.vec_len.saturating_sub(i * ldc);
        if row_vec < cols {
            // SAFETY: as in `requant_add_tile_avx512`.
            unsafe {
                requant_tile_avx2(
                    &tile[i * ld_tile..],
                    ld_tile,
                    1,
                    cols,
                    &row_sums[i..],
                    p,
                    dst,
                    ldc,
                );
                let row = std::slice::from_raw_parts_mut(dst, cols);
                ops::add_u8_inplace(row, skip, add.params, row_vec);
            }
            continue;
        }
        let rs = _mm256_set1_epi32(row_sums[i]);
        let src = tile[i * ld_tile..][..cols].as_ptr();
        for j in (0..full16).step_by(16) {
            // SAFETY: `j + 16 ≤ cols`: every access is inside its row or column slice.
            unsafe {
                let one = |j: usize| {
                    // f32(q) = rne(clamp(y)) + zp, exact in f32 (small integers): round in
                    // float, as the AVX-512 epilogue does.
                    let y = _mm256_min_ps(_mm256_max_ps(product8::<true>(src, j, rs, p), lo), hi);
                    let rounded =
                        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
                    let fa = _mm256_add_ps(rounded, zpf);
                    let sb = _mm_loadl_epi64(skip.as_ptr().add(j) as *const __m128i);
                    let fb = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sb));
                    ops::add_lanes(fa, fb, &k)
                };
                // Both halves are in 0..=255: the saturating packs are plain narrowings;
                // `_mm_shuffle_epi32::<0xD8>` undoes their lane interleave.
                let w = _mm256_packs_epi32(one(j), one(j + 8));
                let b =
                    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                _mm_storeu_si128(dst.add(j) as *mut __m128i, _mm_shuffle_epi32::<0xD8>(b));
            }
        }
        for j in (full16..full).step_by(8) {
            // SAFETY: `j + 8 ≤ cols`: every 8-lane access is inside its row or column slice.
            unsafe {
                let q = _mm256_add_epi32(requant8(src, j, rs, p, lo, hi), zp);
                let sb = _mm_loadl_epi64(skip.as_ptr().add(j) as *const __m128i);
                let fb = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sb));
                store8(dst.add(j), ops::add_lanes(_mm256_cvtepi32_ps(q), fb, &k));
            }
        }
        for j in full..cols {
            let wz = p.w_zp.map_or(0, |z| z[j]);
            let raw = correct(tile[i * ld_tile + j], p.col_term[j], row_sums[i], wz);
            // Every element of this row is below `vec_len` (checked above).
            let v = add.params.vector_elem(requant_one(raw, j, p), skip[j]);
            // SAFETY: `j < cols` in row `i < rows` of the caller's output.
            unsafe { *dst.add(j) = v };
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
    /// Full 64-column tiles (the AVX-512 register-resident, pack-narrowing path, with and
    /// without the NaN guard) against the reference formula on edge values: ties, values just
    /// inside/outside the clamp bounds, ±inf products from finite constants, `i32` extremes,
    /// biases at the guard-free limit `±2^126` and beyond, NaN/inf multipliers, every zero point
    /// class, ReLU, `qmax < 255`, weight zero points and strided tiles/outputs.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "exhaustive SIMD battery: hours under Miri, which runs only the scalar ISA; covered natively on every ISA"
    )]
    fn tile64_matches_reference_on_edge_values() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let raws = [
            0,
            1,
            -1,
            2,
            -2,
            3,
            -3,
            5,
            -5,
            255,
            256,
            -255,
            -256,
            509,
            511,
            -509,
            65_535,
            -65_536,
            (1 << 24) + 1,
            -(1 << 24) - 1,
            i32::MAX,
            i32::MIN,
            i32::MAX - 1,
            i32::MIN + 1,
        ];
        let finite_mults = [
            0.5,
            1.0,
            -0.5,
            -1.0,
            0.0,
            -0.0,
            1.0e-3,
            3.7e-5,
            0.25,
            1.5,
            1.0e30,
            -1.0e30,
            f32::MAX,
            f32::MIN_POSITIVE,
            1.0e-40,
        ];
        let bad_mults = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let two126 = f32::from_bits(0x7E80_0000);
        let finite_biases = [
            0.0, 0.5, -0.5, 1.5, -2.5, 1.0e12, -1.0e12, two126, -two126, 127.5,
        ];
        let bad_biases = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            two126 * 1.0001,
        ];
        let zps = [0, 1, 2, 127, 128, 200, 254, 255];
        let pick = |v: u64, n: usize| (v % n as u64) as usize;
        for case in 0..3000 {
            let (rows, ld_tile, ldc) = match case % 3 {
                0 => (6, 64, 64),
                1 => (1 + case % 6, 72, 80),
                _ => (4, 64, 130),
            };
            let guard_case = case % 4 >= 2; // with and without ReLU
            let tile: Vec<i32> = (0..rows * ld_tile)
                .map(|_| {
                    let v = next();
                    if v % 3 == 0 {
                        (v >> 8) as i32 % 1000
                    } else {
                        raws[pick(v >> 8, raws.len())]
                    }
                })
                .collect();
            let col_term: Vec<i32> = (0..64)
                .map(|_| match next() % 4 {
                    0 => 0,
                    1 => 1,
                    2 => -1,
                    _ => (next() % 2001) as i32 - 1000,
                })
                .collect();
            let w_zp: Vec<i32> = (0..64).map(|_| (next() % 5) as i32 - 2).collect();
            let mult: Vec<f32> = (0..64)
                .map(|_| {
                    let v = next();
                    if guard_case && v % 7 == 0 {
                        bad_mults[pick(v >> 8, bad_mults.len())]
                    } else {
                        finite_mults[pick(v >> 8, finite_mults.len())]
                    }
                })
                .collect();
            let bias: Vec<f32> = (0..64)
                .map(|_| {
                    let v = next();
                    if guard_case && v % 5 == 0 {
                        bad_biases[pick(v >> 8, bad_biases.len())]
                    } else {
                        finite_biases[pick(v >> 8, finite_biases.len())]
                    }
                })
                .collect();
            let row_sums: Vec<i32> = (0..rows).map(|_| (next() % 70_000) as i32).collect();
            let out_zp = zps[pick(next(), zps.len())];
            let qmin = if case % 2 == 0 { out_zp } else { 0 };
            let qmax = if case % 5 == 4 { qmin.max(200) } else { 255 };
            let p = RequantCols {
                col_term: &col_term,
                w_zp: (case % 7 == 1).then_some(&w_zp[..]),
                bias: (case % 6 != 5).then_some(&bias[..]),
                mult: &mult,
                out_zp,
                qmin,
                qmax,
            };
            let rq = qkernels_ref::RequantParams {
                mult: mult.clone(),
                bias_acc: p.bias.map(<[f32]>::to_vec),
                out_zp,
                qmin,
                qmax,
            };
            let mut want = vec![0xA5u8; (rows - 1) * ldc + 64];
            for i in 0..rows {
                for j in 0..64 {
                    let raw = qkernels_ref::gemm::zero_point_correction(
                        tile[i * ld_tile + j],
                        1,
                        col_term[j],
                        row_sums[i],
                        p.w_zp.map_or(0, |z| z[j]),
                    );
                    want[i * ldc + j] = rq.apply(raw, j);
                }
            }
            // The fused residual add on the same tile (vector formula everywhere; the add's
            // in-range path or not, with or without its ReLU).
            let s_add = 0.009_925_744_5_f32;
            let ap = match case % 3 {
                0 => AddParams::new(s_add, 75, s_add, 61, 2.0 * s_add, 56, case % 2 == 0),
                1 => AddParams::new(0.02, 3, 0.015, 200, 0.03, 10, false),
                _ => AddParams::new(1.0e-3, 128, 0.5, 0, 1.0e-4, 255, true),
            };
            let skip: Vec<u8> = (0..rows * ldc).map(|_| next() as u8).collect();
            let mut want_add = vec![0xA5u8; want.len()];
            for i in 0..rows {
                for j in 0..64 {
                    want_add[i * ldc + j] = ap.vector_elem(want[i * ldc + j], skip[i * ldc + j]);
                }
            }
            let add = TileAdd {
                skip: &skip,
                ldskip: ldc,
                params: &ap,
                vec_len: usize::MAX,
            };
            for isa in Isa::supported() {
                let mut got = vec![0xA5u8; want.len()];
                requant_tile(isa, &tile, ld_tile, rows, 64, &row_sums, &p, &mut got, ldc);
                assert_eq!(got, want, "{isa} case={case}");
                let mut got = vec![0xA5u8; want.len()];
                // SAFETY: `got` holds (rows − 1)·ldc + 64 bytes, exclusively borrowed; `skip`
                // is a separate buffer.
                unsafe {
                    Epilogue::new(isa).requant_add_tile_raw(
                        &tile,
                        ld_tile,
                        rows,
                        64,
                        &row_sums,
                        &p,
                        &add,
                        got.as_mut_ptr(),
                        ldc,
                    )
                };
                assert_eq!(got, want_add, "{isa} add case={case}");
            }
        }
    }

    /// The fused residual epilogue against requant-then-add element by element, with every
    /// element on a (conv value, skip) pair where PyTorch's vector and scalar add formulas give
    /// different bytes, so each position of the formula split (`vec_len`, counted on the flat
    /// index `i·ldc + j`) is checked, on every ISA, with partial rows, ReLU and strided rows.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "exhaustive SIMD battery: hours under Miri, which runs only the scalar ISA; covered natively on every ISA"
    )]
    fn fused_add_epilogue_applies_the_formula_rule_per_flat_index() {
        // so = 2·sa: the two formulas disagree on 2.8 % of the pairs (docs/semantics.md).
        let s = 0.009_925_744_5_f32;
        for relu in [false, true] {
            let ap = AddParams::new(s, 75, s, 61, 2.0 * s, 56, relu);
            let pairs: Vec<(u8, u8)> = (0..=255u8)
                .flat_map(|a| (0..=255u8).map(move |b| (a, b)))
                .filter(|&(a, b)| ap.vector_elem(a, b) != ap.scalar_elem(a, b))
                .collect();
            assert!(pairs.len() > 100);
            let out_zp = 3;
            let mut next = 0usize;
            for (rows, cols) in [
                (1, 1),
                (2, 7),
                (3, 8),
                (6, 9),
                (2, 16),
                (5, 17),
                (4, 33),
                (6, 64),
            ] {
                for pad in [0usize, 5] {
                    let (ldc, ld_tile, ldskip) = (cols + pad, cols + 1, cols + 2 * pad);
                    let mut tile = vec![0i32; rows * ld_tile];
                    let mut skip = vec![0u8; rows * ldskip];
                    let mut conv = vec![0u8; rows * cols];
                    for i in 0..rows {
                        for j in 0..cols {
                            let (a, b) = pairs[next % pairs.len()];
                            next += 7;
                            // mult 1, no bias, no correction: requant(acc) = acc + out_zp.
                            tile[i * ld_tile + j] = i32::from(a) - out_zp;
                            skip[i * ldskip + j] = b;
                            conv[i * cols + j] = a;
                        }
                    }
                    let zero = vec![0i32; cols];
                    let mult = vec![1.0f32; cols];
                    let p = RequantCols {
                        col_term: &zero,
                        w_zp: None,
                        bias: None,
                        mult: &mult,
                        out_zp,
                        qmin: 0,
                        qmax: 255,
                    };
                    let row_sums = vec![0i32; rows];
                    let last = (rows - 1) * ldc + cols;
                    let mut splits: Vec<usize> = (0..=last + 1).collect();
                    splits.push(usize::MAX);
                    for vec_len in splits {
                        let want: Vec<u8> = (0..rows * ldc)
                            .map(|t| {
                                let (i, j) = (t / ldc, t % ldc);
                                if j >= cols {
                                    return 0xEE;
                                }
                                let (a, b) = (conv[i * cols + j], skip[i * ldskip + j]);
                                if t < vec_len {
                                    ap.vector_elem(a, b)
                                } else {
                                    ap.scalar_elem(a, b)
                                }
                            })
                            .collect();
                        let add = TileAdd {
                            skip: &skip,
                            ldskip,
                            params: &ap,
                            vec_len,
                        };
                        for isa in Isa::supported() {
                            let mut got = vec![0xEEu8; rows * ldc];
                            // SAFETY: `got` holds rows × ldc bytes, exclusively borrowed.
                            unsafe {
                                Epilogue::new(isa).requant_add_tile_raw(
                                    &tile,
                                    ld_tile,
                                    rows,
                                    cols,
                                    &row_sums,
                                    &p,
                                    &add,
                                    got.as_mut_ptr(),
                                    ldc,
                                )
                            };
                            assert_eq!(
                                got, want,
                                "{isa} rows={rows} cols={cols} ldc={ldc} vec_len={vec_len} relu={relu}"
                            );
                        }
                    }
                }
            }
        }
    }
    /// Every (conv value, skip) pair through the fused epilogue on every ISA, for qparams on both
    /// sides of [`AddParams::conversion_in_range`] (the guard-free fast path and the guarded one)
    /// and both formulas.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "exhaustive SIMD battery: hours under Miri, which runs only the scalar ISA; covered natively on every ISA"
    )]
    fn fused_add_epilogue_matches_the_formulas_on_all_pairs() {
        let s = 0.009_925_744_5_f32;
        let params = [
            AddParams::new(s, 75, s, 61, 2.0 * s, 56, false),
            AddParams::new(s, 75, 0.0278, 61, 0.0301, 56, true),
            // |t| up to ≈ 2.55e9: out of range, guarded path.
            AddParams::new(1.0, 0, 1.0, 255, 1.0e-7, 128, false),
            AddParams::new(1.0, 255, 1.0, 0, 1.0e-7, 3, true),
            // inside the bound (|t| ≤ ≈ 7.7e8).
            AddParams::new(1.0, 255, 1.0, 0, 1.0e-6, 0, true),
            AddParams::new(1.0e-3, 3, 2.0e3, 250, 7.0, 200, false),
        ];
        assert!(params[0].conversion_in_range() && !params[2].conversion_in_range());
        assert!(params[4].conversion_in_range() && !params[3].conversion_in_range());
        let (rows, cols) = (1024, 64);
        let out_zp = 0;
        let tile: Vec<i32> = (0..rows * cols).map(|t| (t / 256) as i32).collect();
        let skip: Vec<u8> = (0..rows * cols).map(|t| (t % 256) as u8).collect();
        let zero = vec![0i32; cols];
        let mult = vec![1.0f32; cols];
        let p = RequantCols {
            col_term: &zero,
            w_zp: None,
            bias: None,
            mult: &mult,
            out_zp,
            qmin: 0,
            qmax: 255,
        };
        let row_sums = vec![0i32; rows];
        for ap in &params {
            for vec_len in [0, usize::MAX] {
                let want: Vec<u8> = (0..rows * cols)
                    .map(|t| {
                        let (a, b) = ((t / 256) as u8, (t % 256) as u8);
                        if vec_len > 0 {
                            ap.vector_elem(a, b)
                        } else {
                            ap.scalar_elem(a, b)
                        }
                    })
                    .collect();
                let add = TileAdd {
                    skip: &skip,
                    ldskip: cols,
                    params: ap,
                    vec_len,
                };
                for isa in Isa::supported() {
                    let mut got = vec![0u8; rows * cols];
                    // SAFETY: `got` holds rows × cols bytes, exclusively borrowed.
                    unsafe {
                        Epilogue::new(isa).requant_add_tile_raw(
                            &tile,
                            cols,
                            rows,
                            cols,
                            &row_sums,
                            &p,
                            &add,
                            got.as_mut_ptr(),
                            cols,
                        )
                    };
                    assert_eq!(got, want, "{isa} {ap:?} vec_len={vec_len}");
                }
            }
        }
    }
}
