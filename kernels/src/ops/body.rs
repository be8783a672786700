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

/// One SIMD register of u8 lanes, for the separable 3×3 max-pool.
pub(crate) trait MaxVec {
    /// The register type.
    type V: Copy;
    /// u8 lanes per register.
    const LANES: usize;
    /// Loads `LANES` bytes.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA; `p` is readable for `LANES` bytes.
    unsafe fn load(p: *const u8) -> Self::V;
    /// Loads `n < LANES` bytes (the other lanes are 0); reads nothing past `p + n`.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA; `p` is readable for `n` bytes.
    unsafe fn load_part(p: *const u8, n: usize) -> Self::V;
    /// Stores `LANES` bytes.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA; `p` is writable for `LANES` bytes.
    unsafe fn store(p: *mut u8, v: Self::V);
    /// Stores the first `n < LANES` lanes; writes nothing past `p + n`.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA; `p` is writable for `n` bytes.
    unsafe fn store_part(p: *mut u8, v: Self::V, n: usize);
    /// Lane-wise unsigned max.
    ///
    /// # Safety
    ///
    /// The CPU supports the implementing ISA.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
}

/// Whether [`max_pool_3x3_s2`] computes `g`: a 3×3 window, stride 2 along `w` (any along `h`),
/// no dilation, padding ≤ 1 — ResNet's stem pool. Every such window holds at least one in-image
/// tap per axis (floor-mode sizes), so clamping a tap index into the image lands on another tap
/// of the same window, which leaves the max unchanged.
fn is_3x3_s2(g: &PoolGeometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride_w == 2
        && g.dilation_h == 1
        && g.dilation_w == 1
        && g.pad_h <= 1
        && g.pad_w <= 1
        && g.h >= 1
        && g.w >= 1
}

/// max_pool2d for [`is_3x3_s2`] geometries, separable and branch-free: per output row the three
/// input rows (top/bottom padding clamped to a repeated in-image row), per channel block a walk
/// along the row computing each input column's 3-row max once; output `ox` is the max of the
/// columns `2ox − pad .. 2ox − pad + 2`, and its last column is the next pixel's first (kept in
/// a register). Left/right padding is a clamped column index. Padding never wins, as in the
/// reference: only in-image taps are ever read.
///
/// # Safety
///
/// The CPU supports `O`'s ISA; `is_3x3_s2(g)`, `x.len() == g.in_len()`,
/// `out.len() >= g.out_len()`, and `oh`/`ow` are the floor-mode output sizes.
#[inline(always)]
unsafe fn max_pool_3x3_s2<O: MaxVec>(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    debug_assert!(is_3x3_s2(g));
    debug_assert_eq!(x.len(), g.in_len());
    debug_assert!(out.len() >= g.out_len());
    // Floor mode with pad ≤ 1: the middle tap of every window is in the image (so only the
    // first column/row of window 0 and the last of the final window can be clamped).
    debug_assert!(g.ow == 0 || 2 * (g.ow - 1) + 1 - g.pad_w < g.w);
    debug_assert!(g.oh == 0 || (g.oh - 1) * g.stride_h + 1 - g.pad_h < g.h);
    let (c, row) = (g.c, g.w * g.c);
    let last_row = g.h as isize - 1;
    for b in 0..g.n {
        let img = &x[b * g.h * row..][..g.h * row];
        for oy in 0..g.oh {
            let top = (oy * g.stride_h) as isize - g.pad_h as isize;
            let rows = [0, 1, 2].map(|k| {
                let iy = (top + k).clamp(0, last_row) as usize;
                img[iy * row..].as_ptr()
            });
            let dst = out[(b * g.oh + oy) * g.ow * c..][..g.ow * c].as_mut_ptr();
            let mut cb = 0;
            // SAFETY: the caller guarantees O's ISA; every row pointer starts an in-image row
            // of `row` bytes and `dst` an output row of `ow·c` bytes; the blocks cover channels
            // cb..cb+LANES ≤ c, then the tail cb..c.
            unsafe {
                while cb + O::LANES <= c {
                    row_3x3_s2::<O, false>(rows, dst, g, cb, O::LANES);
                    cb += O::LANES;
                }
                if cb < c {
                    row_3x3_s2::<O, true>(rows, dst, g, cb, c - cb);
                }
            }
        }
    }
}

/// One output row of [`max_pool_3x3_s2`], channels `cb..cb + n` (`n = LANES` unless `TAIL`).
///
/// # Safety
///
/// As [`max_pool_3x3_s2`]; `rows` point at in-image rows of `w·c` bytes, `dst` at an output
/// row of `ow·c` bytes, `cb + n <= c`, `n <= LANES` (`n < LANES` iff `TAIL`).
#[inline(always)]
unsafe fn row_3x3_s2<O: MaxVec, const TAIL: bool>(
    rows: [*const u8; 3],
    dst: *mut u8,
    g: &PoolGeometry,
    cb: usize,
    n: usize,
) {
    let c = g.c;
    let last = g.w - 1;
    // Every access below: `ix ≤ w − 1` and `cb + n ≤ c` keep it inside its input row, `ox < ow`
    // inside the output row (caller's contract).
    let ld = |p: *const u8| {
        // SAFETY: O's ISA (caller); `p` readable for `n` bytes (see above).
        unsafe { if TAIL { O::load_part(p, n) } else { O::load(p) } }
    };
    let col = |ix: usize| {
        let o = ix * c + cb;
        // SAFETY: O's ISA (caller); `rows[k] + o` is byte `cb` of in-image pixel `ix`.
        unsafe {
            O::max(
                O::max(ld(rows[0].add(o)), ld(rows[1].add(o))),
                ld(rows[2].add(o)),
            )
        }
    };
    // Window ox covers columns 2ox − pad, +1, +2; the first is clamped for ox = 0, the last
    // for the final window only (see the debug_assert in the caller), the middle never.
    let mut carry = col(0);
    for ox in 0..g.ow {
        let mid = 2 * ox + 1 - g.pad_w;
        let a = col(mid);
        let z = col((mid + 1).min(last));
        // SAFETY: O's ISA (caller); `dst + ox·c + cb` writable for `n` bytes (see above).
        unsafe {
            let m = O::max(O::max(carry, a), z);
            let p = dst.add(ox * c + cb);
            if TAIL {
                O::store_part(p, m, n)
            } else {
                O::store(p, m)
            }
        }
        carry = z;
    }
}

/// max_pool2d NHWC: [`max_pool_3x3_s2`] when it applies, else per output pixel the offsets of
/// the in-image taps, then one register reduction over them per channel block (padding never wins; u8 max with an initial 0 is the
/// max of the taps, and an empty window — impossible with `pad ≤ k/2` — gives 0 as in the
/// reference).
///
/// # Safety
///
/// The CPU supports `O`'s ISA; `x.len() == g.in_len()`, `out.len() >= g.out_len()`, and
/// `oh`/`ow` are the floor-mode output sizes of the window.
#[inline(always)]
pub(crate) unsafe fn max_pool<O: RowOps + MaxVec>(x: &[u8], g: &PoolGeometry, out: &mut [u8]) {
    debug_assert_eq!(x.len(), g.in_len());
    debug_assert!(out.len() >= g.out_len());
    if is_3x3_s2(g) {
        // SAFETY: as this function's contract; the geometry was just checked.
        return unsafe { max_pool_3x3_s2::<O>(x, g, out) };
    }
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
