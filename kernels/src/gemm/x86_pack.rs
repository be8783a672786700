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
