//! The exact integer Winograd F(2×2, 3×3) conv engine (exact AVX2 only): 3×3, stride 1, pad 1,
//! dilation 1, one group, all weight zero points 0, `IC ≤ 1024`. Bit-exact with the GEMM path:
//! the transforms and the proof are in [`qkernels_kernels::winograd`]; the requantization is the
//! GEMM path's epilogue with the same constants ([`PackedWeights`]'s `col_term`, bias, mult).
//!
//! Run time, per call: the input is copied once into a zero-point-padded NHWC image of our own
//! (`(2·⌈H/2⌉ + 2) × (2·⌈W/2⌉ + 2)` pixels, channels padded to 16 — the user's buffer is never
//! read out of bounds), then bands of tile rows (sized so `V`, `M` and the output rows of a band
//! stay in L2) are processed independently, in parallel on the rayon pool: input transform of
//! every tile → 16 i16 GEMMs (`s16s16s32_gemm_avx2_6x16c2`) → output transform (>> 2) →
//! requant epilogue row by row into the u8 output. A band writes only its own output rows, so
//! the bytes do not depend on the thread count.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::conv::Conv2dParams;
use crate::gemm::PackedWeights;
use crate::switch::Switch;
use crate::{Isa, QParams, WeightQParams};
use qkernels_kernels::requant::{Epilogue, RequantCols};
use qkernels_kernels::winograd as wk;

static WINOGRAD_ENABLED: Switch = Switch::new("QKERNELS_WINOGRAD");

/// Enables or disables the Winograd engine for the whole process (A/B measurements and tests;
/// bytes are identical either way). `QKERNELS_WINOGRAD=0` turns it off too (read once).
#[doc(hidden)]
pub fn set_winograd_enabled(on: bool) {
    WINOGRAD_ENABLED.set(on);
}

/// Fewest 2×2 tiles (`batch·⌈H/2⌉·⌈W/2⌉`) a call needs to run on the Winograd engine. Below
/// it the transformed weights (16/9 of the GEMM's bytes) are reused too few times: ResNet-18's
/// 7×7×512 stage (16 tiles) measured 1.41 ms against 1.14 ms on the GEMM path, the 14×14×256
/// stage (49 tiles) 0.87 against 1.15 ms (AVX2, one thread).
static MIN_TILES: AtomicUsize = AtomicUsize::new(36);

/// Sets the fewest tiles a call needs to run on the Winograd engine (tests use 0 to cover
/// every size; default 36).
#[doc(hidden)]
pub fn set_winograd_min_tiles(n: usize) {
    MIN_TILES.store(n, Ordering::Relaxed);
}

/// Whether a `batch × h × w` call (pad 1, stride 1: output `h × w`) is large enough.
pub(crate) fn worth_it(batch: usize, h: usize, w: usize) -> bool {
    batch * h.div_ceil(2) * w.div_ceil(2) >= MIN_TILES.load(Ordering::Relaxed)
}

/// Whether the Winograd engine is switched on (flag and `QKERNELS_WINOGRAD`).
pub(crate) fn winograd_enabled() -> bool {
    WINOGRAD_ENABLED.enabled()
}

/// Whether a layer packed with these options gets a Winograd engine (see module docs).
pub(crate) fn eligible(p: &Conv2dParams, isa: Isa, saturate: bool, wq: &WeightQParams) -> bool {
    isa == Isa::Avx2
        && Isa::Avx2.is_supported()
        && !saturate
        && p.groups == 1
        && (p.kernel_h, p.kernel_w) == (3, 3)
        && (p.stride_h, p.stride_w) == (1, 1)
        && (p.pad_h, p.pad_w) == (1, 1)
        && (p.dilation_h, p.dilation_w) == (1, 1)
        && p.in_channels <= 1024
        && (0..p.out_channels).all(|o| wq.zero_point(o) == 0)
}

/// Transformed, packed weights (`U`, see [`qkernels_kernels::winograd`]).
#[derive(Clone)]
pub(crate) struct WinogradWeights {
    u: Vec<i16>,
    ic: usize,
    oc: usize,
    icp: usize,
    ocp: usize,
}

impl std::fmt::Debug for WinogradWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinogradWeights")
            .field("ic", &self.ic)
            .field("oc", &self.oc)
            .finish_non_exhaustive()
    }
}

/// Target bytes of one band's scratch (`V`, one block's `M` and output rows): ¾ of a 1 MiB L2.
const BAND_BYTES: usize = 768 * 1024;

/// Output channels per block: `M` of one block (`tiles·16·NB` i32) stays in L2 (64 and 128
/// measured: 128 is 10 % faster on the 28×28×128 stage, equal on 14×14×256).
const NB: usize = 128;

#[derive(Default)]
struct Scratch {
    v: Vec<i16>,
    m: Vec<i32>,
    y: Vec<i32>,
    zeros: Vec<i32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The padded input image of the calling thread's last call (see [`WinogradWeights::run`]).
    static IMG: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl WinogradWeights {
    /// Transforms OIHW `[OC, IC, 3, 3]` weights.
    pub(crate) fn new(p: &Conv2dParams, w_oihw: &[i8]) -> WinogradWeights {
        let (ic, oc) = (p.in_channels, p.out_channels);
        WinogradWeights {
            u: wk::pack_weights(w_oihw, oc, ic),
            ic,
            oc,
            icp: wk::padded_channels(ic),
            ocp: wk::padded_channels(oc),
        }
    }

    /// Runs the conv (pad 1, so the output is `h × w`) into `out` (exactly
    /// `batch·h·w·OC` bytes). `pw` holds the GEMM path's epilogue constants.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        pw: &PackedWeights,
        isa: Isa,
        x: &[u8],
        (batch, h, w): (usize, usize, usize),
        x_q: QParams,
        out_q: QParams,
        relu: bool,
        out: &mut [u8],
    ) {
        let (ic, oc, icp) = (self.ic, self.oc, self.icp);
        debug_assert_eq!(x.len(), batch * h * w * ic);
        debug_assert_eq!(out.len(), batch * h * w * oc);
        let (ty_n, tx_n) = (h.div_ceil(2), w.div_ceil(2));
        let (hp, wp) = (2 * ty_n + 2, 2 * tx_n + 2);
        // Zero-point-padded copy of the input (our buffer; pixel (iy, ix) at (iy+1, ix+1)),
        // in a per-thread buffer kept between calls (taken out while in use, so a nested call
        // on this thread — a rayon worker running another conv while it waits — gets a fresh one).
        let zx = x_q.zero_point as u8;
        let mut img_buf = IMG.with(|b| std::mem::take(&mut *b.borrow_mut()));
        img_buf.clear();
        img_buf.resize(batch * hp * wp * icp, zx);
        let img = &mut img_buf[..];
        for b in 0..batch {
            for iy in 0..h {
                let src = &x[(b * h + iy) * w * ic..][..w * ic];
                let dst = &mut img[((b * hp + iy + 1) * wp + 1) * icp..][..w * icp];
                if icp == ic {
                    dst.copy_from_slice(src);
                } else {
                    for (d, s) in dst.chunks_exact_mut(icp).zip(src.chunks_exact(ic)) {
                        d[..ic].copy_from_slice(s);
                    }
                }
            }
        }
        let (rq, col_term) = pw.epilogue_constants(x_q, out_q, relu);
        let cols = crate::gemm::requant_cols(&rq, &col_term, None);
        let epi = Epilogue::new(isa);
        // Band height in tile rows: the band's scratch (`V`, `M` and output rows of one block
        // of NB channels) within BAND_BYTES, at least 16 tiles (M tails), and at least as
        // many bands as threads.
        let threads = rayon::current_num_threads();
        let nb = NB.min(self.ocp);
        let per_tile = 16 * icp * 2 + 16 * nb * 4 + 4 * nb * 4;
        let k = (BAND_BYTES / (tx_n * per_tile))
            .max(16usize.div_ceil(tx_n))
            .min(ty_n.div_ceil(threads))
            .clamp(1, ty_n);
        let k = ty_n.div_ceil(ty_n.div_ceil(k)); // balanced bands
        let band_out = 2 * k * w * oc;
        let img = &*img;
        let cols = &cols;
        let work = |(b, band, chunk): (usize, usize, &mut [u8])| {
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                self.band(
                    s,
                    isa,
                    &epi,
                    cols,
                    img,
                    (b, hp, wp),
                    band * k,
                    tx_n,
                    w,
                    chunk,
                    nb,
                )
            })
        };
        let items: Vec<(usize, usize, &mut [u8])> = out
            .chunks_mut(h * w * oc)
            .enumerate()
            .flat_map(|(b, img_out)| {
                img_out
                    .chunks_mut(band_out)
                    .enumerate()
                    .map(move |(i, c)| (b, i, c))
            })
            .collect();
        if rayon::current_num_threads() > 1 && items.len() > 1 {
            use rayon::prelude::*;
            items.into_par_iter().for_each(work);
        } else {
            items.into_iter().for_each(work);
        }
        IMG.with(|b| *b.borrow_mut() = img_buf);
    }

    /// One band: tile rows `ty0 ..` of image `b` covering the output rows in `chunk`.
    #[allow(clippy::too_many_arguments)]
    fn band(
        &self,
        s: &mut Scratch,
        isa: Isa,
        epi: &Epilogue,
        cols: &RequantCols<'_>,
        img: &[u8],
        (b, hp, wp): (usize, usize, usize),
        ty0: usize,
        tx_n: usize,
        w: usize,
        chunk: &mut [u8],
        nbk: usize,
    ) {
        let (oc, icp, ocp) = (self.oc, self.icp, self.ocp);
        let out_rows = chunk.len() / (w * oc);
        let band_ty = out_rows.div_ceil(2);
        let t_n = band_ty * tx_n;
        let tp = t_n.div_ceil(wk::MR) * wk::MR;
        grow(&mut s.v, 16 * tp * icp);
        let nb_max = nbk.min(ocp);
        grow(&mut s.m, tp * 16 * nb_max);
        let ld_y = 2 * tx_n * nb_max;
        grow(&mut s.y, 2 * band_ty * ld_y);
        grow(&mut s.zeros, w);
        // Input transform: V[ξ][t][c].
        let ld_row = wp * icp;
        for t in 0..t_n {
            let (ty, tx) = (ty0 + t / tx_n, t % tx_n);
            let base = ((b * hp + 2 * ty) * wp + 2 * tx) * icp;
            wk::input_tile(isa, img, base, ld_row, icp, &mut s.v[t * icp..], tp * icp);
        }
        let use_avx2 = cfg!(target_arch = "x86_64") && Isa::Avx2.is_supported();
        for j0 in (0..ocp).step_by(nbk) {
            let nb = nbk.min(ocp - j0);
            // 16 GEMMs M[t][ξ][·] = V[ξ][t][·] · U[ξ] for columns j0 .. j0 + nb.
            let panels = ocp / wk::NR;
            for xi in 0..16 {
                for p in j0 / wk::NR..(j0 + nb) / wk::NR {
                    let bo = (xi * panels + p) * icp * wk::NR;
                    let bpanel = &self.u[bo..bo + icp * wk::NR];
                    let pc = (p * wk::NR - j0) + xi * nb;
                    for t0 in (0..t_n).step_by(wk::MR) {
                        let mr = wk::MR.min(t_n - t0);
                        let a = &s.v[(xi * tp + t0) * icp..][..wk::MR * icp];
                        let c = &mut s.m[t0 * 16 * nb + pc..(t0 + mr - 1) * 16 * nb + pc + wk::NR];
                        if use_avx2 {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: AVX2 checked; `a` holds MR rows of `icp`, `bpanel` one c2
                            // panel of `icp` K, `c` covers rows `< mr` (stride 16·nb) × 16
                            // columns.
                            unsafe {
                                wk::s16s16s32_gemm_avx2_6x16c2(
                                    icp,
                                    a.as_ptr(),
                                    bpanel.as_ptr(),
                                    c.as_mut_ptr(),
                                    16 * nb,
                                    mr,
                                    wk::NR,
                                )
                            };
                        } else {
                            wk::s16s16s32_gemm_scalar(icp, a, bpanel, c, 16 * nb, mr, wk::NR);
                        }
                    }
                }
            }
            // Output transform into output rows of i32 (2 per tile row, 2·tx_n pixels of nb).
            let ld_y = 2 * tx_n * nb;
            for t in 0..t_n {
                let (tyl, tx) = (t / tx_n, t % tx_n);
                let o0 = 2 * tyl * ld_y + 2 * tx * nb;
                let m = &s.m[t * 16 * nb..][..16 * nb];
                wk::output_tile(isa, m, nb, nb, &mut s.y, [o0, o0 + ld_y], nb);
            }
            // Requantize columns j0 .. j0 + nb (∩ oc) of each output row (w pixels).
            let n = nb.min(oc.saturating_sub(j0));
            if n == 0 {
                continue;
            }
            let cj = cols.range(j0, n);
            for (r, row) in chunk.chunks_exact_mut(w * oc).enumerate() {
                // SAFETY: `row` is an exclusive slice of exactly `w` pixels × `oc` bytes;
                // columns `j0 .. j0 + n ≤ oc` of each pixel are written.
                unsafe {
                    epi.requant_tile_raw(
                        &s.y[r * ld_y..],
                        nb,
                        w,
                        n,
                        &s.zeros[..w],
                        &cj,
                        row.as_mut_ptr().add(j0),
                        oc,
                    )
                };
            }
        }
    }
}
