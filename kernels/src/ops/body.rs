//! Loops shared by every ISA's pooling kernels. Each ISA implements [`RowOps`] with
//! `#[inline(always)]` helpers and calls these `#[inline(always)]` bodies from its own
//! `#[target_feature]` entry point, so the whole loop nest is compiled for that ISA.

use super::PoolGeometry;

/// Row primitives over `C` contiguous channels.
pub(crate) trait RowOps {
    /// `dst[i] = max(0, max_{o ∈ offs} x[o + i])` for `i < dst.len()` (0 when `offs` is
    /// empty), accumulating in registers across the taps.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA; `o + dst.len() <= x.len()` for every `o` in `offs`.
    unsafe fn max_taps(x: &[u8], offs: &[usize], dst: &mut [u8]);
    /// `acc[i] += src[i]` for every `i` (equal lengths; wrapping i32).
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA.
    unsafe fn acc_into(acc: &mut [i32], src: &[u8]);
    /// `out[i] = avg_finish_elem(acc[i], size, inv, zp)` for every `i` (equal lengths).
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA.
    unsafe fn avg_finish(acc: &[i32], size: i32, inv: f32, zp: i32, out: &mut [u8]);
}

/// max_pool2d NHWC: per output pixel, the offsets of the in-image taps, then one register
/// reduction over them per channel block (padding never wins; u8 max with an initial 0 is the
/// max of the taps, and an empty window — impossible with `pad ≤ k/2` — gives 0 as in the
/// reference).
///
/// # Safety
///
/// The CPU supports `O`'s ISA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`, and
/// `oh`/`ow` are the floor-mode output sizes of the window.
#[inline(always)]
pub(crate) unsafe fn max_pool<O: RowOps>(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    debug_assert_eq!(x.len(), g.in_len());
    debug_assert!(out.len() >= g.out_len());
    let c = g.c;
    let mut offs: Vec<usize> = Vec::with_capacity(g.kernel_h * g.kernel_w);
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                offs.clear();
                for ky in 0..g.kernel_h {
                    let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_h as isize;
                    if iy < 0 || iy as usize >= g.h {
                        continue;
                    }
                    for kx in 0..g.kernel_w {
                        let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_w as isize;
                        if ix < 0 || ix as usize >= g.w {
                            continue;
                        }
                        offs.push(((b * g.h + iy as usize) * g.w + ix as usize) * c);
                    }
                }
                let dst = &mut out[((b * g.oh + oy) * g.ow + ox) * c..][..c];
                // SAFETY: the caller guarantees O's ISA; every offset is an in-image pixel,
                // so `o + c <= x.len()`.
                unsafe { O::max_taps(x, &offs, dst) };
            }
        }
    }
}

/// adaptive_avg_pool2d NHWC: window sums in i32 per channel, then PyTorch's NHWC finish.
///
/// # Safety
///
/// The CPU supports `O`'s ISA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`,
/// `1 ≤ oh ≤ h`, `1 ≤ ow ≤ w` (the kernel/stride/pad fields are ignored).
#[inline(always)]
pub(crate) unsafe fn adaptive_avg_pool<O: RowOps>(
    x: &[u8],
    g: &PoolGeometry,
    zp: i32,
    out: &mut [u8],
) {
    debug_assert_eq!(x.len(), g.in_len());
    debug_assert!(out.len() >= g.out_len());
    debug_assert!(g.oh >= 1 && g.oh <= g.h && g.ow >= 1 && g.ow <= g.w);
    let c = g.c;
    let mut acc = vec![0i32; c];
    let window =
        |o: usize, input: usize, outn: usize| (o * input / outn, ((o + 1) * input).div_ceil(outn));
    for b in 0..g.n {
        for oy in 0..g.oh {
            let (y0, y1) = window(oy, g.h, g.oh);
            for ox in 0..g.ow {
                let (x0, x1) = window(ox, g.w, g.ow);
                acc.fill(0);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let src = &x[((b * g.h + iy) * g.w + ix) * c..][..c];
                        // SAFETY: the caller guarantees O's ISA; equal lengths `c`.
                        unsafe { O::acc_into(&mut acc, src) };
                    }
                }
                let size = ((y1 - y0) * (x1 - x0)) as i32;
                let inv = 1.0f32 / size as f32;
                let dst = &mut out[((b * g.oh + oy) * g.ow + ox) * c..][..c];
                // SAFETY: the caller guarantees O's ISA; equal lengths `c`.
                unsafe { O::avg_finish(&acc, size, inv, zp, dst) };
            }
        }
    }
}
