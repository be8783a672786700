//! aarch64 int8 matrix-multiply (FEAT_I8MM) microkernel: `usmmla`, 32 MACs per instruction.
//!
//! # Why `usmmla`
//!
//! `usmmla vd.4s, vn.16b, vm.16b` multiplies a 2 × 8 block of **unsigned** bytes (`vn`: two rows
//! of 8 K values) by the transpose of a 2 × 8 block of **signed** bytes (`vm`: two columns of 8 K
//! values) and adds the 2 × 2 i32 result to `vd` = `[r0·c0, r0·c1, r1·c0, r1·c1]`. That is
//! exactly u8 × i8 with i32 accumulation: no sign correction, no intermediate narrowing, exact for
//! every input. It does twice the work of `sdot`/`usdot` per instruction, and the default c8
//! packing already puts two rows (or two columns) of 8 K values in 16 consecutive bytes, so the
//! kernel uses the default packers.
//!
//! The i8mm intrinsics are unstable in Rust (E0658, rust-lang/rust#117223), so the instruction is
//! emitted with `asm!` on `vreg` operands inside `#[target_feature(enable = "neon,i8mm")]`.

use core::arch::aarch64::*;
use core::arch::asm;

use super::arm_neon::{Tile8x8, store_tile_8x8};
use super::{GemmKernel, ckr_panel_bytes, pack_a_ckr, pack_b_ckr};
use crate::isa::Isa;

const MR: usize = 8;
const NR: usize = 8;
const KR: usize = 8;

/// Exact u8 × i8 → i32 microkernel, 8 × 8 tile, K-interleave 8, with `usmmla`.
///
/// ```text
/// Register allocation, per group of 8 K steps g (default c8 panels):
///
///                      vb01 = W[0,1][8g..]  vb23 = W[2,3][8g..]  vb45 …  vb67 …   (i8 2×8)
///                     +------------------+------------------+--------+--------+
/// va01 = A[0,1][8g..] | vacc01x01        | vacc01x23        | …x45   | …x67   |
/// va23 = A[2,3][8g..] | vacc23x01        | vacc23x23        | …      | …      |
/// va45 = A[4,5][8g..] | vacc45x01        | …                | …      | …      |
/// va67 = A[6,7][8g..] | vacc67x01        | …                | …      | …      |
///  (u8 2×8)           +------------------+------------------+--------+--------+
/// vacc{rr}x{cc} = [A_r0·W_c0, A_r0·W_c1, A_r1·W_c0, A_r1·W_c1] += usmmla(va{rr}, vb{cc})
///
/// 16 i32x4 accumulators (2 × 2 blocks) + 4 A + 4 B registers = 24 of 32. At the end, rows are
/// reassembled with zip1/zip2 on 64-bit lanes: row r0 = [acc x01.lo, acc x23.lo | x45.lo, x67.lo].
/// ```
///
/// # Safety
///
/// See [`super::GemmUkernel`]: `kc` a multiple of 8, panels of `8·kc` bytes each in the default
/// c8 layout; the CPU supports NEON and i8mm.
#[target_feature(enable = "neon,i8mm")]
unsafe fn ukernel_neoni8mm_8x8c8(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(KR));
    debug_assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nr));
    debug_assert!(!a.is_null() && !b.is_null() && !c.is_null());
    debug_assert!(mr == 1 || rs_c >= nr, "C rows overlap");

    /// `vacc += usmmla(va, vb)` (u8 2×8 · (i8 2×8)ᵀ).
    macro_rules! usmmla {
        ($acc:expr, $va:expr, $vb:expr) => {
            // SAFETY: register-only instruction (no memory, no stack); the enclosing function
            // enables i8mm and its caller guarantees CPU support.
            unsafe {
                asm!(
                    "usmmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                    acc = inout(vreg) $acc,
                    a = in(vreg) $va,
                    b = in(vreg) $vb,
                    options(pure, nomem, nostack, preserves_flags),
                )
            }
        };
    }

    let zero = vdupq_n_s32(0);
    // acc[p][q]: rows 2p, 2p+1 × columns 2q, 2q+1.
    let mut acc = [[zero; 4]; 4];
    let (mut pa, mut pb) = (a, b);
    for _ in 0..kc / KR {
        // SAFETY: one group of 8 K steps remains: 64 bytes of each panel are in bounds.
        let (va, vb) = unsafe {
            (
                [
                    vld1q_u8(pa),
                    vld1q_u8(pa.add(16)),
                    vld1q_u8(pa.add(32)),
                    vld1q_u8(pa.add(48)),
                ],
                [
                    vld1q_s8(pb.cast::<i8>()),
                    vld1q_s8(pb.add(16).cast::<i8>()),
                    vld1q_s8(pb.add(32).cast::<i8>()),
                    vld1q_s8(pb.add(48).cast::<i8>()),
                ],
            )
        };
        for (row, &vap) in acc.iter_mut().zip(&va) {
            for (vacc, &vbq) in row.iter_mut().zip(&vb) {
                usmmla!(*vacc, vap, vbq);
            }
        }
        // SAFETY: stays within (or one past the end of) the panels.
        unsafe {
            pa = pa.add(MR * KR);
            pb = pb.add(NR * KR);
        }
    }

    // 2 × 2 blocks → rows of 8.
    let mut tile: Tile8x8 = [[zero; 2]; 8];
    for (p, blocks) in acc.iter().enumerate() {
        let q = blocks.map(|v| vreinterpretq_s64_s32(v));
        tile[2 * p] = [
            vreinterpretq_s32_s64(vzip1q_s64(q[0], q[1])),
            vreinterpretq_s32_s64(vzip1q_s64(q[2], q[3])),
        ];
        tile[2 * p + 1] = [
            vreinterpretq_s32_s64(vzip2q_s64(q[0], q[1])),
            vreinterpretq_s32_s64(vzip2q_s64(q[2], q[3])),
        ];
    }
    // SAFETY: forwarded caller contract on `c`, `mr`, `nr`.
    unsafe { store_tile_8x8(&tile, c, rs_c, mr, nr, accumulate) };
}

/// Exact i8mm production kernel (`usmmla`, default c8 packing).
pub static U8S8S32_GEMM_NEONI8MM_8X8C8: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_neoni8mm_8x8c8",
    isa: Isa::NeonI8mm,
    saturating: false,
    a_max: 255,
    mr: MR,
    nr: NR,
    kr: KR,
    pack_a: pack_a_ckr::<MR, KR>,
    pack_b: pack_b_ckr::<NR, KR>,
    a_panel_bytes: ckr_panel_bytes::<MR, KR>,
    b_panel_bytes: ckr_panel_bytes::<NR, KR>,
    ukernel: ukernel_neoni8mm_8x8c8,
    tail_rows: 0,
    ukernel_requant: None,
};
