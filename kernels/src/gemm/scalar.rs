//! Portable microkernels on the default c{KR} packed layout: the fallback on every CPU and the
//! first reference for the SIMD kernels (same packed contract, plain loops).

use super::{GemmKernel, ckr_panel_bytes, pack_a_ckr, pack_b_ckr};
use crate::isa::Isa;

/// Generic scalar microkernel, `MR × NR` tile, K-interleave `KR`.
///
/// # Safety
/// See [`super::GemmUkernel`].
unsafe fn ukernel_scalar<const MR: usize, const NR: usize, const KR: usize, const SAT: bool>(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    debug_assert!(kc.is_multiple_of(KR) && (1..=MR).contains(&mr) && (1..=NR).contains(&nr));
    // SAFETY: the caller guarantees panels of `kc/KR` groups of MR×KR and NR×KR bytes.
    let a = unsafe { std::slice::from_raw_parts(a, MR * kc) };
    // SAFETY: as above.
    let b = unsafe { std::slice::from_raw_parts(b, NR * kc) };
    let mut acc = [[0i32; NR]; MR];
    for g in 0..kc / KR {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let pa = &a[(g * MR + i) * KR..][..KR];
                let pb = &b[(g * NR + j) * KR..][..KR];
                if SAT {
                    for t in (0..KR).step_by(2) {
                        let p0 = i32::from(pa[t]) * i32::from(pb[t] as i8);
                        let p1 = i32::from(pa[t + 1]) * i32::from(pb[t + 1] as i8);
                        *v = v.wrapping_add((p0 + p1).clamp(-32768, 32767));
                    }
                } else {
                    for t in 0..KR {
                        *v = v.wrapping_add(i32::from(pa[t]) * i32::from(pb[t] as i8));
                    }
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            // SAFETY: `i < mr`, `j < nr`: inside the caller's C tile.
            let dst = unsafe { &mut *c.add(i * rs_c + j) };
            *dst = if accumulate { dst.wrapping_add(v) } else { v };
        }
    }
}

/// The scalar production kernel.
pub static U8S8S32_GEMM_SCALAR_4X4C4: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_scalar_4x4c4",
    isa: Isa::Scalar,
    saturating: false,
    a_max: 255,
    mr: 4,
    nr: 4,
    kr: 4,
    pack_a: pack_a_ckr::<4, 4>,
    pack_b: pack_b_ckr::<4, 4>,
    a_panel_bytes: ckr_panel_bytes::<4, 4>,
    b_panel_bytes: ckr_panel_bytes::<4, 4>,
    ukernel: ukernel_scalar::<4, 4, 4, false>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// An odd tile used only by tests: catches drivers that assume square or power-of-two tiles.
pub static U8S8S32_GEMM_SCALAR_3X5C4_TEST: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_scalar_3x5c4_test",
    isa: Isa::Scalar,
    saturating: false,
    a_max: 255,
    mr: 3,
    nr: 5,
    kr: 4,
    pack_a: pack_a_ckr::<3, 4>,
    pack_b: pack_b_ckr::<5, 4>,
    a_panel_bytes: ckr_panel_bytes::<3, 4>,
    b_panel_bytes: ckr_panel_bytes::<5, 4>,
    ukernel: ukernel_scalar::<3, 5, 4, false>,
    tail_rows: 0,
    ukernel_requant: None,
};

/// fbgemm-compatible pair-saturating scalar kernel.
pub static U8S8S32_GEMM_SCALAR_4X4C4_SAT16: GemmKernel = GemmKernel {
    name: "u8s8s32_gemm_scalar_4x4c4_sat16",
    isa: Isa::Scalar,
    saturating: true,
    a_max: 255,
    mr: 4,
    nr: 4,
    kr: 4,
    pack_a: pack_a_ckr::<4, 4>,
    pack_b: pack_b_ckr::<4, 4>,
    a_panel_bytes: ckr_panel_bytes::<4, 4>,
    b_panel_bytes: ckr_panel_bytes::<4, 4>,
    ukernel: ukernel_scalar::<4, 4, 4, true>,
    tail_rows: 0,
    ukernel_requant: None,
};
