//! AVX2 GEMM microkernels.
//!
//! **Exact kernel (`6x16c2`).** `vpmaddubsw` adds two u8×i8 products with signed 16-bit
//! saturation (255·127·2 = 64 770 does not fit), so it cannot be the exact path. Instead both
//! operands are widened to i16 *at pack time* and multiplied with `vpmaddwd`, whose pair sum
//! (≤ 2·255·128 = 65 280) always fits i32: exact for every input, and on Zen 4 / Skylake the same
//! 32 MAC/cycle peak as the saturating `vpmaddubsw` triple. The cost is twice the operand bytes,
//! paid in our own packed buffers (B once at prepack, A per block; A panels are row-major u16,
//! see [`super::x86_pack`]). K interleave is 2 (one i16 pair per `vpmaddwd` lane).
//!
//! **Saturating kernel (`6x16c4_sat16`).** fbgemm's AVX2 sequence `vpmaddubsw` → `vpmaddwd(·, 1)`
//! → `vpaddd`, on the default c4 byte layout: each `vpmaddubsw` lane saturates exactly the pair
//! `(2t, 2t+1)` of K that `qkernels_ref` saturates (blocks always start at an even K).
//!
//! **7-bit exact kernel (`6x16c4_a7`).** The saturating kernel's code registered as an exact
//! kernel with `a_max = 127`: on panels whose activations are all ≤ 127 no pair can saturate, so
//! the driver runs it there instead of `6x16c2` (half the operand bytes, no widening; see
//! [`super::a7_companion`]).
//!
//! **GEMV kernels (`1x16…`).** Same packed-B layout as their 6-row siblings (the driver uses them
//! for M = 1 with the same `PackedWeights`), with two independent accumulator sets over K so the
//! `vpaddd` dependency chain does not limit a single-row tile.
//!
//! Partial tiles (`mr < MR`, `nr < NR`) go through a stack scratch row: nothing outside the
//! `mr × nr` tile of C is read or written.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::x86_pack::{pack_a_rows_u8, pack_a_rows_u16, rows_u8_panel_bytes, rows_u16_panel_bytes};
use super::{GemmKernel, ckr_panel_bytes, pack_b_ckr};
use crate::isa::Isa;

/// Packs a B panel for the exact kernels: `NR` columns, K pairs widened to i16.
///
/// Layout: `for g in 0..kc/2, for j in 0..NR, for t in 0..2: W[j][2g+t] as i16 (LE)`.
pub fn pack_b_c2_i16<const NR: usize>(
    w: &[i8],
    ldw: usize,
    cols: usize,
    kc: usize,
    dst: &mut [u8],
) {
    let kp = kc.div_ceil(2) * 2;
    debug_assert!(cols <= NR);
    debug_assert_eq!(dst.len(), NR * kp * 2);
    dst.fill(0);
    for j in 0..cols {
        for (k, &v) in w[j * ldw..j * ldw + kc].iter().enumerate() {
            let o = (((k / 2) * NR + j) * 2 + (k % 2)) * 2;
            dst[o..o + 2].copy_from_slice(&i16::from(v).to_le_bytes());
        }
    }
}

/// Bytes of a c2 i16 panel of `R` rows/columns.
pub const fn c2_i16_panel_bytes<const R: usize>(kc: usize) -> usize {
    R * kc.div_ceil(2) * 2 * 2
}

/// Writes (or adds) one row of `NV` accumulator vectors to `c[0..nr]`.
///
/// # Safety
/// `c` is valid for reads and writes of `nr ≤ 8·NV` i32; AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_row<const NV: usize>(
    acc: &[__m256i; NV],
    c: *mut i32,
    nr: usize,
    accumulate: bool,
) {
    if nr == 8 * NV {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `8·NV = nr` i32 are writable from `c`.
            unsafe {
                let p = c.add(8 * v) as *mut __m256i;
                let x = if accumulate {
                    _mm256_add_epi32(*a, _mm256_loadu_si256(p))
                } else {
                    *a
                };
                _mm256_storeu_si256(p, x);
            }
        }
    } else {
        let mut tmp = [[0i32; 8]; NV];
        for (t, a) in tmp.iter_mut().zip(acc) {
            // SAFETY: `t` is 8 i32 of stack memory.
            unsafe { _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, *a) };
        }
        for (j, &v) in tmp.as_flattened().iter().enumerate().take(nr) {
            // SAFETY: `j < nr`: inside the caller's row.
            let d = unsafe { &mut *c.add(j) };
            *d = if accumulate { d.wrapping_add(v) } else { v };
        }
    }
}

// Register allocation, exact kernel with MR = 6, NV = 2 (NR = 16), per K pair g:
//
//   B (i16 pairs)      ymm12 = W[0..8][2g..2g+2]    ymm13 = W[8..16][2g..2g+2]
//   A broadcast        ymm14 = (A[i][2g], A[i][2g+1]) as u16, broadcast to every i32 lane
//                      (row-major u16 A panel: row i at byte 2·i·kc)
//   accumulators       ymm0  ymm1     row 0   (vacc0x01234567, vacc0x89ABCDEF)
//                      ymm2  ymm3     row 1
//                      …              …
//                      ymm10 ymm11    row 5
//
//   acc[i][v] += vpmaddwd(A_i, B_v)   (12 vpmaddwd + 12 vpaddd per 2 K; 15 of 16 ymm)
//
/// Exact AVX2 microkernel on the c2 i16 layout (see module docs).
///
/// # Safety
/// See [`super::GemmUkernel`]; the panels come from [`pack_a_rows_u16::<MR>`] and
/// [`pack_b_c2_i16::<{8·NV}>`]; the CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn ukernel_exact<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(2) && (1..=MR).contains(&mr) && (1..=8 * NV).contains(&nr));
    let mut acc = [[_mm256_setzero_si256(); NV]; MR];
    let mut pa = a;
    let mut pb = b;
    for _ in 0..kc / 2 {
        let mut vb = [_mm256_setzero_si256(); NV];
        for (v, x) in vb.iter_mut().enumerate() {
            // SAFETY: one K pair of the B panel is NV·32 bytes, inside the panel.
            *x = unsafe { _mm256_loadu_si256(pb.add(32 * v) as *const __m256i) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row `i` of the u16 A panel starts at byte `2·i·kc`; one pair is 4 bytes.
            let va =
                _mm256_set1_epi32(unsafe { (pa.add(2 * i * kc) as *const i32).read_unaligned() });
            for (r, x) in row.iter_mut().zip(&vb) {
                *r = _mm256_add_epi32(*r, _mm256_madd_epi16(va, *x));
            }
        }
        // SAFETY: advancing within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(4);
            pb = pb.add(32 * NV);
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row `i < mr` of the caller's tile holds `nr` writable i32.
        unsafe { store_row(row, c.add(i * rs_c), nr, accumulate) };
    }
}

// Register allocation, exact GEMV kernel (MR = 1, NV = 2), per two K pairs (g, g+1):
//
//   B                  ymm4 ymm5 = W[·][2g..2g+2]     ymm6 ymm7 = W[·][2g+2..2g+4]
//   A broadcast        ymm8 = A pair g                ymm9 = A pair g+1
//   accumulators       ymm0 ymm1 (even pairs)         ymm2 ymm3 (odd pairs), summed at the end
//
/// Exact AVX2 single-row kernel, same packed layouts as [`ukernel_exact`] with MR = 1.
///
/// # Safety
/// See [`super::GemmUkernel`]; panels from [`pack_a_rows_u16::<1>`] / [`pack_b_c2_i16::<{8·NV}>`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ukernel_exact_gemv<const NV: usize>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    _rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(2) && mr == 1 && (1..=8 * NV).contains(&nr));
    let mut acc0 = [_mm256_setzero_si256(); NV];
    let mut acc1 = [_mm256_setzero_si256(); NV];
    let groups = kc / 2;
    let mut pa = a;
    let mut pb = b;
    for _ in 0..groups / 2 {
        // SAFETY: two K pairs remain in both panels.
        unsafe {
            let a0 = _mm256_set1_epi32((pa as *const i32).read_unaligned());
            let a1 = _mm256_set1_epi32((pa.add(4) as *const i32).read_unaligned());
            for v in 0..NV {
                let b0 = _mm256_loadu_si256(pb.add(32 * v) as *const __m256i);
                let b1 = _mm256_loadu_si256(pb.add(32 * (NV + v)) as *const __m256i);
                acc0[v] = _mm256_add_epi32(acc0[v], _mm256_madd_epi16(a0, b0));
                acc1[v] = _mm256_add_epi32(acc1[v], _mm256_madd_epi16(a1, b1));
            }
            pa = pa.add(8);
            pb = pb.add(64 * NV);
        }
    }
    if groups % 2 == 1 {
        // SAFETY: one K pair remains in both panels.
        unsafe {
            let a0 = _mm256_set1_epi32((pa as *const i32).read_unaligned());
            for (v, x) in acc0.iter_mut().enumerate() {
                let b0 = _mm256_loadu_si256(pb.add(32 * v) as *const __m256i);
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(a0, b0));
            }
        }
    }
    for (x, y) in acc0.iter_mut().zip(&acc1) {
        *x = _mm256_add_epi32(*x, *y);
    }
    // SAFETY: row 0 of the caller's tile holds `nr` writable i32.
    unsafe { store_row(&acc0, c, nr, accumulate) };
}

// Register allocation, saturating kernel with MR = 6, NV = 2 (NR = 16), per K group of 4:
//
//   B (c4 bytes)       ymm12 = W[0..8][4g..4g+4]    ymm13 = W[8..16][4g..4g+4]
//   A broadcast        ymm14 = A[i][4g..4g+4] in every i32 lane
//   ones (i16)         ymm15
//   accumulators       ymm0 … ymm11, two per row as in the exact kernel
//
//   t = vpmaddubsw(A_i, B_v)   (i16: sat(a0·w0 + a1·w1), sat(a2·w2 + a3·w3))
//   acc[i][v] += vpmaddwd(t, ones)
//
/// fbgemm-compatible saturating AVX2 microkernel on the default c4 layout.
///
/// # Safety
/// See [`super::GemmUkernel`]; panels from `pack_a_rows_u8::<MR, 4>` / `pack_b_ckr::<{8·NV}, 4>`;
/// the CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ukernel_sat16<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(4) && (1..=MR).contains(&mr) && (1..=8 * NV).contains(&nr));
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); NV]; MR];
    let mut pa = a;
    let mut pb = b;
    for _ in 0..kc / 4 {
        let mut vb = [_mm256_setzero_si256(); NV];
        for (v, x) in vb.iter_mut().enumerate() {
            // SAFETY: one K group of the B panel is NV·32 bytes, inside the panel.
            *x = unsafe { _mm256_loadu_si256(pb.add(32 * v) as *const __m256i) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row `i` of the A panel starts at `i·kc`; 4 bytes of it at this K group.
            let va = _mm256_set1_epi32(unsafe { (pa.add(i * kc) as *const i32).read_unaligned() });
            for (r, x) in row.iter_mut().zip(&vb) {
                let t = _mm256_maddubs_epi16(va, *x);
                *r = _mm256_add_epi32(*r, _mm256_madd_epi16(t, ones));
            }
        }
        // SAFETY: advancing within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(4);
            pb = pb.add(32 * NV);
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row `i < mr` of the caller's tile holds `nr` writable i32.
        unsafe { store_row(row, c.add(i * rs_c), nr, accumulate) };
    }
}

/// Production exact AVX2 kernel.
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_GEMM_AVX2_6X16C2: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_avx2_6x16c2",
    isa: Isa::Avx2,
    saturating: false,
    a_max: 255,
    mr: 6,
    nr: 16,
    kr: 2,
    pack_a: pack_a_rows_u16::<6>,
    pack_b: pack_b_c2_i16::<16>,
    a_panel_bytes: rows_u16_panel_bytes::<6>,
    b_panel_bytes: c2_i16_panel_bytes::<16>,
    ukernel: ukernel_exact::<6, 2>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// Exact AVX2 GEMV kernel (M = 1); packed B identical to [`U8S8S32_GEMM_AVX2_6X16C2`].
#[cfg(target_arch = "x86_64")]
pub static U8S8S32_GEMM_AVX2_1X16C2: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_avx2_1x16c2",
    isa: Isa::Avx2,
    saturating: false,
    a_max: 255,
    mr: 1,
    nr: 16,
    kr: 2,
    pack_a: pack_a_rows_u16::<1>,
    pack_b: pack_b_c2_i16::<16>,
    a_panel_bytes: rows_u16_panel_bytes::<1>,
    b_panel_bytes: c2_i16_panel_bytes::<16>,
    ukernel: ukernel_exact_gemv::<2>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// A kernel of the c4 byte layout (u8 A rows, `pack_b_ckr::<16, 4>` B) running
/// `ukernel_sat16::<MR, 2>`: the saturating kernels, and the same code registered as exact for
/// 7-bit activations (`a_max = 127`).
macro_rules! c4_kernel {
    ($(#[$doc:meta])* $id:ident, $name:literal, $mr:literal, $sat:literal, $a_max:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        pub static $id: GemmKernel = GemmKernel {
            name: $name,
            isa: Isa::Avx2,
            saturating: $sat,
            a_max: $a_max,
            mr: $mr,
            nr: 16,
            kr: 4,
            pack_a: pack_a_rows_u8::<$mr, 4>,
            pack_b: pack_b_ckr::<16, 4>,
            a_panel_bytes: rows_u8_panel_bytes::<$mr, 4>,
            b_panel_bytes: ckr_panel_bytes::<16, 4>,
            ukernel: ukernel_sat16::<$mr, 2>,
            tail_rows: 0,
            ukernel_requant: None,
        };
    };
}

c4_kernel!(
    /// Production saturating (fbgemm `vpmaddubsw`) AVX2 kernel.
    U8S8S32_GEMM_AVX2_6X16C4_SAT16,
    "u8s8s32_gemm_avx2_6x16c4_sat16",
    6,
    true,
    255
);

c4_kernel!(
    /// Exact AVX2 kernel **for activations ≤ 127** (`a_max = 127`): the saturating kernel's code,
    /// which cannot saturate on such panels (`2 · 127 · 128 < 2^15`), so it computes exact sums. The
    /// driver runs it only on A panels it has checked ([`super::a7_companion`]); same tile as
    /// [`U8S8S32_GEMM_AVX2_6X16C2`], so both feed the same epilogue.
    U8S8S32_GEMM_AVX2_6X16C4_A7,
    "u8s8s32_gemm_avx2_6x16c4_a7",
    6,
    false,
    127
);

c4_kernel!(
    /// Single-row companion of [`U8S8S32_GEMM_AVX2_6X16C4_A7`] (same packed B, same 7-bit contract),
    /// for the one-row tail panels of the 7-bit path.
    U8S8S32_GEMM_AVX2_1X16C4_A7,
    "u8s8s32_gemm_avx2_1x16c4_a7",
    1,
    false,
    127
);

c4_kernel!(
    /// Saturating single-row kernel; packed B identical to [`U8S8S32_GEMM_AVX2_6X16C4_SAT16`].
    U8S8S32_GEMM_AVX2_1X16C4_SAT16,
    "u8s8s32_gemm_avx2_1x16c4_sat16",
    1,
    true,
    255
);

/// Peak-rate probe: `iters` rounds of 8 independent `vpmaddwd` + `vpaddd` pairs (ymm), i.e.
/// `iters · 128` MACs of the exact AVX2 sequence, operands in registers (inline asm, so nothing
/// is hoisted). Used by the benches to measure the AVX2 peak of this machine.
///
/// Panics if the CPU lacks AVX2.
#[doc(hidden)]
#[cfg(target_arch = "x86_64")]
pub fn peak_probe_avx2_madd(iters: usize) {
    assert!(Isa::Avx2.is_supported());
    if iters == 0 {
        return;
    }
    #[target_feature(enable = "avx2")]
    fn run(iters: usize) {
        // SAFETY: register-only AVX2 instructions (support guaranteed by the caller) and a
        // counted loop; no memory is touched.
        unsafe {
            std::arch::asm!(
                "vpxor xmm0, xmm0, xmm0",
                "vpxor xmm1, xmm1, xmm1",
                "vpxor xmm2, xmm2, xmm2",
                "vpxor xmm3, xmm3, xmm3",
                "vpxor xmm4, xmm4, xmm4",
                "vpxor xmm5, xmm5, xmm5",
                "vpxor xmm6, xmm6, xmm6",
                "vpxor xmm7, xmm7, xmm7",
                "2:",
                "vpmaddwd ymm8, ymm14, ymm15",
                "vpaddd ymm0, ymm0, ymm8",
                "vpmaddwd ymm9, ymm14, ymm15",
                "vpaddd ymm1, ymm1, ymm9",
                "vpmaddwd ymm10, ymm14, ymm15",
                "vpaddd ymm2, ymm2, ymm10",
                "vpmaddwd ymm11, ymm14, ymm15",
                "vpaddd ymm3, ymm3, ymm11",
                "vpmaddwd ymm12, ymm14, ymm15",
                "vpaddd ymm4, ymm4, ymm12",
                "vpmaddwd ymm13, ymm14, ymm15",
                "vpaddd ymm5, ymm5, ymm13",
                "vpmaddwd ymm8, ymm14, ymm15",
                "vpaddd ymm6, ymm6, ymm8",
                "vpmaddwd ymm9, ymm14, ymm15",
                "vpaddd ymm7, ymm7, ymm9",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                options(nostack, nomem),
            );
        }
    }
    // SAFETY: AVX2 support was asserted above.
    unsafe { run(iters) }
}
