//! Baseline Advanced SIMD (NEON) microkernels: every aarch64 CPU runs these.
//!
//! # Why widening multiply-accumulate
//!
//! Baseline NEON has no 8-bit dot product. Its 8-bit multiplies (`smull`/`umull`) need both
//! operands of the same signedness, and summing two i16 products of u8 × i8 can leave i16, so
//! the exact kernel widens both operands to i16 once per K step (`uxtl` for activations, `sxtl`
//! for weights) and uses `smlal`/`smlal2` *by element*: one B row of 8 weights times one
//! broadcast activation, accumulated straight into i32. No intermediate sum ever lives in 16 bits,
//! so the result is exact for every u8 × i8 input (i32 wrap-around only beyond K = 65 793, like
//! the reference).
//!
//! # Why a separate saturating kernel
//!
//! fbgemm's AVX2 path (`vpmaddubsw`) adds the two products of each K pair `(2t, 2t+1)` with
//! signed 16-bit saturation. One product of u8 × i8 always fits in i16
//! (`−32 640 ≤ a·w ≤ 32 385`), so NEON reproduces the pair exactly with two `mul` (by element)
//! and one `sqadd` (saturating i16 add), then widens the pair sum into the i32 accumulators with
//! `saddw`/`saddw2`. Same bytes as the scalar `_sat16` kernel and as fbgemm.
//!
//! Both kernels use the default c{KR} packers of [`super`]: c1 (plain K-major panels) for the
//! exact kernel, c2 for the saturating one (`ld2` de-interleaves the K pair of 8 columns).

use core::arch::aarch64::*;

use super::{GemmKernel, ckr_panel_bytes, pack_a_ckr, pack_b_ckr};
use crate::isa::Isa;

/// An 8 × 8 block of i32 accumulators: row `i`, columns `0..4` in `[i][0]`, `4..8` in `[i][1]`.
pub(super) type Tile8x8 = [[int32x4_t; 2]; 8];

/// Writes (or adds) the `mr × nr` top-left part of an 8 × 8 accumulator tile to `C`.
///
/// Full tiles use vector loads/stores row by row; partial tiles go through a stack scratch tile
/// so that nothing outside `C[i*rs_c + j]`, `i < mr`, `j < nr` is ever read or written.
///
/// # Safety
///
/// `c` is valid for reads and writes of `C[i*rs_c + j]` for `i < mr ≤ 8`, `j < nr ≤ 8`.
#[inline(always)]
pub(super) unsafe fn store_tile_8x8(
    acc: &Tile8x8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    if mr == 8 && nr == 8 {
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: `i < 8 = mr` and `nr = 8`: the 8 i32 at `c + i*rs_c` are inside the tile.
            unsafe {
                let p = c.add(i * rs_c);
                let (mut lo, mut hi) = (row[0], row[1]);
                if accumulate {
                    lo = vaddq_s32(lo, vld1q_s32(p));
                    hi = vaddq_s32(hi, vld1q_s32(p.add(4)));
                }
                vst1q_s32(p, lo);
                vst1q_s32(p.add(4), hi);
            }
        }
    } else {
        let mut scratch = [[0i32; 8]; 8];
        for (dst, row) in scratch.iter_mut().zip(acc) {
            // SAFETY: `dst` is an array of 8 i32: two 4-lane stores stay inside it.
            unsafe {
                vst1q_s32(dst.as_mut_ptr(), row[0]);
                vst1q_s32(dst.as_mut_ptr().add(4), row[1]);
            }
        }
        for (i, row) in scratch.iter().enumerate().take(mr) {
            for (j, &v) in row.iter().enumerate().take(nr) {
                // SAFETY: `i < mr`, `j < nr`: inside the caller's C tile.
                let dst = unsafe { &mut *c.add(i * rs_c + j) };
                *dst = if accumulate { dst.wrapping_add(v) } else { v };
            }
        }
    }
}

/// Exact u8 × i8 → i32 microkernel, 8 × 8 tile, K-interleave 1 (c1 packing: per K step, 8 bytes
/// of A rows then 8 bytes of B columns).
///
/// ```text
/// Register allocation, per K step k (all of it unrolled by 2 over K):
///
///                      vb = sxtl(B[k][0..8])        (i16 × 8, one q register)
///                      +------------------+------------------+
///                      |  w0 w1 w2 w3     |  w4 w5 w6 w7     |
///                      +------------------+------------------+
/// va = uxtl(A[0..8][k])
///   a0 = va.h[0]       | vacc0x0123       | vacc0x4567       |   smlal  / smlal2 by element
///   a1 = va.h[1]       | vacc1x0123       | vacc1x4567       |
///   ...                | ...              | ...              |
///   a7 = va.h[7]       | vacc7x0123       | vacc7x4567       |
///                      +------------------+------------------+
/// 16 i32x4 accumulators + va + vb (+ the next K step's pair) = 20 of 32 vector registers.
/// ```
///
/// # Safety
///
/// See [`super::GemmUkernel`] (`kc` any value ≥ 0, panels of `8·kc` bytes each); the CPU
/// supports NEON (always true on aarch64).
#[target_feature(enable = "neon")]
unsafe fn ukernel_neon_8x8c1(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!((1..=8).contains(&mr) && (1..=8).contains(&nr));
    debug_assert!(!a.is_null() && !b.is_null() && !c.is_null());
    debug_assert!(mr == 1 || rs_c >= nr, "C rows overlap");

    /// `acc[i] += vb · va.h[i]` for the 8 columns of `vb`.
    macro_rules! mla_rows {
        ($acc:ident, $va:ident, $vb:ident; $($i:literal)*) => {$(
            $acc[$i][0] = vmlal_laneq_s16::<$i>($acc[$i][0], vget_low_s16($vb), $va);
            $acc[$i][1] = vmlal_high_laneq_s16::<$i>($acc[$i][1], $vb, $va);
        )*};
    }

    let zero = vdupq_n_s32(0);
    let mut acc: Tile8x8 = [[zero; 2]; 8];
    let (mut pa, mut pb) = (a, b);
    for _ in 0..kc / 2 {
        // SAFETY: two K steps remain: 16 bytes of each panel are in bounds.
        let (va2, vb2) = unsafe { (vld1q_u8(pa), vld1q_s8(pb.cast::<i8>())) };
        let va = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(va2)));
        let vb = vmovl_s8(vget_low_s8(vb2));
        mla_rows!(acc, va, vb; 0 1 2 3 4 5 6 7);
        let va = vreinterpretq_s16_u16(vmovl_high_u8(va2));
        let vb = vmovl_high_s8(vb2);
        mla_rows!(acc, va, vb; 0 1 2 3 4 5 6 7);
        // SAFETY: stays within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(16);
            pb = pb.add(16);
        }
    }
    if kc % 2 == 1 {
        // SAFETY: one K step remains: 8 bytes of each panel are in bounds.
        let (va1, vb1) = unsafe { (vld1_u8(pa), vld1_s8(pb.cast::<i8>())) };
        let va = vreinterpretq_s16_u16(vmovl_u8(va1));
        let vb = vmovl_s8(vb1);
        mla_rows!(acc, va, vb; 0 1 2 3 4 5 6 7);
    }
    // SAFETY: forwarded caller contract on `c`, `mr`, `nr`.
    unsafe { store_tile_8x8(&acc, c, rs_c, mr, nr, accumulate) };
}

/// fbgemm-compatible pair-saturating microkernel, 8 × 8 tile, K-interleave 2 (default c2
/// packing: per K pair, `A[i][2t], A[i][2t+1]` for 8 rows, then `W[j][2t], W[j][2t+1]` for 8
/// columns).
///
/// ```text
/// Register allocation, per K pair t:
///
///                    ld2 {w.8b, w'.8b} → vw0 = sxtl(W[0..8][2t]), vw1 = sxtl(W[0..8][2t+1])
///
/// va0123 = uxtl(A[0..4][2t..2t+2]) = a0 a0' a1 a1' a2 a2' a3 a3'   (i16 × 8)
/// va4567 = uxtl(A[4..8][2t..2t+2])
///
/// row i: vp  = mul(vw0, a_i)  ; vp' = mul(vw1, a_i')     exact: |a·w| ≤ 32 640
///        vs  = sqadd(vp, vp')                           = clamp(a·w + a'·w', ±2^15)
///        vacc{i}x0123 = saddw(vacc{i}x0123, vs.lo) ; vacc{i}x4567 = saddw2(…, vs)
///
/// 16 i32x4 accumulators + va0123 + va4567 + vw0 + vw1 + 3 temporaries ≤ 32 registers.
/// ```
///
/// # Safety
///
/// See [`super::GemmUkernel`] (`kc` even, panels of `8·kc` bytes each); the CPU supports NEON
/// (always true on aarch64).
#[target_feature(enable = "neon")]
unsafe fn ukernel_neon_8x8c2_sat16(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(2));
    debug_assert!((1..=8).contains(&mr) && (1..=8).contains(&nr));
    debug_assert!(!a.is_null() && !b.is_null() && !c.is_null());
    debug_assert!(mr == 1 || rs_c >= nr, "C rows overlap");

    /// One row `$i` whose K pair sits in lanes `$l0`, `$l1` of `$va`.
    macro_rules! sat_rows {
        ($acc:ident, $va:ident, $vw0:ident, $vw1:ident; $($i:literal $l0:literal $l1:literal)*) => {$(
            let vs = vqaddq_s16(
                vmulq_laneq_s16::<$l0>($vw0, $va),
                vmulq_laneq_s16::<$l1>($vw1, $va),
            );
            $acc[$i][0] = vaddw_s16($acc[$i][0], vget_low_s16(vs));
            $acc[$i][1] = vaddw_high_s16($acc[$i][1], vs);
        )*};
    }

    let zero = vdupq_n_s32(0);
    let mut acc: Tile8x8 = [[zero; 2]; 8];
    let (mut pa, mut pb) = (a, b);
    for _ in 0..kc / 2 {
        // SAFETY: one K pair remains: 16 bytes of each panel are in bounds.
        let (va, vw) = unsafe { (vld1q_u8(pa), vld2_s8(pb.cast::<i8>())) };
        let mut va0123 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(va)));
        let mut va4567 = vreinterpretq_s16_u16(vmovl_high_u8(va));
        // Hide the widening from LLVM: otherwise it rewrites each `mul` by element into
        // `dup` + `uxtl` + `mul` per row (16 extra instructions per K pair and spills).
        // SAFETY: an empty template: no instruction, no memory, no stack.
        unsafe {
            core::arch::asm!(
                "/* {0:v} {1:v} */",
                inout(vreg) va0123,
                inout(vreg) va4567,
                options(pure, nomem, nostack, preserves_flags),
            )
        };
        let vw0 = vmovl_s8(vw.0);
        let vw1 = vmovl_s8(vw.1);
        sat_rows!(acc, va0123, vw0, vw1; 0 0 1  1 2 3  2 4 5  3 6 7);
        sat_rows!(acc, va4567, vw0, vw1; 4 0 1  5 2 3  6 4 5  7 6 7);
        // SAFETY: stays within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(16);
            pb = pb.add(16);
        }
    }
    // SAFETY: forwarded caller contract on `c`, `mr`, `nr`.
    unsafe { store_tile_8x8(&acc, c, rs_c, mr, nr, accumulate) };
}

/// Exact baseline-NEON production kernel (`smlal` by element).
pub static U8S8S32_GEMM_NEON_8X8C1: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_neon_8x8c1",
    isa: Isa::Neon,
    saturating: false,
    a_max: 255,
    mr: 8,
    nr: 8,
    kr: 1,
    pack_a: pack_a_ckr::<8, 1>,
    pack_b: pack_b_ckr::<8, 1>,
    a_panel_bytes: ckr_panel_bytes::<8, 1>,
    b_panel_bytes: ckr_panel_bytes::<8, 1>,
    ukernel: ukernel_neon_8x8c1,
    tail_rows: 0,
    ukernel_requant: None,
};

/// fbgemm-compatible pair-saturating NEON kernel; also the saturating kernel of the NeonDot and
/// NeonI8mm ISAs (dot products cannot saturate pairs).
pub static U8S8S32_GEMM_NEON_8X8C2_SAT16: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_neon_8x8c2_sat16",
    isa: Isa::Neon,
    saturating: true,
    a_max: 255,
    mr: 8,
    nr: 8,
    kr: 2,
    pack_a: pack_a_ckr::<8, 2>,
    pack_b: pack_b_ckr::<8, 2>,
    a_panel_bytes: ckr_panel_bytes::<8, 2>,
    b_panel_bytes: ckr_panel_bytes::<8, 2>,
    ukernel: ukernel_neon_8x8c2_sat16,
    tail_rows: 0,
    ukernel_requant: None,
};
