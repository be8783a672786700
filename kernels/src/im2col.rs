//! im2col row copies for the convolution's A source.
//!
//! An interior output pixel of a dense conv (dilation 1 along W, one group) sees, per kernel
//! row, one contiguous run of `kw·IC` input bytes; consecutive pixels of an output row shift
//! the runs by `stride·IC`. [`copy_interior_rows`] writes a stretch of such pixels (one A row
//! each). A run is short and oddly sized for small-IC layers (the RGB stem: 7 runs of 21
//! bytes per 147-byte row), so a `memcpy` per run costs more than the copy: the AVX-512 path
//! moves each run with one masked load and one masked store (byte granularity, AVX-512BW), which
//! neither reads past the run (a masked-off lane never faults, so the last pixel of the user's
//! buffer is safe) nor writes past it; the portable path uses two overlapping fixed-size moves.

use crate::isa::Isa;

/// `d.copy_from_slice(s)` for short runs: two overlapping fixed-size moves instead of a
/// `memcpy` call (`d.len() == s.len()`).
#[inline(always)]
pub fn copy_run(d: &mut [u8], s: &[u8]) {
    let n = d.len();
    debug_assert_eq!(n, s.len());
    if n > 64 {
        d.copy_from_slice(s);
    } else if n >= 32 {
        d[..32].copy_from_slice(&s[..32]);
        d[n - 32..].copy_from_slice(&s[n - 32..]);
    } else if n >= 16 {
        d[..16].copy_from_slice(&s[..16]);
        d[n - 16..].copy_from_slice(&s[n - 16..]);
    } else if n >= 8 {
        d[..8].copy_from_slice(&s[..8]);
        d[n - 8..].copy_from_slice(&s[n - 8..]);
    } else if n >= 4 {
        d[..4].copy_from_slice(&s[..4]);
        d[n - 4..].copy_from_slice(&s[n - 4..]);
    } else {
        for (dv, &sv) in d.iter_mut().zip(s) {
            *dv = sv;
        }
    }
}

/// Where the runs of a stretch of interior im2col rows come from and go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InteriorRows {
    /// Offset in `src` of the first run of the first row.
    pub src0: usize,
    /// Source step between consecutive rows (`stride_w·IC`).
    pub pixel_step: usize,
    /// Source step between the runs of one row (`dilation_h·W·IC`).
    pub line_step: usize,
    /// Runs per row (`kh`).
    pub runs: usize,
    /// Bytes per run (`kw·IC`).
    pub run: usize,
    /// Rows to write.
    pub count: usize,
    /// Destination row stride (≥ `runs·run`).
    pub ld: usize,
}

impl InteriorRows {
    /// Whether every read stays inside `src_len` bytes and every write inside `dst_len`.
    pub fn fits(&self, src_len: usize, dst_len: usize) -> bool {
        if self.count == 0 || self.runs == 0 || self.run == 0 {
            return true;
        }
        let row = self.runs.checked_mul(self.run);
        let src_end = (self.count - 1)
            .checked_mul(self.pixel_step)
            .and_then(|a| Some((a, (self.runs - 1).checked_mul(self.line_step)?)))
            .and_then(|(a, b)| {
                a.checked_add(b)?
                    .checked_add(self.src0)?
                    .checked_add(self.run)
            });
        let dst_end = (self.count - 1)
            .checked_mul(self.ld)
            .and_then(|a| a.checked_add(row?));
        matches!((row, src_end, dst_end), (Some(r), Some(s), Some(d))
            if r <= self.ld && s <= src_len && d <= dst_len)
    }
}

/// For `i < g.count`, `r < g.runs`:
/// `dst[i·ld + r·run ..][..run] = src[src0 + i·pixel_step + r·line_step ..][..run]`
/// (bytes of `dst` between rows, `runs·run .. ld`, are not touched).
///
/// # Panics
/// If a read or write would leave `src` / `dst` ([`InteriorRows::fits`]), or `isa` is not
/// supported by this CPU.
pub fn copy_interior_rows(isa: Isa, src: &[u8], g: &InteriorRows, dst: &mut [u8]) {
    assert!(g.fits(src.len(), dst.len()), "im2col rows out of bounds");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && g.run <= 64 {
        assert!(isa.is_supported(), "ISA {isa} not supported");
        // SAFETY: AVX-512 F/BW/VL checked just above; bounds checked by `fits`.
        unsafe { x86::copy_interior_rows_avx512(src, g, dst) };
        return;
    }
    let _ = isa;
    for i in 0..g.count {
        let row = &mut dst[i * g.ld..][..g.runs * g.run];
        let mut s = g.src0 + i * g.pixel_step;
        for seg in row.chunks_exact_mut(g.run) {
            copy_run(seg, &src[s..s + g.run]);
            s += g.line_step;
        }
    }
}

/// One border im2col row of a dense conv (some tap outside the image): `runs` runs of `run`
/// bytes; run `r` with `ky_lo ≤ r < ky_hi` (kernel rows inside the image vertically) is `lead`
/// pad bytes, `len` bytes copied from `src[src0 + (r − ky_lo)·line_step ..]`, then pad bytes up
/// to `run`; the other runs are all pad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BorderRow {
    /// Offset in `src` of the first copied byte of run `ky_lo`.
    pub src0: usize,
    /// Source step between copied runs (`dilation_h·W·IC`).
    pub line_step: usize,
    pub runs: usize,
    pub run: usize,
    /// Pad bytes before the copied part of an inside run.
    pub lead: usize,
    /// Copied bytes of an inside run (0: the whole row is pad).
    pub len: usize,
    pub ky_lo: usize,
    pub ky_hi: usize,
}

impl BorderRow {
    /// Whether every read stays inside `src_len` bytes and the row fits `dst_len`.
    pub fn fits(&self, src_len: usize, dst_len: usize) -> bool {
        let Some(row) = self.runs.checked_mul(self.run) else {
            return false;
        };
        let shape_ok = self.ky_lo <= self.ky_hi
            && self.ky_hi <= self.runs
            && self
                .lead
                .checked_add(self.len)
                .is_some_and(|e| e <= self.run)
            && row <= dst_len;
        if !shape_ok {
            return false;
        }
        if self.len == 0 || self.ky_hi == self.ky_lo {
            return true;
        }
        (self.ky_hi - self.ky_lo - 1)
            .checked_mul(self.line_step)
            .and_then(|a| a.checked_add(self.src0)?.checked_add(self.len))
            .is_some_and(|end| end <= src_len)
    }
}

/// Writes the border row `g` into `dst[.. runs·run]`, padding with `pad` (the input zero
/// point). On AVX-512 each run (≤ 64 bytes) is one masked load that takes the pad value in the
/// lanes outside the copied part, and one masked store.
///
/// # Panics
/// If a read or write would leave `src` / `dst` ([`BorderRow::fits`]), or `isa` is not
/// supported by this CPU.
pub fn write_border_row(isa: Isa, src: &[u8], g: &BorderRow, pad: u8, dst: &mut [u8]) {
    assert!(
        g.fits(src.len(), dst.len()),
        "im2col border row out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && g.run <= 64 {
        assert!(isa.is_supported(), "ISA {isa} not supported");
        // SAFETY: AVX-512 F/BW/VL checked just above; bounds checked by `fits`; run ≤ 64.
        unsafe { x86::write_border_row_avx512(src, g, pad, dst) };
        return;
    }
    let _ = isa;
    let mut s = g.src0;
    for (r, seg) in dst[..g.runs * g.run].chunks_exact_mut(g.run).enumerate() {
        if g.len > 0 && (g.ky_lo..g.ky_hi).contains(&r) {
            seg[..g.lead].fill(pad);
            copy_run(&mut seg[g.lead..g.lead + g.len], &src[s..s + g.len]);
            seg[g.lead + g.len..].fill(pad);
            s += g.line_step;
        } else {
            seg.fill(pad);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::InteriorRows;
    use std::arch::x86_64::*;

    /// AVX-512 body of [`super::copy_interior_rows`] for runs of at most 64 bytes: one masked
    /// move per run (ymm when the run fits 32 bytes, zmm otherwise).
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL; `g.fits(src.len(), dst.len())`; `g.run ≤ 64`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn copy_interior_rows_avx512(src: &[u8], g: &InteriorRows, dst: &mut [u8]) {
        debug_assert!(g.run <= 64 && g.fits(src.len(), dst.len()));
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let mut s_row = g.src0;
        let mut d_row = 0;
        if g.run <= 32 {
            let m: __mmask32 = if g.run == 32 {
                u32::MAX
            } else {
                (1u32 << g.run) - 1
            };
            for _ in 0..g.count {
                let (mut s, mut d) = (s_row, d_row);
                for _ in 0..g.runs {
                    // SAFETY: the `run` unmasked bytes at `s` / `d` are inside `src` / `dst`
                    // (`fits`); masked-off lanes are neither read (no fault) nor written.
                    unsafe {
                        let v = _mm256_maskz_loadu_epi8(m, sp.add(s).cast());
                        _mm256_mask_storeu_epi8(dp.add(d).cast(), m, v);
                    }
                    s += g.line_step;
                    d += g.run;
                }
                s_row += g.pixel_step;
                d_row += g.ld;
            }
        } else {
            let m: __mmask64 = if g.run == 64 {
                u64::MAX
            } else {
                (1u64 << g.run) - 1
            };
            for _ in 0..g.count {
                let (mut s, mut d) = (s_row, d_row);
                for _ in 0..g.runs {
                    // SAFETY: as above.
                    unsafe {
                        let v = _mm512_maskz_loadu_epi8(m, sp.add(s).cast());
                        _mm512_mask_storeu_epi8(dp.add(d).cast(), m, v);
                    }
                    s += g.line_step;
                    d += g.run;
                }
                s_row += g.pixel_step;
                d_row += g.ld;
            }
        }
    }

    /// AVX-512 body of [`super::write_border_row`] (`run ≤ 64`).
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL; `g.fits(src.len(), dst.len())`; `g.run ≤ 64`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn write_border_row_avx512(
        src: &[u8],
        g: &super::BorderRow,
        pad: u8,
        dst: &mut [u8],
    ) {
        debug_assert!(g.run <= 64 && g.fits(src.len(), dst.len()));
        let lanes = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let run_m: __mmask64 = lanes(g.run);
        // Lanes `lead .. lead + len` of a run come from the image (none when `len == 0`, where
        // `lead` may be the whole run: 64 would overflow the shift).
        let data_m: __mmask64 = lanes(g.len).checked_shl(g.lead as u32).unwrap_or(0);
        let padv = _mm512_set1_epi8(pad as i8);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let mut s = g.src0;
        for r in 0..g.runs {
            let v = if g.len > 0 && (g.ky_lo..g.ky_hi).contains(&r) {
                // The vector's lane 0 sits `lead` bytes before the copied part; only lanes of
                // `data_m` are read, and those are `src[s .. s + len]` (inside: `fits`), so the
                // address is formed with wrapping arithmetic and never dereferenced outside.
                let base = sp.wrapping_add(s).wrapping_sub(g.lead);
                s += g.line_step;
                // SAFETY: see above; masked-off lanes take `padv` and are not accessed.
                unsafe { _mm512_mask_loadu_epi8(padv, data_m, base.cast()) }
            } else {
                padv
            };
            // SAFETY: run `r` is `dst[r·run ..][.. run]`, inside `dst` (`fits`); lanes ≥ run
            // are masked off.
            unsafe { _mm512_mask_storeu_epi8(dp.add(r * g.run).cast(), run_m, v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(src: &[u8], g: &InteriorRows, dst: &mut [u8]) {
        for i in 0..g.count {
            for r in 0..g.runs {
                for b in 0..g.run {
                    dst[i * g.ld + r * g.run + b] =
                        src[g.src0 + i * g.pixel_step + r * g.line_step + b];
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_reference_up_to_the_buffer_end() {
        for isa in Isa::supported() {
            for run in [1, 3, 12, 21, 28, 31, 32, 33, 48, 63, 64, 65, 192] {
                for (runs, count, step) in [(1, 1, 0), (7, 5, 6), (3, 9, 64)] {
                    let line = run + 17;
                    let ld = runs * run + 3;
                    // The last run ends exactly at the end of `src` and of `dst`.
                    let src_len = (count - 1) * step + (runs - 1) * line + run + 5;
                    let src: Vec<u8> = (0..src_len).map(|i| (i * 7 + 3) as u8).collect();
                    let g = InteriorRows {
                        src0: 5,
                        pixel_step: step,
                        line_step: line,
                        runs,
                        run,
                        count,
                        ld,
                    };
                    let dst_len = (count - 1) * ld + runs * run;
                    assert!(g.fits(src.len(), dst_len));
                    assert!(!g.fits(src.len() - 1, dst_len));
                    assert!(!g.fits(src.len(), dst_len - 1));
                    let mut want = vec![0xEEu8; dst_len];
                    let mut got = vec![0xEEu8; dst_len];
                    reference(&src, &g, &mut want);
                    copy_interior_rows(isa, &src, &g, &mut got);
                    assert_eq!(got, want, "{isa} run {run} runs {runs} count {count}");
                }
            }
        }
    }

    #[test]
    fn border_rows_match_reference() {
        for isa in Isa::supported() {
            for run in [3, 9, 21, 28, 32, 33, 64, 65, 100] {
                for runs in [1, 3, 7] {
                    for (lead, len) in [
                        (0, run),
                        (0, 0),
                        (run, 0),
                        (run / 3, run - run / 3),
                        (0, run / 2),
                        (run / 4, run / 2),
                    ] {
                        for (ky_lo, ky_hi) in [
                            (0, runs),
                            (0, 0),
                            (runs / 2, runs),
                            (0, runs - 1),
                            (1.min(runs), runs),
                        ] {
                            let line = len + 5;
                            let n_in: usize = ky_hi - ky_lo;
                            let src_len = 2 + n_in.saturating_sub(1) * line + len;
                            let src: Vec<u8> = (0..src_len).map(|i| (i * 13 + 1) as u8).collect();
                            let g = BorderRow {
                                src0: 2,
                                line_step: line,
                                runs,
                                run,
                                lead,
                                len,
                                ky_lo,
                                ky_hi,
                            };
                            assert!(g.fits(src.len(), runs * run));
                            let mut want = vec![0x11u8; runs * run + 1];
                            let mut s = 2;
                            for r in 0..runs {
                                for b in 0..run {
                                    let inside = len > 0
                                        && r >= ky_lo
                                        && r < ky_hi
                                        && b >= lead
                                        && b < lead + len;
                                    want[r * run + b] =
                                        if inside { src[s + b - lead] } else { 0x77 };
                                }
                                if len > 0 && r >= ky_lo && r < ky_hi {
                                    s += line;
                                }
                            }
                            let mut got = vec![0x11u8; runs * run + 1];
                            write_border_row(isa, &src, &g, 0x77, &mut got[..runs * run]);
                            assert_eq!(got, want, "{isa} {g:?}");
                        }
                    }
                }
            }
        }
    }
}
