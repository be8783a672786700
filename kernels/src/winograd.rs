//! Exact integer Winograd F(2×2, 3×3) building blocks (3×3, stride 1, dilation 1, one group).
//!
//! A 2×2 output tile is computed from a 4×4 input patch `d` (per input channel) and the 3×3
//! kernel `g` (per output/input channel pair) as `Y = Aᵀ [Σ_ic (G g Gᵀ) ⊙ (Bᵀ d B)] A` with
//!
//! ```text
//!  Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]     Aᵀ = [[1,1,1,0],[0,1,-1,-1]]
//!  G' = 2G = [[2,0,0],[1,1,1],[1,-1,1],[0,0,2]]
//! ```
//!
//! **Why it is exact.** With the scaled weight transform `G' = 2G`, `U = G' g G'ᵀ` is an integer
//! matrix (`|U| ≤ 3·3·128 = 1152`: every row of `G'` has absolute sum ≤ 3), so it fits i16. The
//! input transform `V = Bᵀ d B` of u8 inputs only adds and subtracts (every row of `Bᵀ` has two
//! non-zero ±1 entries), so `|V| ≤ 4·255 = 1020` fits i16. `M = Σ_ic U ⊙ V` is accumulated in
//! i32 with wrapping adds (`vpmaddwd` on i16 pairs, `|U·V| ≤ 1 175 040`, pair sums fit i32) and
//! `Y' = Aᵀ M A` with wrapping adds. Every step is a ring operation, so `Y'` equals the true
//! `4·Σ x·w` modulo 2³²; the true value fits i32 whenever `IC ≤ 1024`
//! (`4·9·1024·255·128 < 2³¹`), so the wrapped result *is* the exact value and
//! `conv = Y' >> 2` (arithmetic shift of a multiple of 4) is exact. The engine is only used
//! under that bound.
//!
//! **Zero points.** Padding pixels hold the input zero point `zx` (PyTorch pads quantized conv
//! with it), so the tile computes `Σ x·w` over raw u8 `x` exactly as the GEMM path's
//! accumulator does, and the usual correction `Σ(x − zx)·w = Σ x·w − zx·Σ w` is the GEMM
//! epilogue's per-column `col_term`. Weight zero points would need per-pixel row sums: not
//! supported (the caller falls back to the GEMM path).
//!
//! Layouts (all in the caller's own buffers, `ICp`/`OCp` = channels rounded up to 16):
//!
//! * packed `U`: `[ξ = 0..16][OCp/16 panels][ICp/2 pairs][16 columns][2]` i16 — for each `ξ`
//!   the c2 i16 `B` layout of the exact AVX2 GEMM kernel (`pack_b_c2_i16::<16>`);
//! * `V`: `[ξ][tile][ICp]` i16 — for each `ξ` a row-major `A` whose 6-row panels are read in
//!   place by the GEMM kernel (row `i` at `2·i·ICp` bytes);
//! * `M`: per block of `NB` output channels, `[tile][ξ][NB]` i32 (the GEMM writes row `t` of
//!   product `ξ` at `(16t + ξ)·NB`).

use crate::isa::Isa;

/// Rows of the i16 GEMM microkernel.
pub const MR: usize = 6;
/// Columns of the i16 GEMM microkernel.
pub const NR: usize = 16;

/// Channel count rounded up to the SIMD/packing granule (16).
pub const fn padded_channels(c: usize) -> usize {
    c.div_ceil(16) * 16
}

/// `U = G' g G'ᵀ` for one 3×3 kernel `g` (row-major), as 16 values `U[a][b]` (`ξ = 4a + b`).
pub fn weight_tile(g: &[i8]) -> [i16; 16] {
    const GP: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];
    let mut t = [[0i32; 3]; 4]; // G' g
    for (a, row) in t.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| GP[a][k] * i32::from(g[k * 3 + c])).sum();
        }
    }
    let mut u = [0i16; 16];
    for a in 0..4 {
        for b in 0..4 {
            let v: i32 = (0..3).map(|k| t[a][k] * GP[b][k]).sum();
            debug_assert!(v.abs() <= 1152);
            u[a * 4 + b] = v as i16;
        }
    }
    u
}

/// Transforms and packs OIHW 3×3 weights `[oc][ic][3][3]` into the packed `U` layout (module
/// docs); padded channels are 0.
pub fn pack_weights(w_oihw: &[i8], oc: usize, ic: usize) -> Vec<i16> {
    assert_eq!(w_oihw.len(), oc * ic * 9);
    let (icp, ocp) = (padded_channels(ic), padded_channels(oc));
    let mut u = vec![0i16; 16 * ocp * icp];
    for o in 0..oc {
        for i in 0..ic {
            let t = weight_tile(&w_oihw[(o * ic + i) * 9..][..9]);
            let (p, j) = (o / NR, o % NR);
            for (xi, &v) in t.iter().enumerate() {
                let off = ((xi * (ocp / NR) + p) * (icp / 2) + i / 2) * (NR * 2) + j * 2 + i % 2;
                u[off] = v;
            }
        }
    }
    u
}

/// Scalar reference of the i16 GEMM microkernel: `c[i·rs_c + j] = Σ_k a[i·kc + k]·B[k][j]` for
/// `i < mr`, `j < nr`, `B` one c2 i16 panel of [`NR`] columns (wrapping i32).
pub fn s16s16s32_gemm_scalar(
    kc: usize,
    a: &[i16],
    b: &[i16],
    c: &mut [i32],
    rs_c: usize,
    mr: usize,
    nr: usize,
) {
    assert!(kc.is_multiple_of(2) && mr <= MR && nr <= NR);
    assert!(b.len() >= kc * NR && (mr == 0 || a.len() >= mr * kc));
    for i in 0..mr {
        for j in 0..nr {
            let mut s = 0i32;
            for k in 0..kc {
                let bv = b[(k / 2) * NR * 2 + j * 2 + k % 2];
                s = s.wrapping_add(i32::from(a[i * kc + k]) * i32::from(bv));
            }
            c[i * rs_c + j] = s;
        }
    }
}

/// Exact AVX2 i16×i16→i32 GEMM microkernel, 6×16 tile, c2 layout: `A` = `MR` i16 rows of `kc`
/// (row `i` at `a + i·kc`), `B` one c2 i16 panel ([`pack_weights`]); stores (overwrites) the
/// `mr × nr` corner of the tile at `c` with row stride `rs_c`.
///
/// This is the exact u8×i8 kernel `u8s8s32_gemm_avx2_6x16c2`'s code: its A pairs are broadcast
/// as i32 and multiplied with `vpmaddwd`, which treats both operands as signed i16, so the same
/// loop (register allocation documented there: 12 accumulators, 2 B vectors, 1 broadcast)
/// computes the i16×i16 product; all `MR` rows of `A` are read.
///
/// # Safety
/// AVX2 is available; `a` is readable for `MR·kc` i16, `b` for `kc·NR` i16, `c` writable at
/// `c[i·rs_c + j]` for `i < mr`, `j < nr`; `kc` even, `1 ≤ mr ≤ 6`, `1 ≤ nr ≤ 16`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn s16s16s32_gemm_avx2_6x16c2(
    kc: usize,
    a: *const i16,
    b: *const i16,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
) {
    debug_assert!(kc.is_multiple_of(2) && (1..=MR).contains(&mr) && (1..=NR).contains(&nr));
    // SAFETY: forwarded contract; the kernel's u16 A panel layout (row i at byte 2·i·kc) is
    // exactly `MR` i16 rows of `kc`.
    unsafe {
        crate::gemm::x86_avx2::ukernel_exact::<6, 2>(
            kc,
            a as *const u8,
            b as *const u8,
            c,
            rs_c,
            mr,
            nr,
            false,
        )
    }
}

/// Input transform of one tile: `d` = the 4×4 patch whose pixel `(r, s)` starts at
/// `img[base + r·ld_row + s·icp]` (`icp` u8 channels, a multiple of 16); writes
/// `V[ξ] = (Bᵀ d B)[ξ]` at `v[ξ·ld_xi + c]` for `c < icp`.
#[allow(clippy::needless_range_loop)] // matrix formulas read best indexed
pub fn input_tile(
    isa: Isa,
    img: &[u8],
    base: usize,
    ld_row: usize,
    icp: usize,
    v: &mut [i16],
    ld_xi: usize,
) {
    assert!(icp.is_multiple_of(16) && ld_xi >= icp);
    assert!(base + 3 * ld_row + 4 * icp <= img.len());
    assert!(15 * ld_xi + icp <= v.len());
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && Isa::Avx2.is_supported() {
        // SAFETY: AVX2 checked; every access is inside the bounds asserted above.
        unsafe { input_tile_avx2(img.as_ptr().add(base), ld_row, icp, v.as_mut_ptr(), ld_xi) };
        return;
    }
    let _ = isa;
    for c in 0..icp {
        let d = |r: usize, s: usize| i16::from(img[base + r * ld_row + s * icp + c]);
        let mut t = [[0i16; 4]; 4]; // Bᵀ d
        for s in 0..4 {
            t[0][s] = d(0, s) - d(2, s);
            t[1][s] = d(1, s) + d(2, s);
            t[2][s] = d(2, s) - d(1, s);
            t[3][s] = d(1, s) - d(3, s);
        }
        for (r, row) in t.iter().enumerate() {
            let o = [
                row[0] - row[2],
                row[1] + row[2],
                row[2] - row[1],
                row[1] - row[3],
            ];
            for (b, &x) in o.iter().enumerate() {
                v[(r * 4 + b) * ld_xi + c] = x;
            }
        }
    }
}

/// # Safety
/// AVX2; `img` readable at `r·ld_row + s·icp + c` for `r, s < 4`, `c < icp`; `v` writable at
/// `ξ·ld_xi + c` for `ξ < 16`, `c < icp`; `icp % 16 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)] // matrix formulas read best indexed
unsafe fn input_tile_avx2(img: *const u8, ld_row: usize, icp: usize, v: *mut i16, ld_xi: usize) {
    use std::arch::x86_64::*;
    let mut c = 0;
    while c < icp {
        // SAFETY: 16 channels of pixel (r, s) are inside the patch (caller's contract).
        let ld = |r: usize, s: usize| unsafe {
            _mm256_cvtepu8_epi16(_mm_loadu_si128(
                img.add(r * ld_row + s * icp + c) as *const __m128i
            ))
        };
        let mut t = [[_mm256_setzero_si256(); 4]; 4];
        for s in 0..4 {
            let (d0, d1, d2, d3) = (ld(0, s), ld(1, s), ld(2, s), ld(3, s));
            t[0][s] = _mm256_sub_epi16(d0, d2);
            t[1][s] = _mm256_add_epi16(d1, d2);
            t[2][s] = _mm256_sub_epi16(d2, d1);
            t[3][s] = _mm256_sub_epi16(d1, d3);
        }
        for (r, row) in t.iter().enumerate() {
            let o = [
                _mm256_sub_epi16(row[0], row[2]),
                _mm256_add_epi16(row[1], row[2]),
                _mm256_sub_epi16(row[2], row[1]),
                _mm256_sub_epi16(row[1], row[3]),
            ];
            for (b, x) in o.iter().enumerate() {
                // SAFETY: ξ = 4r + b < 16, channels c..c+16 < icp (caller's contract).
                unsafe { _mm256_storeu_si256(v.add((r * 4 + b) * ld_xi + c) as *mut __m256i, *x) };
            }
        }
        c += 16;
    }
}

/// Output transform of one tile: `m[ξ·ld_xi + j]` (the 16 products of the tile, `n` columns, a
/// multiple of 8) → the 2×2 outputs `(Aᵀ M A) >> 2` (wrapping adds, exact: module docs), pixel
/// `(dy, dx)` written at `y[off[dy] + dx·ld_px + j]` for `j < n`.
#[allow(clippy::needless_range_loop)] // matrix formulas read best indexed
pub fn output_tile(
    isa: Isa,
    m: &[i32],
    ld_xi: usize,
    n: usize,
    y: &mut [i32],
    off: [usize; 2],
    ld_px: usize,
) {
    assert!(n.is_multiple_of(8) && ld_xi >= n && ld_px >= n);
    assert!(m.len() >= 15 * ld_xi + n);
    assert!(off[0] + ld_px + n <= y.len() && off[1] + ld_px + n <= y.len());
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && Isa::Avx2.is_supported() {
        // SAFETY: AVX2 checked; accesses inside the bounds asserted above.
        unsafe { output_tile_avx2(m.as_ptr(), ld_xi, n, y.as_mut_ptr(), off, ld_px) };
        return;
    }
    let _ = isa;
    for j in 0..n {
        let g = |xi: usize| m[xi * ld_xi + j];
        let mut s = [[0i32; 4]; 2]; // Aᵀ M
        for c in 0..4 {
            s[0][c] = g(c).wrapping_add(g(4 + c)).wrapping_add(g(8 + c));
            s[1][c] = g(4 + c).wrapping_sub(g(8 + c)).wrapping_sub(g(12 + c));
        }
        for (dy, r) in s.iter().enumerate() {
            let y0 = r[0].wrapping_add(r[1]).wrapping_add(r[2]);
            let y1 = r[1].wrapping_sub(r[2]).wrapping_sub(r[3]);
            y[off[dy] + j] = y0 >> 2;
            y[off[dy] + ld_px + j] = y1 >> 2;
        }
    }
}

/// # Safety
/// AVX2; `m` readable at `ξ·ld_xi + j` for `ξ < 16`, `j < n`; `y` writable at
/// `off[dy] + dx·ld_px + j` for `dy, dx < 2`, `j < n`; `n % 8 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)] // matrix formulas read best indexed
unsafe fn output_tile_avx2(
    m: *const i32,
    ld_xi: usize,
    n: usize,
    y: *mut i32,
    off: [usize; 2],
    ld_px: usize,
) {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j < n {
        // SAFETY: product ξ < 16, columns j..j+8 < n (caller's contract).
        let g = |xi: usize| unsafe { _mm256_loadu_si256(m.add(xi * ld_xi + j) as *const __m256i) };
        let mut s = [[_mm256_setzero_si256(); 4]; 2];
        for c in 0..4 {
            let (a, b, cc, d) = (g(c), g(4 + c), g(8 + c), g(12 + c));
            s[0][c] = _mm256_add_epi32(_mm256_add_epi32(a, b), cc);
            s[1][c] = _mm256_sub_epi32(_mm256_sub_epi32(b, cc), d);
        }
        for (dy, r) in s.iter().enumerate() {
            let y0 = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), r[2]);
            let y1 = _mm256_sub_epi32(_mm256_sub_epi32(r[1], r[2]), r[3]);
            // SAFETY: pixel dx = 0, 1 of row dy, columns j..j+8 (caller's contract).
            unsafe {
                _mm256_storeu_si256(
                    y.add(off[dy] + j) as *mut __m256i,
                    _mm256_srai_epi32::<2>(y0),
                );
                _mm256_storeu_si256(
                    y.add(off[dy] + ld_px + j) as *mut __m256i,
                    _mm256_srai_epi32::<2>(y1),
                );
            }
        }
        j += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 "valid" correlation of a 4×4 patch vs. the transforms (one channel pair).
    #[test]
    fn one_tile_is_exact() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for _ in 0..2000 {
            let d: Vec<u8> = (0..16).map(|_| rnd() as u8).collect();
            let g: Vec<i8> = (0..9).map(|_| rnd() as i8).collect();
            let u = weight_tile(&g);
            let mut v = vec![0i16; 16 * 16];
            let mut img = vec![0u8; 16 * 16];
            for (p, &x) in d.iter().enumerate() {
                img[p * 16] = x;
            }
            input_tile(Isa::Scalar, &img, 0, 64, 16, &mut v, 16);
            let mut m = vec![0i32; 16 * 16];
            for xi in 0..16 {
                m[xi * 16] = i32::from(u[xi]) * i32::from(v[xi * 16]);
            }
            let mut y = vec![0i32; 64];
            output_tile(Isa::Scalar, &m, 16, 16, &mut y, [0, 32], 16);
            for oy in 0..2 {
                for ox in 0..2 {
                    let want: i32 = (0..9)
                        .map(|k| i32::from(d[(oy + k / 3) * 4 + ox + k % 3]) * i32::from(g[k]))
                        .sum();
                    assert_eq!(y[oy * 32 + ox * 16], want);
                }
            }
        }
    }
}
