//! aarch64 dot-product (FEAT_DotProd) microkernel: `sdot` by element, 16 MACs per instruction.
//!
//! # Why the sign correction
//!
//! Dotprod offers `sdot` (i8 × i8) and `udot` (u8 × u8) but no mixed u8 × i8 form (that is
//! `usdot`, part of i8mm). Activations are therefore shifted into i8 range once, while packing:
//! `a' = a ⊕ 0x80 = a − 128` (as i8). Then, for every output,
//!
//! ```text
//! Σ_k a_k·w_k = Σ_k (a_k − 128)·w_k + 128·Σ_k w_k = sdot(a', w) + 128·colsum(W)
//! ```
//!
//! which holds in exact integers, hence in i32 modulo 2^32 (every step wraps the same way as the
//! reference, so the result is identical for every u8 × i8 input; the true value fits i32 for
//! K ≤ 65 793). Each `sdot` lane adds 4 products of at most 16 384 in magnitude: no intermediate
//! saturation or overflow exists.
//!
//! `128·colsum(W)` depends only on the weights, so the B packer computes it once per panel and
//! stores it after the packed bytes; the kernel starts its accumulators from it instead of zero.
//! The inner loop is then nothing but loads and 16 `sdot`. Padding is harmless: padded weights
//! are 0 (they add nothing to the dot products or to the column sums); padded activation bytes
//! (0x80 after the shift) meet those zero weights or fill rows that are never stored.
//!
//! The dotprod intrinsics are unstable in Rust (E0658, rust-lang/rust#117223), so the one
//! instruction is emitted with `asm!` on `vreg` operands, inside a
//! `#[target_feature(enable = "neon,dotprod")]` function.

use core::arch::aarch64::*;
use core::arch::asm;

use super::arm_neon::{Tile8x8, store_tile_8x8};
use super::{GemmKernel, ckr_panel_bytes, pack_a_ckr, pack_b_ckr};
use crate::isa::Isa;

const MR: usize = 8;
const NR: usize = 8;
const KR: usize = 4;

/// Bytes of one packed A panel: default c4 layout of 8 rows.
fn a_panel_bytes(kc: usize) -> usize {
    ckr_panel_bytes::<MR, KR>(kc)
}

/// Bytes of one packed B panel: default c4 layout of 8 columns, then 8 little-endian i32
/// `128·colsum(W[j])`.
fn b_panel_bytes(kc: usize) -> usize {
    ckr_panel_bytes::<NR, KR>(kc) + 4 * NR
}

/// A panel: default c4 layout with every byte XORed with 0x80 (u8 → i8, `a − 128`).
fn pack_a_8c4_xor80(src: &[u8], lda: usize, rows: usize, kc: usize, dst: &mut [u8]) {
    pack_a_ckr::<MR, KR>(src, lda, rows, kc, dst);
    for x in dst.iter_mut() {
        *x ^= 0x80;
    }
}

/// B panel: default c4 layout, followed by the column sums of the panel times 128 (i32 LE).
fn pack_b_8c4_colsum(w: &[i8], ldw: usize, cols: usize, kc: usize, dst: &mut [u8]) {
    debug_assert!(cols <= NR);
    debug_assert_eq!(dst.len(), b_panel_bytes(kc));
    let (packed, sums) = dst.split_at_mut(ckr_panel_bytes::<NR, KR>(kc));
    pack_b_ckr::<NR, KR>(w, ldw, cols, kc, packed);
    for (j, out) in sums.chunks_exact_mut(4).enumerate() {
        let s: i32 = if j < cols {
            w[j * ldw..j * ldw + kc]
                .iter()
                .fold(0i32, |s, &x| s.wrapping_add(i32::from(x)))
        } else {
            0
        };
        out.copy_from_slice(&s.wrapping_mul(128).to_le_bytes());
    }
}

/// Exact u8 × i8 → i32 microkernel, 8 × 8 tile, K-interleave 4, with `sdot` by element.
///
/// ```text
/// Register allocation, per group of 4 K steps g:
///
///                          vb0123 = W[0..4][4g..4g+4]    vb4567 = W[4..8][4g..4g+4]
///                          (i8 × 16: 4 columns × 4 K)    (i8 × 16)
///                         +-------------------------+-------------------------+
/// va0123 = A'[0..4][4g..] |                         |                         |
///   .4b[0] (row 0)        | vacc0x0123              | vacc0x4567              |
///   .4b[1] (row 1)        | vacc1x0123              | vacc1x4567              |
///   .4b[2], .4b[3]        | vacc2x0123, vacc3x0123  | vacc2x4567, vacc3x4567  |
/// va4567 = A'[4..8][4g..] |                         |                         |
///   .4b[0..4] (rows 4-7)  | vacc4..7x0123           | vacc4..7x4567           |
///                         +-------------------------+-------------------------+
/// vacc{i}x{q} += sdot(vb{q}, va{i/4}.4b[i%4])       (4 lanes × 4 products each)
///
/// 16 i32x4 accumulators (initialised to 128·colsum) + 2 A + 2 B registers = 20 of 32.
/// ```
///
/// # Safety
///
/// See [`super::GemmUkernel`]: `kc` a multiple of 4, `a` a panel of `8·kc` bytes packed by
/// [`pack_a_8c4_xor80`], `b` a panel of `8·kc + 32` bytes packed by [`pack_b_8c4_colsum`]; the
/// CPU supports NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn ukernel_neondot_8x8c4(
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

    /// `vacc += sdot(vb, va.4b[lane])`.
    macro_rules! sdot_lane {
        ($acc:expr, $vb:expr, $va:expr, $lane:literal) => {
            // SAFETY: register-only instruction (no memory, no stack); the enclosing function
            // enables dotprod and its caller guarantees CPU support.
            unsafe {
                asm!(
                    "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{lane}]",
                    acc = inout(vreg) $acc,
                    b = in(vreg) $vb,
                    a = in(vreg) $va,
                    lane = const $lane,
                    options(pure, nomem, nostack, preserves_flags),
                )
            }
        };
    }
    /// Rows `$r0..$r0+4` (lanes 0..4 of `$va`) against both column quads.
    macro_rules! four_rows {
        ($acc:ident, $va:ident, $vb0:ident, $vb1:ident; $($i:literal $l:literal)*) => {$(
            sdot_lane!($acc[$i][0], $vb0, $va, $l);
            sdot_lane!($acc[$i][1], $vb1, $va, $l);
        )*};
    }

    // SAFETY: the B panel holds `NR·kc` packed bytes followed by 8 i32 column sums (32 bytes);
    // byte loads have no alignment requirement.
    let (vcs0123, vcs4567) = unsafe {
        let sums = b.add(NR * kc);
        (
            vreinterpretq_s32_u8(vld1q_u8(sums)),
            vreinterpretq_s32_u8(vld1q_u8(sums.add(16))),
        )
    };
    let mut acc: Tile8x8 = [[vcs0123, vcs4567]; 8];
    let (mut pa, mut pb) = (a, b);
    for _ in 0..kc / KR {
        // SAFETY: one group of 4 K steps remains: 32 bytes of each panel are in bounds.
        let (va0123, va4567, vb0123, vb4567) = unsafe {
            (
                vld1q_s8(pa.cast::<i8>()),
                vld1q_s8(pa.add(16).cast::<i8>()),
                vld1q_s8(pb.cast::<i8>()),
                vld1q_s8(pb.add(16).cast::<i8>()),
            )
        };
        four_rows!(acc, va0123, vb0123, vb4567; 0 0  1 1  2 2  3 3);
        four_rows!(acc, va4567, vb0123, vb4567; 4 0  5 1  6 2  7 3);
        // SAFETY: stays within (or one past the end of) the packed bytes of the panels.
        unsafe {
            pa = pa.add(MR * KR);
            pb = pb.add(NR * KR);
        }
    }
    // SAFETY: forwarded caller contract on `c`, `mr`, `nr`.
    unsafe { store_tile_8x8(&acc, c, rs_c, mr, nr, accumulate) };
}

/// Exact dotprod production kernel (`sdot` on `a ⊕ 0x80`, plus the packed `128·colsum(W)`).
pub static U8S8S32_GEMM_NEONDOT_8X8C4: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_neondot_8x8c4",
    isa: Isa::NeonDot,
    saturating: false,
    a_max: 255,
    mr: MR,
    nr: NR,
    kr: KR,
    pack_a: pack_a_8c4_xor80,
    pack_b: pack_b_8c4_colsum,
    a_panel_bytes,
    b_panel_bytes,
    ukernel: ukernel_neondot_8x8c4,
    tail_rows: 0,
    ukernel_requant: None,
};
