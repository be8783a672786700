//! AVX-512 VNNI GEMM microkernels.
//!
//! **Exact kernels.** `vpdpbusd` multiplies 4 u8 × 4 i8 and adds the four products to an i32 lane
//! with a wrapping add and no intermediate saturation (unlike `vpdpbusds` or `vpmaddubsw`): the
//! exact library contract, 64 MAC per zmm instruction. B uses the default c4 byte layout (see
//! [`super`]): per K group of 4, the B panel holds `NR` columns × 4 bytes = `NR/16` zmm vectors.
//! A panels are row-major ([`super::x86_pack`]): each A row contributes one broadcast i32 per
//! K group. Zen 4 executes zmm `vpdpbusd` at 1/cycle
//! (latency ≈ 4), so any tile with ≥ 8 accumulators is latency-safe; the production tile is
//! chosen by measurement (see `docs/performance.md`).
//!
//! **Saturating kernels (`_sat16`).** fbgemm's AVX-512 (non-VNNI) sequence `vpmaddubsw` →
//! `vpmaddwd(·, 1)` → `vpaddd` on zmm (AVX-512BW), on the same c4 layout: each i16 lane of
//! `vpmaddubsw` saturates exactly the pair `(2t, 2t+1)` of K that `qkernels_ref` saturates.
//!
//! **GEMV kernels (`1x32…`).** One row, same packed-B layout as the 32-column tiles (the driver
//! uses them for M = 1 with the same `PackedWeights`), four independent accumulator sets over K
//! to hide the `vpdpbusd` latency.
//!
//! Partial tiles use AVX-512 masked loads/stores: lanes `≥ nr` are neither read nor written.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::x86_pack::{pack_a_rows_u8, rows_u8_panel_bytes};
use super::{GemmKernel, IgemmKernel, Prefetch, ckr_panel_bytes, pack_b_ckr};
use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::requant::{Deferred, Tile64, deferred_row64, requant_acc64};

/// Writes (or adds) one row of `NV` zmm accumulators to `c[0..nr]` with masked stores.
///
/// # Safety
/// `c` is valid for reads and writes of `nr ≤ 16·NV` i32; AVX-512F is available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_row<const NV: usize>(
    acc: &[__m512i; NV],
    c: *mut i32,
    nr: usize,
    accumulate: bool,
) {
    if nr == 16 * NV {
        // Full row: plain stores (masked stores do not forward to the epilogue's loads).
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `16·NV = nr` i32 are writable from `c`.
            unsafe {
                let p = c.add(16 * v) as *mut __m512i;
                let x = if accumulate {
                    _mm512_add_epi32(*a, _mm512_loadu_si512(p))
                } else {
                    *a
                };
                _mm512_storeu_si512(p, x);
            }
        }
        return;
    }
    for (v, a) in acc.iter().enumerate() {
        let lanes = nr.saturating_sub(16 * v).min(16);
        if lanes == 0 {
            break;
        }
        let mask: __mmask16 = if lanes == 16 {
            0xFFFF
        } else {
            (1u16 << lanes) - 1
        };
        // SAFETY: `16·v < nr`, so `c + 16·v` is inside the row; masked lanes (`≥ nr`) are not
        // accessed by masked loads/stores.
        unsafe {
            let p = c.add(16 * v);
            let x = if accumulate {
                _mm512_add_epi32(*a, _mm512_maskz_loadu_epi32(mask, p))
            } else {
                *a
            };
            _mm512_mask_storeu_epi32(p, mask, x);
        }
    }
}

/// One K group: `acc += A·B` for one row and one vector, exact or fbgemm-saturating.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VNNI (only called from such `#[target_feature]` kernels).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn madd4<const SAT: bool>(acc: __m512i, va: __m512i, vb: __m512i, ones: __m512i) -> __m512i {
    // SAFETY: value-only intrinsics; ISA support is the caller's contract.
    unsafe {
        if SAT {
            let t = _mm512_maddubs_epi16(va, vb);
            _mm512_add_epi32(acc, _mm512_madd_epi16(t, ones))
        } else {
            _mm512_dpbusd_epi32(acc, va, vb)
        }
    }
}

// Register allocation, MR = 8, NV = 2 (NR = 32), per K group g of 4:
//
//   B (c4 bytes)    zmm16 = W[0..16][4g..4g+4]     zmm17 = W[16..32][4g..4g+4]
//   A broadcast     zmm18 = A[i][4g..4g+4] in every i32 lane (row-major A panel: row i at i·kc)
//   accumulators    zmm0  zmm1    row 0   (vacc0x0…F, vacc0x10…1F)
//                   zmm2  zmm3    row 1
//                   …             …
//                   zmm14 zmm15   row 7
//
//   acc[i][v] = vpdpbusd(acc[i][v], A_i, B_v)       16 vpdpbusd per 4 K (1024 MAC)
//   sat16: t = vpmaddubsw(A_i, B_v); acc += vpmaddwd(t, ones = zmm19)
//
// MR = 6, NV = 4 (6 × 64, production): zmm0–zmm23 accumulators (row i: zmm4i … zmm4i+3),
// zmm24–zmm27 B, zmm28 A broadcast; 24 vpdpbusd per 6 broadcasts + 4 B loads.
// MR = 14 (fbgemm's tile) uses zmm0–zmm27 for accumulators, two B and one broadcast register.
//
/// AVX-512 microkernel on the default c4 layout, `MR × 16·NV` tile.
///
/// # Safety
/// See [`super::GemmUkernel`]; panels from `pack_a_rows_u8::<MR, 4>` (row-major A, row `i` at
/// `i·kc`) / `pack_b_ckr::<{16·NV}, 4>`; the CPU supports AVX-512 F/BW/VL/VNNI.
///
/// A tile of `mr < MR` rows runs an `mr`-row instantiation of the same loop (dispatch on `mr`
/// for `mr ≤ 5`): it reads the first `mr` rows of the panel and does `mr/MR` of the work,
/// instead of computing MR rows and storing `mr` (ResNet's M = 3136 = 522·6 + 4 and
/// M = 49 = 8·6 + 1 end in such tiles). Same arithmetic per row, so same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn ukernel_zmm<const MR: usize, const NV: usize, const SAT: bool>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(4) && (1..=MR).contains(&mr) && (1..=16 * NV).contains(&nr));
    // SAFETY: `R ≤ mr ≤ MR` rows of the panel are read and stored (the caller's contract covers
    // MR rows); this function runs with AVX-512 F/BW/VL/VNNI.
    unsafe {
        match mr {
            1 => zmm_tile::<1, NV, SAT>(kc, a, b, c, rs_c, 1, nr, accumulate),
            2 => zmm_tile::<2, NV, SAT>(kc, a, b, c, rs_c, 2, nr, accumulate),
            3 => zmm_tile::<3, NV, SAT>(kc, a, b, c, rs_c, 3, nr, accumulate),
            4 => zmm_tile::<4, NV, SAT>(kc, a, b, c, rs_c, 4, nr, accumulate),
            5 => zmm_tile::<5, NV, SAT>(kc, a, b, c, rs_c, 5, nr, accumulate),
            _ => zmm_tile::<MR, NV, SAT>(kc, a, b, c, rs_c, mr, nr, accumulate),
        }
    }
}

/// One instantiation of [`ukernel_zmm`]'s loop over `R` rows, out of line: inlined into one
/// dispatching function, the instantiations shared a stack frame and the compiler kept some
/// accumulators in memory.
///
/// # Safety
/// As [`ukernel_zmm`] with MR = `R`, `mr ≤ R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_tile<const R: usize, const NV: usize, const SAT: bool>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe { zmm_rows::<R, NV, SAT>(kc, a, b, c, rs_c, mr, nr, accumulate) }
}

/// The loop of [`ukernel_zmm`] over `R` rows (row `i` of the A panel at `a + i·kc`), storing
/// the first `mr ≤ R` (`mr < R` only for the 8- and 14-row tiles with 6 ≤ `mr` < MR).
///
/// # Safety
/// As [`ukernel_zmm`] with MR = `R`; only called from AVX-512 VNNI `#[target_feature]` kernels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_rows<const R: usize, const NV: usize, const SAT: bool>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(mr <= R);
    // SAFETY: the caller's contract.
    let acc = unsafe { zmm_acc::<R, NV, SAT>(kc, kc, a, b) };
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row `i < mr` of the caller's tile holds `nr` writable i32.
        unsafe { store_row(row, c.add(i * rs_c), nr, accumulate) };
    }
}

/// The K loop of [`ukernel_zmm`]: the `R × 16·NV` accumulators of rows `0..R` of the A panel
/// (row `i` at `a + i·kc`), in registers. The storing ([`zmm_rows`]) and the requantizing
/// ([`zmm_requant_tile`]) entry points are built on it.
///
/// # Safety
/// As [`ukernel_zmm`] with MR = `R` (the `kc`, `a`, `b` parts); only called from AVX-512 VNNI
/// `#[target_feature]` kernels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn zmm_acc<const R: usize, const NV: usize, const SAT: bool>(
    kc: usize,
    lda: usize,
    a: *const u8,
    b: *const u8,
) -> [[__m512i; NV]; R] {
    // SAFETY: value-only intrinsics; ISA support is the caller's contract.
    let ones = unsafe { _mm512_set1_epi16(1) };
    // SAFETY: as above.
    let mut acc = [[unsafe { _mm512_setzero_si512() }; NV]; R];
    let mut pa = a;
    let mut pb = b;
    for _ in 0..kc / 4 {
        // SAFETY: value-only intrinsic; ISA support is the caller's contract.
        let mut vb = [unsafe { _mm512_setzero_si512() }; NV];
        for (v, x) in vb.iter_mut().enumerate() {
            // SAFETY: one K group of the B panel is NV·64 bytes, inside the panel.
            *x = unsafe { _mm512_loadu_si512(pb.add(64 * v) as *const __m512i) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row `i` of the A panel starts at `i·lda`; 4 bytes of it at this K group;
            // ISA support is the caller's contract.
            let va = unsafe { _mm512_set1_epi32((pa.add(i * lda) as *const i32).read_unaligned()) };
            for (r, x) in row.iter_mut().zip(&vb) {
                // SAFETY: this kernel runs with AVX-512 F/BW/VNNI.
                *r = unsafe { madd4::<SAT>(*r, va, *x, ones) };
            }
        }
        // SAFETY: advancing within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(4);
            pb = pb.add(64 * NV);
        }
    }
    acc
}

/// AVX-512 VNNI GEMM microkernel with the u8 epilogue fused (see [`super::GemmRequantUkernel`]):
/// the accumulators of a full `mr × 64` tile are requantized — and added to the residual, if
/// any — straight from registers by the tile epilogue's own code (`requant::requant_acc64`).
/// `MR ≤ 6` (a tile of `mr` rows runs the `mr`-row instantiation, as in [`ukernel_zmm`]).
///
/// # Safety
/// See [`super::GemmRequantUkernel`]; panels as in [`ukernel_zmm`] with NV = 4; the CPU
/// supports AVX-512 F/BW/VL/VNNI (and FMA, implied by [`Isa::Avx512Vnni`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn ukernel_zmm_requant<const MR: usize>(
    kc: usize,
    lda: usize,
    a: *const u8,
    b: *const u8,
    mr: usize,
    ep: &Tile64<'_>,
    out: *mut u8,
    ldc: usize,
) {
    debug_assert!(kc.is_multiple_of(4) && MR <= 6 && (1..=MR).contains(&mr) && ldc >= 64);
    debug_assert!(mr == 1 || lda > 0);
    // SAFETY: `R = mr ≤ MR` rows of the panel are read and stored (the caller's contract covers
    // MR rows); this function runs with AVX-512 F/BW/VL/VNNI + FMA.
    unsafe {
        match mr {
            1 => zmm_requant_tile::<1>(kc, lda, a, b, ep, out, ldc),
            2 => zmm_requant_tile::<2>(kc, lda, a, b, ep, out, ldc),
            3 => zmm_requant_tile::<3>(kc, lda, a, b, ep, out, ldc),
            4 => zmm_requant_tile::<4>(kc, lda, a, b, ep, out, ldc),
            5 => zmm_requant_tile::<5>(kc, lda, a, b, ep, out, ldc),
            _ => zmm_requant_tile::<MR>(kc, lda, a, b, ep, out, ldc),
        }
    }
}

/// One instantiation of [`ukernel_zmm_requant`] (`R` rows, 64 columns), out of line (see
/// [`zmm_tile`]).
///
/// # Safety
/// As [`ukernel_zmm_requant`] with `mr = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
#[inline(never)]
unsafe fn zmm_requant_tile<const R: usize>(
    kc: usize,
    lda: usize,
    a: *const u8,
    b: *const u8,
    ep: &Tile64<'_>,
    out: *mut u8,
    ldc: usize,
) {
    // SAFETY: the caller's contract; features enabled here.
    unsafe {
        let acc = zmm_acc::<R, 4, false>(kc, lda, a, b);
        requant_acc64::<R>(&acc, ep, out, ldc);
    }
}

// Register allocation, GEMV (MR = 1, NV = 2), per 4 K groups (g .. g+3):
//
//   B               zmm8 … zmm15 = W[·][4(g+u)..4(g+u)+4], u = 0..4, two vectors each
//   A broadcast     zmm16 … zmm19 = A[0][4(g+u)..]
//   accumulators    zmm0 … zmm7: set u = 0..4 × 2 vectors (8 independent chains), summed at the end
//
/// AVX-512 single-row kernel; same packed-B layout as [`ukernel_zmm`] with `NV` vectors.
///
/// # Safety
/// See [`super::GemmUkernel`]; panels from `pack_a_rows_u8::<1, 4>` / `pack_b_ckr::<{16·NV}, 4>`;
/// the CPU supports AVX-512 F/BW/VL/VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn ukernel_zmm_gemv<const NV: usize, const SAT: bool>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    _rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(4) && mr == 1 && (1..=16 * NV).contains(&nr));
    const U: usize = 4;
    let ones = _mm512_set1_epi16(1);
    let mut acc = [[_mm512_setzero_si512(); NV]; U];
    let groups = kc / 4;
    let mut pa = a;
    let mut pb = b;
    for _ in 0..groups / U {
        for (u, set) in acc.iter_mut().enumerate() {
            // SAFETY: U more K groups remain in both panels.
            let va = _mm512_set1_epi32(unsafe { (pa.add(4 * u) as *const i32).read_unaligned() });
            for (v, r) in set.iter_mut().enumerate() {
                // SAFETY: as above.
                let vb = unsafe { _mm512_loadu_si512(pb.add(64 * (u * NV + v)) as *const __m512i) };
                // SAFETY: this kernel runs with AVX-512 F/BW/VNNI.
                *r = unsafe { madd4::<SAT>(*r, va, vb, ones) };
            }
        }
        // SAFETY: advancing within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(4 * U);
            pb = pb.add(64 * NV * U);
        }
    }
    for _ in 0..groups % U {
        // SAFETY: one more K group remains in both panels.
        let va = _mm512_set1_epi32(unsafe { (pa as *const i32).read_unaligned() });
        for (v, r) in acc[0].iter_mut().enumerate() {
            // SAFETY: as above.
            let vb = unsafe { _mm512_loadu_si512(pb.add(64 * v) as *const __m512i) };
            // SAFETY: this kernel runs with AVX-512 F/BW/VNNI.
            *r = unsafe { madd4::<SAT>(*r, va, vb, ones) };
        }
        // SAFETY: advancing within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(4);
            pb = pb.add(64 * NV);
        }
    }
    let mut sum = acc[0];
    for set in &acc[1..] {
        for (s, x) in sum.iter_mut().zip(set) {
            *s = _mm512_add_epi32(*s, *x);
        }
    }
    // SAFETY: row 0 of the caller's tile holds `nr` writable i32.
    unsafe { store_row(&sum, c, nr, accumulate) };
}

macro_rules! zmm_kernel {
    ($(#[$doc:meta])* $id:ident, $name:literal, $mr:literal, $nv:literal, $sat:literal, $rq:expr) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        pub static $id: GemmKernel = GemmKernel {
            name: $name,
            isa: Isa::Avx512Vnni,
            saturating: $sat,
            a_max: 255,
            mr: $mr,
            nr: 16 * $nv,
            kr: 4,
            pack_a: pack_a_rows_u8::<$mr, 4>,
            pack_b: pack_b_ckr::<{ 16 * $nv }, 4>,
            a_panel_bytes: rows_u8_panel_bytes::<$mr, 4>,
            b_panel_bytes: ckr_panel_bytes::<{ 16 * $nv }, 4>,
            ukernel: ukernel_zmm::<$mr, $nv, $sat>,
            tail_rows: 5,
            ukernel_requant: $rq,
        };
    };
}

zmm_kernel!(
    /// Exact VNNI kernel, 8 × 32 tile (16 zmm accumulators).
    U8S8S32_GEMM_AVX512VNNI_8X32C4,
    "u8s8s32_gemm_avx512vnni_8x32c4",
    8,
    2,
    false,
    None
);
zmm_kernel!(
    /// Exact VNNI kernel, 14 × 32 tile (fbgemm's; 28 zmm accumulators).
    U8S8S32_GEMM_AVX512VNNI_14X32C4,
    "u8s8s32_gemm_avx512vnni_14x32c4",
    14,
    2,
    false,
    None
);
zmm_kernel!(
    /// Exact VNNI kernel, 6 × 64 tile (24 zmm accumulators, 4 B vectors per K group): the
    /// production tile (fewest broadcasts and stores per MAC; ResNet's N are multiples of 64).
    U8S8S32_GEMM_AVX512VNNI_6X64C4,
    "u8s8s32_gemm_avx512vnni_6x64c4",
    6,
    4,
    false,
    Some(ukernel_zmm_requant::<6>)
);
zmm_kernel!(
    /// fbgemm-saturating AVX-512BW kernel, 8 × 32 tile.
    U8S8S32_GEMM_AVX512VNNI_8X32C4_SAT16,
    "u8s8s32_gemm_avx512vnni_8x32c4_sat16",
    8,
    2,
    true,
    None
);

/// Exact VNNI GEMV kernel (M = 1); packed B identical to the `…x32c4` tiles.
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_GEMM_AVX512VNNI_1X32C4: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_avx512vnni_1x32c4",
    isa: Isa::Avx512Vnni,
    saturating: false,
    a_max: 255,
    mr: 1,
    nr: 32,
    kr: 4,
    pack_a: pack_a_rows_u8::<1, 4>,
    pack_b: pack_b_ckr::<32, 4>,
    a_panel_bytes: rows_u8_panel_bytes::<1, 4>,
    b_panel_bytes: ckr_panel_bytes::<32, 4>,
    ukernel: ukernel_zmm_gemv::<2, false>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// Exact VNNI GEMV kernel (M = 1); packed B identical to the `…x64c4` tiles.
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_GEMM_AVX512VNNI_1X64C4: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_avx512vnni_1x64c4",
    isa: Isa::Avx512Vnni,
    saturating: false,
    a_max: 255,
    mr: 1,
    nr: 64,
    kr: 4,
    pack_a: pack_a_rows_u8::<1, 4>,
    pack_b: pack_b_ckr::<64, 4>,
    a_panel_bytes: rows_u8_panel_bytes::<1, 4>,
    b_panel_bytes: ckr_panel_bytes::<64, 4>,
    ukernel: ukernel_zmm_gemv::<4, false>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// Saturating AVX-512BW GEMV kernel (M = 1); packed B identical to `…_8x32c4_sat16`.
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_GEMM_AVX512VNNI_1X32C4_SAT16: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_avx512vnni_1x32c4_sat16",
    isa: Isa::Avx512Vnni,
    saturating: true,
    a_max: 255,
    mr: 1,
    nr: 32,
    kr: 4,
    pack_a: pack_a_rows_u8::<1, 4>,
    pack_b: pack_b_ckr::<32, 4>,
    a_panel_bytes: rows_u8_panel_bytes::<1, 4>,
    b_panel_bytes: ckr_panel_bytes::<32, 4>,
    ukernel: ukernel_zmm_gemv::<2, true>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// Peak-rate probe: `iters` rounds of 12 independent zmm `vpdpbusd`, i.e. `iters · 768` MACs,
/// operands in registers (inline asm, so nothing is hoisted). Used by the benches to measure the
/// VNNI peak of this machine.
///
/// Panics if the CPU lacks AVX-512 VNNI.
#[doc(hidden)]
#[cfg(target_arch = "x86_64")]
pub fn peak_probe_vnni_zmm(iters: usize) {
    assert!(Isa::Avx512Vnni.is_supported());
    if iters == 0 {
        return;
    }
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn run(iters: usize) {
        // SAFETY: register-only AVX-512 VNNI instructions (support guaranteed by the caller) and
        // a counted loop; no memory is touched.
        unsafe {
            std::arch::asm!(
                "vpxord zmm0, zmm0, zmm0",
                "vpxord zmm1, zmm1, zmm1",
                "vpxord zmm2, zmm2, zmm2",
                "vpxord zmm3, zmm3, zmm3",
                "vpxord zmm4, zmm4, zmm4",
                "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6",
                "vpxord zmm7, zmm7, zmm7",
                "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9",
                "vpxord zmm10, zmm10, zmm10",
                "vpxord zmm11, zmm11, zmm11",
                "2:",
                "vpdpbusd zmm0, zmm30, zmm31",
                "vpdpbusd zmm1, zmm30, zmm31",
                "vpdpbusd zmm2, zmm30, zmm31",
                "vpdpbusd zmm3, zmm30, zmm31",
                "vpdpbusd zmm4, zmm30, zmm31",
                "vpdpbusd zmm5, zmm30, zmm31",
                "vpdpbusd zmm6, zmm30, zmm31",
                "vpdpbusd zmm7, zmm30, zmm31",
                "vpdpbusd zmm8, zmm30, zmm31",
                "vpdpbusd zmm9, zmm30, zmm31",
                "vpdpbusd zmm10, zmm30, zmm31",
                "vpdpbusd zmm11, zmm30, zmm31",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm30") _, out("zmm31") _,
                options(nostack, nomem),
            );
        }
    }
    // SAFETY: AVX-512 VNNI support was asserted above.
    unsafe { run(iters) }
}

// Register allocation, IGEMM (MR = 6, NV = 4 → 6 × 64), per tap t, per K group g of 4 inside it:
//
//   A row pointers  six GPRs p0 … p5 = ind[t·MR + i] (IC contiguous bytes of one NHWC input
//                   pixel, or the zero-point buffer for a padded tap / an unused tail row,
//                   or null: row i skips tap t);
//                   window mode: p_i = ind[i] + tap_off[t]
//   B (c4 bytes)    zmm24 … zmm27 = W[16v .. 16v+16][K = t·IC + 4g .. +4], v = 0..4
//   A broadcast     zmm28 = p_i[4g .. 4g+4] in every i32 lane
//   accumulators    zmm0  zmm1  zmm2  zmm3     row 0   (vacc0x0…3F)
//                   zmm4  …     …     zmm7     row 1
//                   …                          …
//                   zmm20 …     …     zmm23    row 5
//
//   acc[i][v] = vpdpbusd(acc[i][v], A_i, B_v)      24 vpdpbusd per 6 broadcasts + 4 B loads
//
// The inner loop is the GEMM kernel's ([`ukernel_zmm`] with MR = 6, NV = 4) with the A panel
// replaced by MR row pointers that are reloaded once per tap: K runs (ky, kx, ic), so with
// IC % 4 == 0 every K group lies inside one tap and B advances exactly as in the GEMM kernel —
// the packed B panel is the same bytes.
//
// Per tap, a 6-bit mask of the rows whose pointer is not null picks one of three paths: all
// rows (the loop above), some rows (the same loop with a predicted branch around each row's
// broadcast + 4 vpdpbusd: padded taps of border tiles, zero point 0), or none (B skipped).
//
/// AVX-512 VNNI indirect (implicit-im2col) microkernel, `MR × 16·NV` tile, exact. A tile of
/// `mr < MR` rows runs an `mr`-row instantiation (see [`ukernel_zmm`]).
///
/// # Safety
/// See [`super::IgemmUkernel`]: `ind` holds `taps · MR` pointers (tap-major: `ind[t·MR + i]` is
/// row `i`'s tap `t`), each readable for `ic` bytes or null (skipped), or in window mode
/// (`tap_off` non-null) MR row pointers with tap `t` at `ind[i] + tap_off[t]`; `ic % 4 == 0`; `b` is a
/// `pack_b_ckr::<{16·NV}, 4>` panel for K = `taps · ic`; `c` as in [`super::GemmUkernel`]; the
/// CPU supports AVX-512 F/BW/VL/VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn ukernel_zmm_indirect<const MR: usize, const NV: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    pf: Prefetch,
) {
    debug_assert!(ic.is_multiple_of(4) && ic > 0 && taps > 0);
    debug_assert!((1..=MR).contains(&mr) && (1..=16 * NV).contains(&nr));
    // SAFETY: `R ≤ mr ≤ MR` rows' pointers are read and rows stored (the caller's contract
    // covers MR); this function runs with AVX-512 F/BW/VL/VNNI.
    unsafe {
        match mr {
            1 => zmm_indirect_tile::<MR, 1, NV>(taps, ic, ind, tap_off, b, c, rs_c, 1, nr, pf),
            2 => zmm_indirect_tile::<MR, 2, NV>(taps, ic, ind, tap_off, b, c, rs_c, 2, nr, pf),
            3 => zmm_indirect_tile::<MR, 3, NV>(taps, ic, ind, tap_off, b, c, rs_c, 3, nr, pf),
            4 => zmm_indirect_tile::<MR, 4, NV>(taps, ic, ind, tap_off, b, c, rs_c, 4, nr, pf),
            5 => zmm_indirect_tile::<MR, 5, NV>(taps, ic, ind, tap_off, b, c, rs_c, 5, nr, pf),
            _ => zmm_indirect_tile::<MR, MR, NV>(taps, ic, ind, tap_off, b, c, rs_c, mr, nr, pf),
        }
    }
}

/// One instantiation of [`ukernel_zmm_indirect`]'s loop, out of line (see [`zmm_tile`]).
///
/// # Safety
/// As [`ukernel_zmm_indirect`], `R ≤ MR`, `mr ≤ R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_indirect_tile<const MR: usize, const R: usize, const NV: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    pf: Prefetch,
) {
    // SAFETY: the caller's contract.
    unsafe { zmm_indirect_rows::<MR, R, NV>(taps, ic, ind, tap_off, b, c, rs_c, mr, nr, pf) }
}

/// The loop of [`ukernel_zmm_indirect`] over the first `R ≤ MR` rows of the tile (pointer
/// `ind[t·MR + i]`, `i < R`), storing the first `mr ≤ R`: a tile of `mr < MR` rows does `mr/MR`
/// of the work (dispatch on `mr ≤ 5`).
///
/// # Safety
/// As [`ukernel_zmm_indirect`]; only called from AVX-512 VNNI `#[target_feature]` kernels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_indirect_rows<const MR: usize, const R: usize, const NV: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    pf: Prefetch,
) {
    debug_assert!(R <= MR && mr <= R);
    // SAFETY: the caller's contract.
    let acc = unsafe { zmm_indirect_acc::<MR, R, NV>(taps, ic, ind, tap_off, b, pf, None) };
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row `i < mr` of the caller's tile holds `nr` writable i32.
        unsafe { store_row(row, c.add(i * rs_c), nr, false) };
    }
}

/// The K loop of the indirect kernels: the `R × 16·NV` accumulators of rows `0..R` (pointers
/// `ind[t·MR + i]`, or `ind[i] + tap_off[t]` in window mode, `i < R ≤ MR`) over all taps, in
/// registers, prefetching the lines of `pf` on the way. The storing
/// ([`zmm_indirect_rows`]), the requantizing ([`zmm_indirect_requant_tile`]) and the deferring
/// ([`ukernel_zmm_indirect_defer`]) entry points are built on it; the last passes `prev`, the
/// tile whose epilogue it finishes: row `t` of `prev` after tap `t`.
///
/// # Safety
/// As [`ukernel_zmm_indirect`] (the `ind`, `tap_off`, `ic`, `b` parts); only called from AVX-512 VNNI
/// `#[target_feature]` kernels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn zmm_indirect_acc<const MR: usize, const R: usize, const NV: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    pf: Prefetch,
    prev: Option<&Deferred<'_>>,
) -> [[__m512i; NV]; R] {
    debug_assert!(R <= MR);
    debug_assert!(prev.is_none_or(|d| d.rows <= taps));
    // SAFETY: value-only intrinsic; ISA support is the caller's contract.
    let mut acc = [[unsafe { _mm512_setzero_si512() }; NV]; R];
    let mut pb = b;
    // Prefetch hint: line `g` of `pf` at K group `g` (a hint only, never dereferenced).
    let mut g = 0;
    for t in 0..taps {
        let mut pa = [std::ptr::null::<u8>(); R];
        // Bit `i` set: row `i` computes this tap (pointer mode: its pointer is not null; window
        // mode: every row).
        let mut live = (1u32 << R) - 1;
        if tap_off.is_null() {
            live = 0;
            for (i, p) in pa.iter_mut().enumerate() {
                // SAFETY: `ind` holds `taps · MR` pointers, `t < taps`, `i < R ≤ MR`.
                *p = unsafe { *ind.add(t * MR + i) };
                live |= u32::from(!p.is_null()) << i;
            }
        } else {
            for (i, p) in pa.iter_mut().enumerate() {
                // SAFETY: window mode: `ind` holds MR pointers, `tap_off` `taps` offsets, and
                // `ind[i] + tap_off[t]` stays inside row `i`'s window (the caller's contract);
                // `t < taps`, `i < R ≤ MR`.
                *p = unsafe { (*ind.add(i)).add(*tap_off.add(t)) };
            }
        }
        let groups = ic / 4;
        if live == (1 << R) - 1 {
            // SAFETY: the tap's `groups` K groups of B lie inside the panel (`taps · ic / 4` in
            // all); every `pa[i]` is readable for `ic` bytes; ISA support is the caller's
            // contract.
            unsafe { indirect_tap::<R, NV, false>(&mut acc, &pa, live, groups, pb, pf, g) };
        } else if live != 0 {
            // Some rows' tap is zero padding (null, see `IgemmUkernel`): only the others run.
            // SAFETY: as above, for the rows set in `live` (the non-null pointers).
            unsafe { indirect_tap::<R, NV, true>(&mut acc, &pa, live, groups, pb, pf, g) };
        }
        // A tap no row computes is skipped whole: B and the prefetch hints move past it.
        pb = pb.wrapping_add(groups * 64 * NV);
        g += groups;
        if let Some(d) = prev
            && t < d.rows
        {
            // SAFETY: row `t < rows` of the deferred tile (the caller's contract); the
            // features `deferred_row64` needs are enabled in every caller.
            unsafe { deferred_row64(d, t) };
        }
    }
    acc
}

/// One tap of [`zmm_indirect_acc`]: `groups` K groups of 4 from `pb` (the tap's B) into the
/// accumulators of rows `0..R` — with `MASKED`, only of the rows whose bit is set in `live`
/// (the others' tap is zero padding and contributes nothing). The branch per row and K group
/// is the same for the whole tap, so it is predicted; tiles whose rows all compute a tap run
/// the branch-free instantiation.
///
/// # Safety
/// `pb` readable for `groups · 64 · NV` bytes; `pa[i]` readable for `4 · groups` bytes for
/// every row `i` that runs (all rows unless `MASKED`); AVX-512 VNNI enabled in the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn indirect_tap<const R: usize, const NV: usize, const MASKED: bool>(
    acc: &mut [[__m512i; NV]; R],
    pa: &[*const u8; R],
    live: u32,
    groups: usize,
    mut pb: *const u8,
    pf: Prefetch,
    mut g: usize,
) {
    for k in 0..groups {
        // SAFETY: value-only intrinsic; ISA support is the caller's contract.
        let mut vb = [unsafe { _mm512_setzero_si512() }; NV];
        for (v, x) in vb.iter_mut().enumerate() {
            // SAFETY: K group `k < groups` of the tap's B is NV·64 bytes from `pb`.
            *x = unsafe { _mm512_loadu_si512(pb.add(64 * v) as *const __m512i) };
        }
        for (i, (row, &p)) in acc.iter_mut().zip(pa).enumerate() {
            if MASKED && live & (1 << i) == 0 {
                continue;
            }
            // SAFETY: row `i` runs, so `p` is readable for `4 · groups` bytes; ISA as above.
            let va = unsafe { _mm512_set1_epi32((p.add(4 * k) as *const i32).read_unaligned()) };
            for (r, x) in row.iter_mut().zip(&vb) {
                // SAFETY: ISA support is the caller's contract.
                *r = unsafe { _mm512_dpbusd_epi32(*r, va, *x) };
            }
        }
        if g < pf.lines {
            // SAFETY: a prefetch never faults and does not access memory (any address).
            unsafe { _mm_prefetch::<_MM_HINT_T1>(pf.at.wrapping_add(64 * g) as *const i8) };
        }
        g += 1;
        pb = pb.wrapping_add(64 * NV);
    }
}

/// AVX-512 VNNI indirect microkernel with the u8 epilogue fused (see
/// [`super::IgemmRequantUkernel`]): the accumulators of a full `MR × 64` tile (`nr = 64`) are
/// requantized — and added to the residual, if any — straight from registers by the tile
/// epilogue's own code (`requant::requant_acc64`), with no i32 tile in memory.
///
/// # Safety
/// See [`super::IgemmRequantUkernel`]; the CPU supports AVX-512 F/BW/VL/VNNI (and FMA, implied
/// by [`Isa::Avx512Vnni`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn ukernel_zmm_indirect_requant<const MR: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    mr: usize,
    ep: &Tile64<'_>,
    out: *mut u8,
    ldc: usize,
    pf: Prefetch,
) {
    debug_assert!(ic.is_multiple_of(4) && ic > 0 && taps > 0);
    debug_assert!((1..=MR).contains(&mr) && ldc >= 64);
    debug_assert!(
        ep.add
            .is_none_or(|a| mr == 0 || a.skip.len() >= (mr - 1) * a.ldskip + 64)
    );
    // SAFETY: `R ≤ mr ≤ MR` rows' pointers are read and rows stored (the caller's contract
    // covers MR); this function runs with AVX-512 F/BW/VL/VNNI + FMA.
    unsafe {
        match mr {
            1 => zmm_indirect_requant_tile::<MR, 1>(taps, ic, ind, tap_off, b, 1, ep, out, ldc, pf),
            2 => zmm_indirect_requant_tile::<MR, 2>(taps, ic, ind, tap_off, b, 2, ep, out, ldc, pf),
            3 => zmm_indirect_requant_tile::<MR, 3>(taps, ic, ind, tap_off, b, 3, ep, out, ldc, pf),
            4 => zmm_indirect_requant_tile::<MR, 4>(taps, ic, ind, tap_off, b, 4, ep, out, ldc, pf),
            5 => zmm_indirect_requant_tile::<MR, 5>(taps, ic, ind, tap_off, b, 5, ep, out, ldc, pf),
            _ => {
                zmm_indirect_requant_tile::<MR, MR>(taps, ic, ind, tap_off, b, mr, ep, out, ldc, pf)
            }
        }
    }
}

/// One instantiation of [`ukernel_zmm_indirect_requant`] (`R` rows, 64 columns), out of line
/// (see [`zmm_tile`]).
///
/// # Safety
/// As [`ukernel_zmm_indirect_requant`], `R ≤ MR`, `mr ≤ R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_indirect_requant_tile<const MR: usize, const R: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    mr: usize,
    ep: &Tile64<'_>,
    out: *mut u8,
    ldc: usize,
    pf: Prefetch,
) {
    debug_assert_eq!(mr, R);
    // SAFETY: the caller's contract; features enabled here.
    unsafe {
        let acc = zmm_indirect_acc::<MR, R, 4>(taps, ic, ind, tap_off, b, pf, None);
        requant_acc64::<R>(&acc, ep, out, ldc);
    }
}

/// AVX-512 VNNI indirect microkernel with the epilogue deferred (see
/// [`super::IgemmDeferUkernel`] and `requant::Deferred`): a full `MR × 64` tile whose
/// accumulators are stored to `acc`, with the previous tile's row `t` requantized after tap `t`.
///
/// # Safety
/// See [`super::IgemmDeferUkernel`]; the CPU supports AVX-512 F/BW/VL/VNNI and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn ukernel_zmm_indirect_defer<const MR: usize>(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    prev: Option<&Deferred<'_>>,
    acc: *mut i32,
    pf: Prefetch,
) {
    debug_assert!(ic.is_multiple_of(4) && ic > 0 && taps > 0);
    debug_assert!(prev.is_none_or(|d| d.rows <= taps));
    // SAFETY: the caller's contract: MR rows' pointers are read; every row of `prev` is
    // requantized inside `zmm_indirect_acc` (one per tap, `rows ≤ taps`) before `acc` is
    // written; features enabled here.
    unsafe {
        let rows = zmm_indirect_acc::<MR, MR, 4>(taps, ic, ind, tap_off, b, pf, prev);
        for (i, row) in rows.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                // SAFETY: `64·i + 16·v + 16 ≤ 64·MR` i32 are writable from `acc`.
                _mm512_storeu_si512(acc.add(64 * i + 16 * v) as *mut __m512i, *x);
            }
        }
    }
}

/// Exact VNNI indirect-conv kernel, 6 × 64 tile: reads A through an indirection array and the
/// packed B of [`U8S8S32_GEMM_AVX512VNNI_6X64C4`] unchanged.
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_IGEMM_AVX512VNNI_6X64C4: IgemmKernel = IgemmKernel {
    name: "u8s8s32_igemm_avx512vnni_6x64c4",
    gemm: &U8S8S32_GEMM_AVX512VNNI_6X64C4,
    ukernel: ukernel_zmm_indirect::<6, 4>,
    ukernel_requant: Some(ukernel_zmm_indirect_requant::<6>),
    ukernel_defer: Some(ukernel_zmm_indirect_defer::<6>),
};
