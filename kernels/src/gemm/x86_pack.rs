//! Row-major A-panel packers used by the x86 kernels.
//!
//! The x86 microkernels broadcast 4 bytes (one K group) of each A row per step, so they do not
//! need A interleaved by K group: a panel is simply its `MR` rows, each zero-padded to
//! `kp = round_up(kc, KR)`. Packing is then `MR` `memcpy`s instead of a 4-byte scatter — for
//! narrow GEMMs (N = 64 in ResNet's first layers) the A packing would otherwise cost a third of
//! the multiply time — and the kernel addresses row `i` at `a + i·kp` (`kp` is the `kc` it is
//! given).
//!
//! ```text
//! u8 panel:   for i in 0..MR, for k in 0..kp:  A[i][k]           (0 beyond rows / kc)
//! u16 panel:  for i in 0..MR, for k in 0..kp:  A[i][k] as u16 LE  (exact AVX2: pre-widened)
//! ```

/// Packs `rows ≤ MR` rows of `kc` bytes (`src[i·lda ..]`) into a row-major u8 panel.
pub fn pack_a_rows_u8<const MR: usize, const KR: usize>(
    src: &[u8],
    lda: usize,
    rows: usize,
    kc: usize,
    dst: &mut [u8],
) {
    let kp = kc.div_ceil(KR) * KR;
    debug_assert!(rows <= MR);
    debug_assert_eq!(dst.len(), MR * kp);
    for (i, d) in dst.chunks_exact_mut(kp).enumerate() {
        if i < rows {
            d[..kc].copy_from_slice(&src[i * lda..][..kc]);
            d[kc..].fill(0);
        } else {
            d.fill(0);
        }
    }
}

/// Bytes of a row-major u8 panel.
pub const fn rows_u8_panel_bytes<const MR: usize, const KR: usize>(kc: usize) -> usize {
    MR * kc.div_ceil(KR) * KR
}

/// Packs `rows ≤ MR` rows of `kc` bytes into a row-major panel of u16 (little-endian), K padded
/// to a multiple of 2.
pub fn pack_a_rows_u16<const MR: usize>(
    src: &[u8],
    lda: usize,
    rows: usize,
    kc: usize,
    dst: &mut [u8],
) {
    let kp = kc.div_ceil(2) * 2;
    debug_assert!(rows <= MR);
    debug_assert_eq!(dst.len(), MR * kp * 2);
    for (i, d) in dst.chunks_exact_mut(2 * kp).enumerate() {
        if i < rows {
            let (body, pad) = d.split_at_mut(2 * kc);
            for (pair, &v) in body.chunks_exact_mut(2).zip(&src[i * lda..][..kc]) {
                pair[0] = v;
                pair[1] = 0;
            }
            pad.fill(0);
        } else {
            d.fill(0);
        }
    }
}

/// Bytes of a row-major u16 panel.
pub const fn rows_u16_panel_bytes<const MR: usize>(kc: usize) -> usize {
    MR * kc.div_ceil(2) * 2 * 2
}

/// Whether `kernel` reads its A panels in the row-major u8 layout of [`pack_a_rows_u8`] (row `i`
/// at byte `i·kc`, no widening). For such kernels a panel of `MR` full rows of a contiguous
/// matrix with `lda == kc` *is* the source memory, so the driver can skip packing it, and a
/// streamed source (im2col) can be written straight into the panel.
pub fn a_is_row_major_u8(kernel: &super::GemmKernel) -> bool {
    use super::{x86_avx2 as a2, x86_avx512vnni as v};
    [
        &a2::U8S8S32_GEMM_AVX2_6X16C4_SAT16,
        &a2::U8S8S32_GEMM_AVX2_1X16C4_SAT16,
        &a2::U8S8S32_GEMM_AVX2_6X16C4_A7,
        &a2::U8S8S32_GEMM_AVX2_1X16C4_A7,
        &v::U8S8S32_GEMM_AVX512VNNI_8X32C4,
        &v::U8S8S32_GEMM_AVX512VNNI_14X32C4,
        &v::U8S8S32_GEMM_AVX512VNNI_6X64C4,
        &v::U8S8S32_GEMM_AVX512VNNI_1X32C4,
        &v::U8S8S32_GEMM_AVX512VNNI_1X64C4,
        &v::U8S8S32_GEMM_AVX512VNNI_8X32C4_SAT16,
        &v::U8S8S32_GEMM_AVX512VNNI_1X32C4_SAT16,
    ]
    .into_iter()
    .any(|k| std::ptr::eq(k, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place claim must match what the packer really produces.
    #[test]
    fn row_major_kernels_pack_rows_verbatim() {
        for k in super::super::all_kernels() {
            if !a_is_row_major_u8(k) {
                continue;
            }
            let kc = 3 * k.kr;
            let src: Vec<u8> = (0..k.mr * kc).map(|v| (v * 7 + 1) as u8).collect();
            let mut dst = vec![0u8; (k.a_panel_bytes)(kc)];
            (k.pack_a)(&src, kc, k.mr, kc, &mut dst);
            assert_eq!(dst, src, "{}", k.name);
        }
    }
}
