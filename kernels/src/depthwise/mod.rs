//! Direct depthwise convolution (groups = channels, channel multiplier 1 or 2) over NHWC u8,
//! any kernel size, stride, padding and dilation, with a fused per-channel requantization.
//!
//! # Why a direct kernel
//!
//! Through the GEMM a depthwise conv is `C` tiny GEMMs with `N ≤ 2` and `K = kh·kw`: almost all
//! of the work would be packing. Here channels sit in SIMD lanes instead (NHWC makes every tap a
//! contiguous run of `C` bytes): per output pixel, each tap adds `x[tap][c]·w[tap][c]` to a row
//! of i32 accumulators, then one vectorized requantization pass writes the pixel.
//!
//! # Exact and pair-saturating accumulation
//!
//! * **Exact** (the library contract): taps are centred, `Σ (x − a_zp)·(w − w_zp[oc])` over the
//!   in-image taps only — a padded tap holds `a_zp` and contributes exactly 0. This equals the
//!   reference's `acc − a_zp·col_off − row_off·w_zp` (no intermediate can overflow i32:
//!   `|term| ≤ 255·255`, at most `kh·kw` terms).
//! * **Saturating** (fbgemm's depthwise kernel, `vpmaddubsw`): raw u8 × raw i8 products of taps
//!   `(2t, 2t+1)` in (ky, kx) order are summed with signed 16-bit saturation — padded taps
//!   included, holding `a_zp` — and the zero points are corrected afterwards with the row sum
//!   of the taps and the precomputed column offsets, exactly as `qkernels_ref::conv2d_nhwc`.
//!
//! # ISA variants
//!
//! The loops are written once ([`run_body`], `#[inline(always)]`, fixed-stride slices that LLVM
//! vectorizes reliably) and compiled per ISA inside `#[target_feature]` entry points ([`run`]
//! dispatches), so the AVX2 build uses 8-lane and the AVX-512 build 16-lane integer ops and
//! `vroundps`/`vcvttps2dq` for the requantization; the scalar build is the portable fallback.
//! Integer arithmetic is exact and the requantization performs the reference's f32 operations
//! in the same order, so every variant is bit-identical.

use crate::isa::Isa;

/// Depthwise weights packed for the direct kernel.
#[derive(Clone, Debug)]
pub struct DepthwisePacked {
    /// Input channels = groups.
    pub channels: usize,
    /// Channel multiplier (1 or 2): output channel `oc = c·mult + j`.
    pub mult: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    /// Raw weights `[j][tap][c]` (tap = ky·kw + kx), for the saturating variant.
    w_raw: Vec<i32>,
    /// Centred weights `w − w_zp[oc]`, same layout, for the exact variant.
    w_centred: Vec<i32>,
    /// `Σ_tap w − w_zp·taps` per output channel, layout `[j][c]`.
    col_off: Vec<i32>,
    /// `w_zp[oc]`, layout `[j][c]`.
    w_zp: Vec<i32>,
}

impl DepthwisePacked {
    /// Packs OIHW weights `[C·mult, 1, kh, kw]` with per-output-channel zero points `w_zp`
    /// (length `C·mult`).
    pub fn new(
        channels: usize,
        mult: usize,
        kernel_h: usize,
        kernel_w: usize,
        w_oihw: &[i8],
        w_zp: &[i32],
    ) -> DepthwisePacked {
        let taps = kernel_h * kernel_w;
        let oc = channels * mult;
        assert!(mult == 1 || mult == 2, "channel multiplier must be 1 or 2");
        assert_eq!(w_oihw.len(), oc * taps);
        assert_eq!(w_zp.len(), oc);
        let mut w_raw = vec![0i32; mult * taps * channels];
        let mut w_centred = vec![0i32; mult * taps * channels];
        let mut col_off = vec![0i32; mult * channels];
        let mut zp = vec![0i32; mult * channels];
        for c in 0..channels {
            for j in 0..mult {
                let o = c * mult + j;
                let mut sum = 0i32;
                for t in 0..taps {
                    let v = i32::from(w_oihw[o * taps + t]);
                    w_raw[(j * taps + t) * channels + c] = v;
                    w_centred[(j * taps + t) * channels + c] = v - w_zp[o];
                    sum += v;
                }
                col_off[j * channels + c] = sum.wrapping_sub(w_zp[o].wrapping_mul(taps as i32));
                zp[j * channels + c] = w_zp[o];
            }
        }
        DepthwisePacked {
            channels,
            mult,
            kernel_h,
            kernel_w,
            w_raw,
            w_centred,
            col_off,
            w_zp: zp,
        }
    }
}

/// Spatial geometry of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

/// Requantization constants in the `[j][c]` layout (see [`DepthwisePacked`]): for output
/// channel `oc = c·mult + j`, index `j·C + c` holds `mult[oc]` / `bias_acc[oc]`.
#[derive(Clone, Debug)]
pub struct DwRequant {
    pub mult: Vec<f32>,
    pub bias_acc: Option<Vec<f32>>,
    pub out_zp: i32,
    pub qmin: i32,
    pub qmax: i32,
}

/// Runs output rows `rows` (a range of `b·out_h + oy`) of a depthwise conv; `out` holds exactly
/// those rows (`rows.len()·out_w·C·mult` bytes, NHWC).
///
/// # Safety
///
/// `isa` is supported by this CPU. (Shapes are checked with `assert!`: this is a safe API for
/// the scalar path and the caller-facing contract of every path.)
#[allow(clippy::too_many_arguments)]
pub unsafe fn run(
    isa: Isa,
    w: &DepthwisePacked,
    g: &DwGeometry,
    x: &[u8],
    a_zp: u8,
    saturate: bool,
    rq: &DwRequant,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let c = w.channels;
    assert_eq!(x.len(), g.batch * g.in_h * g.in_w * c, "depthwise input");
    assert!(rows.end <= g.batch * g.out_h);
    assert_eq!(
        out.len(),
        rows.len() * g.out_w * c * w.mult,
        "depthwise output"
    );
    assert_eq!(rq.mult.len(), c * w.mult);
    if let Some(b) = &rq.bias_acc {
        assert_eq!(b.len(), c * w.mult);
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees AVX-512 support; shapes asserted above.
        Isa::Avx512Vnni => unsafe { run_avx512(w, g, x, a_zp, saturate, rq, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees AVX2 support; shapes asserted above.
        Isa::Avx2 => unsafe { run_avx2(w, g, x, a_zp, saturate, rq, rows, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 ISA includes NEON; shapes asserted above.
        Isa::Neon | Isa::NeonDot | Isa::NeonI8mm => unsafe {
            run_neon(w, g, x, a_zp, saturate, rq, rows, out)
        },
        _ => run_body(w, g, x, a_zp, saturate, rq, rows, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx2(
    w: &DepthwisePacked,
    g: &DwGeometry,
    x: &[u8],
    a_zp: u8,
    saturate: bool,
    rq: &DwRequant,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    run_body(w, g, x, a_zp, saturate, rq, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx512(
    w: &DepthwisePacked,
    g: &DwGeometry,
    x: &[u8],
    a_zp: u8,
    saturate: bool,
    rq: &DwRequant,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    run_body(w, g, x, a_zp, saturate, rq, rows, out)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_neon(
    w: &DepthwisePacked,
    g: &DwGeometry,
    x: &[u8],
    a_zp: u8,
    saturate: bool,
    rq: &DwRequant,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    run_body(w, g, x, a_zp, saturate, rq, rows, out)
}

/// Channels per register block of the exact path (one `zmm`, two `ymm`, four NEON `q` of i32).
const LANES: usize = 16;

/// The loop nest shared by every ISA (see the module docs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_body(
    w: &DepthwisePacked,
    g: &DwGeometry,
    x: &[u8],
    a_zp: u8,
    saturate: bool,
    rq: &DwRequant,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let c = w.channels;
    let m = w.mult;
    let taps = w.kernel_h * w.kernel_w;
    let oc = c * m;
    let mut acc = vec![0i32; m * c];
    let mut row_off = vec![0i32; c];
    let mut tmp = vec![0u8; if m == 1 { 0 } else { oc }];
    let pad_row = vec![a_zp; c];
    let zero_w = vec![0i32; c];
    let azp = i32::from(a_zp);
    // Per tap: Some(input pixel offset) when inside the image.
    let mut tap_src: Vec<Option<usize>> = vec![None; taps];
    // (weight offset, input offset) of the in-image taps of the current pixel.
    let mut valid: Vec<(usize, usize)> = Vec::with_capacity(taps);
    // (weight offset, input offset relative to the window's top-left pixel) of every tap.
    let rel: Vec<(usize, usize)> = (0..taps)
        .map(|t| {
            let (ky, kx) = (t / w.kernel_w, t % w.kernel_w);
            (t * c, (ky * g.dilation_h * g.in_w + kx * g.dilation_w) * c)
        })
        .collect();
    for (ri, r) in rows.clone().enumerate() {
        let (b, oy) = (r / g.out_h, r % g.out_h);
        let iy0 = (oy * g.stride_h) as isize - g.pad_h as isize;
        let rows_inside = iy0 >= 0 && iy0 as usize + (w.kernel_h - 1) * g.dilation_h < g.in_h;
        for ox in 0..g.out_w {
            let ix0 = (ox * g.stride_w) as isize - g.pad_w as isize;
            let interior =
                rows_inside && ix0 >= 0 && ix0 as usize + (w.kernel_w - 1) * g.dilation_w < g.in_w;
            if interior && !saturate {
                // Every tap inside: offsets are the pixel base plus fixed per-tap deltas.
                let base = ((b * g.in_h + iy0 as usize) * g.in_w + ix0 as usize) * c;
                valid.clear();
                valid.extend(rel.iter().map(|&(wo, r)| (wo, base + r)));
            } else {
                for ky in 0..w.kernel_h {
                    let iy = iy0 + (ky * g.dilation_h) as isize;
                    for kx in 0..w.kernel_w {
                        let ix = ix0 + (kx * g.dilation_w) as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
                        tap_src[ky * w.kernel_w + kx] =
                            inside.then(|| ((b * g.in_h + iy as usize) * g.in_w + ix as usize) * c);
                    }
                }
                valid.clear();
                valid.extend(
                    tap_src
                        .iter()
                        .enumerate()
                        .filter_map(|(t, src)| src.map(|o| (t * c, o))),
                );
            }
            if saturate {
                acc.fill(0);
                row_off.fill(0);
                let mut t = 0;
                while t < taps {
                    let x0 = tap_src[t].map_or(&pad_row[..], |o| &x[o..o + c]);
                    let x1 = if t + 1 < taps {
                        tap_src[t + 1].map_or(&pad_row[..], |o| &x[o..o + c])
                    } else {
                        &pad_row[..]
                    };
                    for (ro, (&a, &bb)) in row_off.iter_mut().zip(x0.iter().zip(x1)) {
                        *ro += i32::from(a) + if t + 1 < taps { i32::from(bb) } else { 0 };
                    }
                    for j in 0..m {
                        let w0 = &w.w_raw[(j * taps + t) * c..][..c];
                        let w1 = if t + 1 < taps {
                            &w.w_raw[(j * taps + t + 1) * c..][..c]
                        } else {
                            &zero_w[..]
                        };
                        let a = &mut acc[j * c..][..c];
                        for i in 0..c {
                            let p = i32::from(x0[i]) * w0[i] + i32::from(x1[i]) * w1[i];
                            a[i] = a[i].wrapping_add(p.clamp(-32768, 32767));
                        }
                    }
                    t += 2;
                }
                for j in 0..m {
                    let a = &mut acc[j * c..][..c];
                    let co = &w.col_off[j * c..][..c];
                    let wz = &w.w_zp[j * c..][..c];
                    for i in 0..c {
                        a[i] = a[i]
                            .wrapping_sub(azp.wrapping_mul(co[i]))
                            .wrapping_sub(row_off[i].wrapping_mul(wz[i]));
                    }
                }
            } else {
                // In-image taps only (a padded tap adds exactly 0), 16 channels at a time in
                // registers across all taps, then one store.
                for j in 0..m {
                    let wj = &w.w_centred[j * taps * c..(j + 1) * taps * c];
                    let a = &mut acc[j * c..][..c];
                    let mut i0 = 0;
                    while i0 + LANES <= c {
                        let mut r = [0i32; LANES];
                        for &(wo, xo) in &valid {
                            let xr: &[u8; LANES] = x[xo + i0..xo + i0 + LANES].try_into().unwrap();
                            let wr: &[i32; LANES] =
                                wj[wo + i0..wo + i0 + LANES].try_into().unwrap();
                            for l in 0..LANES {
                                r[l] += (i32::from(xr[l]) - azp) * wr[l];
                            }
                        }
                        a[i0..i0 + LANES].copy_from_slice(&r);
                        i0 += LANES;
                    }
                    for i in i0..c {
                        a[i] = valid
                            .iter()
                            .map(|&(wo, xo)| (i32::from(x[xo + i]) - azp) * wj[wo + i])
                            .sum();
                    }
                }
            }
            let dst = &mut out[(ri * g.out_w + ox) * oc..][..oc];
            if m == 1 {
                requant_row(&acc, rq, 0, dst);
            } else {
                for j in 0..m {
                    requant_row(&acc[j * c..][..c], rq, j * c, &mut tmp[j * c..][..c]);
                }
                for i in 0..c {
                    for j in 0..m {
                        dst[i * m + j] = tmp[j * c + i];
                    }
                }
            }
        }
    }
}

/// `dst[i] = requant(acc[i])` with constants `rq.*[base + i]` (the reference's
/// `RequantParams::apply`: f32 add of the bias, f32 multiply, round half to even, saturating
/// zero-point add, clamp).
///
/// Written so that it vectorizes: the product is clamped to ±65536 (beyond which the result is
/// the clamp bound either way; NaN maps to 0 as the reference's `as i32` does), and rounding to
/// nearest-even uses the `(v + 1.5·2^23) − 1.5·2^23` identity, exact for `|v| ≤ 2^22` — LLVM
/// does not vectorize `round_ties_even` on x86.
#[inline(always)]
fn requant_row(acc: &[i32], rq: &DwRequant, base: usize, dst: &mut [u8]) {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let n = dst.len();
    let mult = &rq.mult[base..base + n];
    let acc = &acc[..n];
    let (zp, lo, hi) = (rq.out_zp, rq.qmin, rq.qmax);
    let finish = |v: f32| -> u8 {
        let v = if v.is_nan() {
            0.0
        } else {
            v.clamp(-65536.0, 65536.0)
        };
        // SAFETY: `v` is finite and |v| ≤ 65536 after the clamp, and rounding by the magic
        // number keeps it integral and in range, so the conversion is exact (a plain
        // `cvttps2dq`, which vectorizes; the saturating `as` does not).
        let r: i32 = unsafe { ((v + MAGIC) - MAGIC).to_int_unchecked() };
        (r + zp).clamp(lo, hi) as u8
    };
    match &rq.bias_acc {
        Some(bias) => {
            let bias = &bias[base..base + n];
            for i in 0..n {
                dst[i] = finish((acc[i] as f32 + bias[i]) * mult[i]);
            }
        }
        None => {
            for i in 0..n {
                dst[i] = finish(acc[i] as f32 * mult[i]);
            }
        }
    }
}
