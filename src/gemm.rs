//! The packed GEMM engine: `C = requant(A · Wᵀ)` with u8 activations, i8 weights, exact i32
//! accumulation (or fbgemm's pair saturation when asked) and a fused requantize + clamp.
//!
//! Data flow (fbgemm's `PackBMatrix` + `PackAWithRowOffset` + `fbgemmPacked` +
//! `ReQuantizeOutput`):
//!
//! 1. [`PackedWeights::new`] packs `W` (`N × K`, Linear layout) **once** into the chosen
//!    microkernel's panel layout, with column offsets `Σw − w_zp·K` folded in.
//! 2. Per call, rows of `A` come from an [`ASource`] (a plain matrix, or im2col rows of a
//!    convolution) and are packed per block; row sums are computed only when a weight zero
//!    point is non-zero.
//! 3. The microkernel produces i32 tiles; the epilogue applies the zero-point corrections and
//!    requantizes (or stores raw i32) — and, for a conv's residual join (`Residual`, from
//!    `Conv2d::run_add`), applies the quantized add to the tile's u8 values before storing them,
//!    with PyTorch's vector/tail formula rule on the output's flat index.
//!
//! Results are bit-identical for every ISA and every thread count.

use crate::switch::Switch;
use crate::validate::{
    check_capacity, check_len, check_nonzero, check_qparams_u8, check_weight_qparams,
    checked_product,
};
use crate::weight_arena::PackedBuf;
use crate::{Error, Isa, QParams, Result, WeightQParams};
use aligned_vec::{AVec, ConstAlign};
use qkernels_kernels::gemm::{
    GemmKernel, GemmRequantUkernel, IgemmDeferUkernel, IgemmKernel, IgemmRequantUkernel, Prefetch,
    a_is_row_major_u8, a7_companion, best_kernel, gemv_companion, igemm_companion,
};
use qkernels_kernels::ops::AddParams;
use qkernels_kernels::requant::{
    DeferConsts, Deferred, Epilogue, RequantCols, Tile64, TileAdd, correct_tile, nan_guard_needed,
};
use qkernels_ref::RequantParams;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Options fixed at pack time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmOptions {
    /// ISA whose microkernel the weights are packed for.
    pub isa: Isa,
    /// Reproduce fbgemm's i16 pair saturation (`vpmaddubsw`) instead of exact sums.
    pub saturate_pairs: bool,
}

impl Default for GemmOptions {
    fn default() -> Self {
        GemmOptions {
            isa: crate::active_isa(),
            saturate_pairs: false,
        }
    }
}

impl GemmOptions {
    /// Exact accumulation on `isa`; `Err` if this CPU does not support it.
    pub fn for_isa(isa: Isa) -> Result<GemmOptions> {
        if !isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "ISA {isa} is not supported by this CPU"
            )));
        }
        Ok(GemmOptions {
            isa,
            saturate_pairs: false,
        })
    }
}

/// Rows of the `A` operand (`M × K` u8), produced on demand so a convolution can stream im2col
/// rows without materialising the im2col matrix.
pub trait ASource: Sync {
    /// `M`.
    fn rows(&self) -> usize;
    /// `K`.
    fn depth(&self) -> usize;
    /// Writes `A[row0 + i][k0 .. k0 + kc]` to `dst[i * ld ..][.. kc]` for `i < rows`.
    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize);
    /// A plain row-major matrix `(data, lda)`, when `A` is one (lets packers read it directly).
    fn as_matrix(&self) -> Option<(&[u8], usize)> {
        None
    }
    /// The rows as taps of an NHWC image, when `A` is a convolution's im2col matrix (lets an
    /// indirect kernel read the image in place, see [`Indirect`]).
    fn as_indirect(&self) -> Option<Indirect<'_>> {
        None
    }
}

/// An im2col `A` described by its image instead of its bytes, for the indirect (IGEMM) path:
/// row `r` is output pixel `(b, oy, ox)` (`r = (b·oh + oy)·ow + ox`), and its K entries are, per
/// tap `t = ky·kw + kx`, the `ic` bytes at channel `c0` of input pixel
/// `(b, oy·sh + ky·dh − ph, ox·sw + kx·dw − pw)`, or `ic` copies of `pad` outside the image.
#[derive(Clone, Copy, Debug)]
pub struct Indirect<'a> {
    /// The NHWC image, `batch × in_h × in_w × in_c` (at least).
    pub x: &'a [u8],
    /// Input geometry (batch, sizes, kernel, stride, padding, dilation; `in_c` is the pixel
    /// stride in bytes).
    pub geo: crate::Conv2dGeometry,
    /// First channel of the tap's run (a group's offset).
    pub c0: usize,
    /// Bytes per tap.
    pub ic: usize,
    pub oh: usize,
    pub ow: usize,
    /// The input zero point (padded taps).
    pub pad: u8,
}

impl Indirect<'_> {
    fn taps(&self) -> usize {
        self.geo.kernel_h * self.geo.kernel_w
    }

    /// Byte offset of tap `t = ky·kw + kx` from the tap (0, 0) of the same output pixel (valid
    /// when both are inside the image).
    fn tap_offsets(&self) -> Vec<usize> {
        let g = &self.geo;
        (0..g.kernel_h)
            .flat_map(|ky| {
                (0..g.kernel_w)
                    .map(move |kx| (ky * g.dilation_h * g.in_w + kx * g.dilation_w) * g.in_c)
            })
            .collect()
    }

    /// Window mode of the indirect kernel (see `qkernels_kernels::gemm::IgemmUkernel`): when
    /// every output pixel of the tile starting at A row `row0` (`rows` valid rows) has its whole
    /// window inside the image, appends `mr` pointers — row `i`'s window start, rows `rows ..
    /// mr` repeating the last one — and returns `true`; otherwise appends nothing and returns
    /// `false`. Row `i`'s tap `t` is then `dst[i] + tap_off[t]`.
    ///
    /// Every pointer is derived from a bounds-checked slice of `x` covering its whole window
    /// (`tap_off[taps − 1] + ic` bytes).
    fn push_window_tile(
        &self,
        row0: usize,
        rows: usize,
        mr: usize,
        tap_off: &[usize],
        dst: &mut Vec<*const u8>,
    ) -> bool {
        let g = &self.geo;
        debug_assert!((1..=mr).contains(&rows) && tap_off.len() == self.taps());
        let len = tap_off[tap_off.len() - 1] + self.ic;
        let start = dst.len();
        // The usual case: the tile's pixels lie in one output row, so their windows are one
        // input-pixel stride `sw` apart and the whole tile is inside iff its first and last
        // windows are. One bounds check and one add per row (building the arrays through
        // `windows` cost ≈ 1.5 % of a ResNet-18 pass).
        let (b, oy, ox) = self.pixel(row0);
        if ox + rows <= self.ow {
            let (iy0, ix0) = self.origin(oy, ox);
            let ix_last = ix0 + ((rows - 1) * g.stride_w) as isize;
            if !(self.window_inside(iy0, ix0) && self.window_inside(iy0, ix_last)) {
                return false;
            }
            let step = g.stride_w * g.in_c;
            let base = self.offset(b * g.in_h, iy0, ix0);
            // Row `i`'s window is `[i·step, i·step + len)` of this checked slice.
            let win = self.x[base..base + (rows - 1) * step + len].as_ptr();
            dst.extend((0..mr).map(|i| win.wrapping_add(i.min(rows - 1) * step)));
            return true;
        }
        for (img, iy0, ix0, inside) in self.windows(row0, rows) {
            if !inside {
                dst.truncate(start);
                return false;
            }
            let base = self.offset(img, iy0, ix0);
            dst.push(self.x[base..base + len].as_ptr());
        }
        let last = dst[dst.len() - 1];
        dst.resize(start + mr, last);
        true
    }

    /// Appends the indirection array of one `mr`-row tile starting at A row `row0` with `rows`
    /// valid rows (see `qkernels_kernels::gemm::IgemmUkernel`): `taps · mr` pointers, tap-major,
    /// padded taps and rows `rows .. mr` pointing at `zero` (`ic` bytes of `pad`) — or null
    /// when `pad == 0` (skipped by the kernel). `tap_off` is [`Indirect::tap_offsets`].
    ///
    /// Every pointer is derived from a bounds-checked slice of `x` covering the `ic` bytes it
    /// addresses (for an interior pixel: one check of its whole window).
    fn push_tile(
        &self,
        row0: usize,
        rows: usize,
        mr: usize,
        tap_off: &[usize],
        zero: &[u8],
        dst: &mut Vec<*const u8>,
    ) {
        let g = &self.geo;
        let taps = tap_off.len();
        debug_assert!(rows <= mr && zero.len() >= self.ic && taps == self.taps());
        let start = dst.len();
        // Padded taps and unused rows: with zero point 0 their products are `0 · w = 0`, so
        // they get null pointers, which the kernel skips (see the kernels' `IgemmUkernel`).
        let pad = if self.pad == 0 {
            std::ptr::null()
        } else {
            zero.as_ptr()
        };
        dst.resize(start + taps * mr, pad);
        let out = &mut dst[start..];
        for (i, (img, iy0, ix0, inside)) in self.windows(row0, rows).enumerate() {
            if inside {
                // Interior pixel: every tap inside; one bounds check for the whole window.
                let base = self.offset(img, iy0, ix0);
                let last = tap_off[taps - 1];
                let win = self.x[base..base + last + self.ic].as_ptr();
                for (t, &o) in tap_off.iter().enumerate() {
                    // `o ≤ last`: inside the checked window.
                    out[t * mr + i] = win.wrapping_add(o);
                }
            } else {
                for ky in 0..g.kernel_h {
                    let iy = iy0 + (ky * g.dilation_h) as isize;
                    if iy < 0 || iy as usize >= g.in_h {
                        continue;
                    }
                    for kx in 0..g.kernel_w {
                        let ix = ix0 + (kx * g.dilation_w) as isize;
                        if ix < 0 || ix as usize >= g.in_w {
                            continue;
                        }
                        let off = self.offset(img, iy, ix);
                        out[(ky * g.kernel_w + kx) * mr + i] = self.x[off..off + self.ic].as_ptr();
                    }
                }
            }
        }
    }

    /// The window origins of the output pixels of A rows `row0 .. row0 + rows`, in order:
    /// `(b·in_h, iy0, ix0, inside)` — image row offset, top-left input coordinates (may be
    /// negative: padding) and whether the whole window lies inside the image.
    fn windows(
        &self,
        row0: usize,
        rows: usize,
    ) -> impl Iterator<Item = (usize, isize, isize, bool)> + '_ {
        let g = &self.geo;
        let mut pos = self.pixel(row0);
        (0..rows).map(move |_| {
            let (b, oy, ox) = pos;
            let (iy0, ix0) = self.origin(oy, ox);
            let inside = self.window_inside(iy0, ix0);
            pos = if ox + 1 < self.ow {
                (b, oy, ox + 1)
            } else if oy + 1 < self.oh {
                (b, oy + 1, 0)
            } else {
                (b + 1, 0, 0)
            };
            (b * g.in_h, iy0, ix0, inside)
        })
    }

    /// Output pixel `(b, oy, ox)` of A row `row`.
    fn pixel(&self, row: usize) -> (usize, usize, usize) {
        let plane = self.oh * self.ow;
        let rem = row % plane;
        (row / plane, rem / self.ow, rem % self.ow)
    }

    /// Top-left input coordinates of output pixel `(oy, ox)`'s window (negative: padding).
    fn origin(&self, oy: usize, ox: usize) -> (isize, isize) {
        let g = &self.geo;
        (
            (oy * g.stride_h) as isize - g.pad_h as isize,
            (ox * g.stride_w) as isize - g.pad_w as isize,
        )
    }

    /// Whether the window with top-left input coordinates `(iy0, ix0)` lies inside the image.
    fn window_inside(&self, iy0: isize, ix0: isize) -> bool {
        let g = &self.geo;
        iy0 >= 0
            && ix0 >= 0
            && iy0 as usize + (g.kernel_h - 1) * g.dilation_h < g.in_h
            && ix0 as usize + (g.kernel_w - 1) * g.dilation_w < g.in_w
    }

    /// Offset in `x` of channel `c0` of input pixel `(iy, ix)` of the image whose first row is
    /// `img_row` (`b·in_h`); `iy, ix ≥ 0`.
    fn offset(&self, img_row: usize, iy: isize, ix: isize) -> usize {
        let g = &self.geo;
        ((img_row + iy as usize) * g.in_w + ix as usize) * g.in_c + self.c0
    }
}

/// Whether eligible convolutions use the indirect (IGEMM) kernels (default on). Benches and
/// tests switch it off to compare with the im2col-packing path; results are identical.
static IGEMM_ENABLED: AtomicBool = AtomicBool::new(true);

/// Enables or disables the indirect-conv (IGEMM) path for the whole process (A/B measurements).
#[doc(hidden)]
pub fn set_igemm_enabled(on: bool) {
    IGEMM_ENABLED.store(on, Ordering::Relaxed);
}

/// Whether full 64-column IGEMM tiles requantize straight from the microkernel's registers
/// (`IgemmKernel::ukernel_requant`; default on). A switch for A/B measurements and tests: the
/// bytes are identical either way. `QKERNELS_FUSED_EPILOGUE=0` turns it off too.
static FUSED_EPILOGUE: Switch = Switch::new("QKERNELS_FUSED_EPILOGUE");

/// Enables or disables the fused IGEMM epilogue for the whole process (A/B measurements).
#[doc(hidden)]
pub fn set_fused_epilogue_enabled(on: bool) {
    FUSED_EPILOGUE.set(on);
}

/// Whether full IGEMM tiles defer their epilogue to the next tile's kernel call
/// (`IgemmKernel::ukernel_defer`, software pipelining across tiles: see
/// `qkernels_kernels::requant::Deferred`; default on, effective only with the fused epilogue).
/// A switch for A/B measurements and tests: the bytes are identical either way.
/// `QKERNELS_DEFER_EPILOGUE=0` turns it off too.
static DEFER_EPILOGUE: Switch = Switch::new("QKERNELS_DEFER_EPILOGUE");

/// Enables or disables the deferred epilogue for the whole process (A/B measurements).
#[doc(hidden)]
pub fn set_defer_epilogue_enabled(on: bool) {
    DEFER_EPILOGUE.set(on);
}

/// The largest K whose IGEMM tiles defer their epilogue. Above it the epilogue is under 1 % of
/// a tile and deferring gains nothing: measured on ResNet-18 (1 thread, Zen 4, per-layer
/// minima), deferring made the K = 576 convs 1.2 % (2.2 % with the fused residual add) faster,
/// K = 1152 0.4–0.9 %, K = 2304 0.2–0.5 %, and the K = 4608 convs 0.3–0.8 % slower (the stored
/// and reloaded accumulators cost more than the little epilogue they hide).
const DEFER_MAX_K: usize = 2304;

/// A row-major u8 matrix used as `A`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    data: &'a [u8],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> Matrix<'a> {
    /// `rows × cols` with row stride `ld ≥ cols`; `data` must hold `(rows−1)·ld + cols` bytes.
    pub fn new(data: &'a [u8], rows: usize, cols: usize, ld: usize) -> Result<Matrix<'a>> {
        if ld < cols {
            return crate::invalid!("matrix: leading dimension {ld} < columns {cols}");
        }
        let need = if rows == 0 {
            0
        } else {
            (rows - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(cols))
                .ok_or_else(|| Error::InvalidArgument("matrix: size overflows usize".into()))?
        };
        check_capacity(data.len(), need, "matrix data")?;
        Ok(Matrix {
            data,
            rows,
            cols,
            ld,
        })
    }
}

impl ASource for Matrix<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.cols
    }
    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize) {
        for i in 0..rows {
            let src = &self.data[(row0 + i) * self.ld + k0..][..kc];
            dst[i * ld..][..kc].copy_from_slice(src);
        }
    }
    fn as_matrix(&self) -> Option<(&[u8], usize)> {
        Some((self.data, self.ld))
    }
}

/// Requantization constants of the last `gemm_requant` call, keyed by its quantization
/// parameters: building them costs N f32 divisions and two allocations, as much as the whole
/// multiply for a GEMV (M = 1).
#[derive(Clone)]
struct EpilogueCache {
    a_q: QParams,
    out_q: QParams,
    relu: bool,
    rq: Arc<RequantParams>,
    col_term: Arc<Vec<i32>>,
}

/// B packed a second time for the kernel's 7-bit companion ([`a7_companion`]): the driver runs
/// that kernel on A panels whose activations are all ≤ 127, where it is exact.
#[derive(Clone)]
struct A7Weights {
    kernel: &'static GemmKernel,
    packed: PackedBuf,
    panel_bytes: usize,
    /// `W` transposed (`K × N`), for the outlier corrections (see [`pack_a7`]).
    wt: Vec<i8>,
    /// Single-row companion of `kernel` (same packed B), for one-row tail panels.
    gemv: Option<&'static GemmKernel>,
}

/// Whether the 7-bit fast path may be used: on unless `QKERNELS_A7=0` (read once; a switch for
/// A/B measurements — the bytes are identical either way).
fn a7_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("QKERNELS_A7").map_or(true, |v| v != "0"))
}

/// Packs every B panel of `w` (`n × k`) for `kernel`; returns the buffer and the panel size.
fn pack_b_panels(kernel: &GemmKernel, w: &[i8], n: usize, k: usize) -> Result<(PackedBuf, usize)> {
    let panel_bytes = (kernel.b_panel_bytes)(k);
    let panels = n.div_ceil(kernel.nr);
    let total = crate::validate::checked_product(&[panels, panel_bytes], "packed weights")?;
    let mut packed = AVec::<u8, ConstAlign<64>>::from_iter(64, std::iter::repeat_n(0u8, total));
    for (p, dst) in packed.chunks_mut(panel_bytes).enumerate() {
        let j0 = p * kernel.nr;
        let cols = kernel.nr.min(n - j0);
        (kernel.pack_b)(&w[j0 * k..], k, cols, k, dst);
    }
    Ok((PackedBuf::Own(packed), panel_bytes))
}

/// Weights packed once for one microkernel, with everything the epilogue needs.
pub struct PackedWeights {
    kernel: &'static GemmKernel,
    /// Single-row companion of `kernel` reading the same packed B (used when M = 1).
    gemv: Option<&'static GemmKernel>,
    n: usize,
    k: usize,
    /// `ceil(N/NR)` panels of `b_panel_bytes(K)` bytes each (owned, or in a model's huge-page
    /// arena, see [`crate::weight_arena`]).
    packed: PackedBuf,
    panel_bytes: usize,
    /// Second packing of B for the 7-bit companion kernel (exact AVX2 only).
    a7: Option<Box<A7Weights>>,
    col_offsets: Vec<i32>,
    w_zp: Vec<i32>,
    any_w_zp: bool,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
    cache: Mutex<Option<EpilogueCache>>,
}

impl Clone for PackedWeights {
    fn clone(&self) -> PackedWeights {
        PackedWeights {
            kernel: self.kernel,
            gemv: self.gemv,
            n: self.n,
            k: self.k,
            packed: self.packed.clone(),
            panel_bytes: self.panel_bytes,
            a7: self.a7.clone(),
            col_offsets: self.col_offsets.clone(),
            w_zp: self.w_zp.clone(),
            any_w_zp: self.any_w_zp,
            wq: self.wq.clone(),
            bias: self.bias.clone(),
            cache: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("kernel", &self.kernel.name)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

impl PackedWeights {
    /// Packs `w` (`n × k`, row-major, PyTorch Linear layout) for the active ISA, exact mode.
    pub fn new(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
    ) -> Result<PackedWeights> {
        PackedWeights::with_options(w, n, k, wq, bias, &GemmOptions::default())
    }

    /// Packs `w` (`n × k`, row-major) for `opts.isa` and accumulation style.
    pub fn with_options(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        opts: &GemmOptions,
    ) -> Result<PackedWeights> {
        check_nonzero(n, "GEMM N (output channels)")?;
        check_nonzero(k, "GEMM K (depth)")?;
        let nk = crate::validate::checked_product(&[n, k], "weights")?;
        crate::validate::check_len(w.len(), nk, "weights")?;
        check_weight_qparams(wq, n, "weights")?;
        if let Some(b) = bias {
            crate::validate::check_len(b.len(), n, "bias")?;
        }
        if !opts.isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "ISA {} is not supported by this CPU",
                opts.isa
            )));
        }
        let kernel = best_kernel(opts.isa, opts.saturate_pairs);
        PackedWeights::with_kernel(w, n, k, wq, bias, kernel)
    }

    /// Packs `w` for one specific microkernel of `all_kernels()` (benches and tests compare
    /// tiles with this; the public entry points choose the production kernel).
    #[doc(hidden)]
    pub fn with_kernel(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        kernel: &'static GemmKernel,
    ) -> Result<PackedWeights> {
        check_nonzero(n, "GEMM N (output channels)")?;
        check_nonzero(k, "GEMM K (depth)")?;
        let nk = crate::validate::checked_product(&[n, k], "weights")?;
        crate::validate::check_len(w.len(), nk, "weights")?;
        check_weight_qparams(wq, n, "weights")?;
        if let Some(b) = bias {
            crate::validate::check_len(b.len(), n, "bias")?;
        }
        if !kernel.isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "kernel {} needs ISA {}, not supported by this CPU",
                kernel.name, kernel.isa
            )));
        }
        if kernel.a_max < 255 {
            return crate::invalid!(
                "kernel {} is exact only for activations <= {}: it runs as the 7-bit companion of \
                 a general kernel, on panels the driver has checked",
                kernel.name,
                kernel.a_max
            );
        }
        let (packed, panel_bytes) = pack_b_panels(kernel, w, n, k)?;
        let a7 = match a7_companion(kernel).filter(|_| a7_enabled()) {
            Some(k7) => {
                let (packed, panel_bytes) = pack_b_panels(k7, w, n, k)?;
                let mut wt = vec![0i8; n * k];
                for (j, row) in w.chunks_exact(k).enumerate() {
                    for (kk, &v) in row.iter().enumerate() {
                        wt[kk * n + j] = v;
                    }
                }
                Some(Box::new(A7Weights {
                    kernel: k7,
                    packed,
                    panel_bytes,
                    wt,
                    gemv: gemv_companion(k7),
                }))
            }
            None => None,
        };
        let w_zp: Vec<i32> = (0..n).map(|j| wq.zero_point(j)).collect();
        let col_offsets = qkernels_ref::col_offsets(n, k, w, &w_zp);
        Ok(PackedWeights {
            kernel,
            gemv: gemv_companion(kernel),
            n,
            k,
            packed,
            panel_bytes,
            a7,
            col_offsets,
            any_w_zp: w_zp.iter().any(|&z| z != 0),
            w_zp,
            wq: wq.clone(),
            bias: bias.map(<[f32]>::to_vec),
            cache: Mutex::new(None),
        })
    }

    /// `a_zp · col_off[j]` for every column (wrapping).
    fn col_term(&self, a_zp: i32) -> Vec<i32> {
        self.col_offsets
            .iter()
            .map(|&c| a_zp.wrapping_mul(c))
            .collect()
    }

    /// The requantization constants and column terms for these parameters, from the one-entry
    /// cache when the previous call used the same ones (the usual case: a layer is called with
    /// fixed qparams). Identical values either way: the cache only stores what
    /// [`PackedWeights::requant_params`] returns.
    pub(crate) fn epilogue_constants(
        &self,
        a_q: QParams,
        out_q: QParams,
        relu: bool,
    ) -> (Arc<RequantParams>, Arc<Vec<i32>>) {
        if let Ok(guard) = self.cache.lock()
            && let Some(c) = guard.as_ref()
            && c.a_q == a_q
            && c.out_q == out_q
            && c.relu == relu
        {
            return (c.rq.clone(), c.col_term.clone());
        }
        let rq = Arc::new(self.requant_params(a_q, out_q, relu));
        let col_term = Arc::new(self.col_term(a_q.zero_point));
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(EpilogueCache {
                a_q,
                out_q,
                relu,
                rq: rq.clone(),
                col_term: col_term.clone(),
            });
        }
        (rq, col_term)
    }

    /// Output channels `N`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Depth `K`.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The packed buffers (B, and B for the 7-bit companion if any), for moving them into a
    /// shared huge-page arena ([`crate::weight_arena::share_huge_pages`]).
    pub(crate) fn packed_bufs_mut(&mut self) -> Vec<&mut PackedBuf> {
        let mut v = vec![&mut self.packed];
        if let Some(a7) = self.a7.as_deref_mut() {
            v.push(&mut a7.packed);
        }
        v
    }

    /// The ISA the weights are packed for.
    pub fn isa(&self) -> Isa {
        self.kernel.isa
    }
    /// Name of the microkernel that runs these weights.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }
    /// The 7-bit companion kernel these weights were also packed for (exact AVX2: used on A
    /// panels whose activations are all ≤ 127), if any.
    pub fn seven_bit_kernel(&self) -> Option<&'static str> {
        self.a7.as_ref().map(|a| a.kernel.name)
    }
    /// Whether the weights run in fbgemm's pair-saturating mode.
    pub fn saturates(&self) -> bool {
        self.kernel.saturating
    }
    /// Weight quantization parameters.
    pub fn weight_qparams(&self) -> &WeightQParams {
        &self.wq
    }
    /// The float bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The indirect-conv kernel an eligible im2col `A` runs on with these weights (switched on,
    /// an IGEMM companion exists for the weights' kernel, no weight zero point — the indirect
    /// path computes no row sums), if any.
    pub(crate) fn igemm_kernel(&self) -> Option<&'static IgemmKernel> {
        if !IGEMM_ENABLED.load(Ordering::Relaxed) || self.any_w_zp {
            return None;
        }
        igemm_companion(self.kernel)
    }

    /// Requantization constants for a call with these input/output qparams.
    pub fn requant_params(&self, a_q: QParams, out_q: QParams, relu: bool) -> RequantParams {
        RequantParams::new(self.n, a_q, &self.wq, self.bias.as_deref(), out_q, relu)
    }
}

/// A residual add fused into the u8 epilogue: every output element `(i, j)` becomes
/// `quantized::add(requant(acc), skip[i·ldskip + j])`, computed per tile while it is L1-hot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Residual<'s> {
    /// The skip operand (`M` rows of `N` bytes, row stride `ldskip`).
    pub skip: &'s [u8],
    pub ldskip: usize,
    /// The add's constants (conv output, skip and add output qparams, ReLU).
    pub params: AddParams,
    /// PyTorch's formula rule on the flat index `i·ldc + j` of the output: elements below
    /// `tail_from` take the vector formula, the rest the scalar (tail) one.
    pub tail_from: usize,
}

/// Where results go.
enum Sink<'o> {
    U8 {
        out: &'o mut [u8],
        rq: Arc<RequantParams>,
        col_term: Arc<Vec<i32>>,
        residual: Option<Residual<'o>>,
    },
    I32 {
        out: &'o mut [i32],
        col_term: Arc<Vec<i32>>,
    },
}

/// Target size of one packed A block (MC × K bytes): it is re-read once per B panel, so it
/// must stay in L2 (1 MiB on Zen 4) next to the B panel being streamed.
const A_BLOCK_BYTES: usize = 192 * 1024;

/// L2 bytes an item may fill with its A block plus the one B panel it streams (5/8 of Zen 4's
/// 1 MiB L2: the rest is left to the im2col source rows, the output tiles and the other
/// thread's traffic through the shared L3). Used only to let a whole `A` be one block when
/// splitting it would make every B panel come from L3 once per block instead.
const L2_ITEM_BYTES: usize = 640 * 1024;

/// Microkernel multiply-accumulates per cycle assumed by [`partition`] (one zmm `vpdpbusd`
/// per cycle on Zen 4; only the ratio to [`L3_BYTES_PER_CYCLE`] matters).
const MACS_PER_CYCLE: usize = 64;

/// Sustained bytes per cycle one core pulls from L3 (or packs from the im2col source) while its
/// microkernel runs, in [`partition`]'s cost model: B panels re-read per M block and A blocks
/// re-packed per N chunk cost this much on top of the arithmetic.
const L3_BYTES_PER_CYCLE: usize = 16;

/// Fixed cost of one work item in cycles (rayon task, A block setup, epilogue constants).
const ITEM_CYCLES: usize = 2000;

/// The GEMM's size in the driver's units, for [`partition`].
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// `ceil(M / MR)`.
    m_panels: usize,
    /// `ceil(N / NR)`.
    n_panels: usize,
    /// Bytes of one packed A panel (MR × K rounded).
    a_panel: usize,
    /// Bytes of one packed B panel (K rounded × NR).
    b_panel: usize,
    /// MACs of one MR × NR microkernel call.
    tile_macs: usize,
    threads: usize,
}

/// Splits the GEMM into work items: returns `(mc_panels, pc)`, the A panels per M block and
/// the B panels per N chunk; the items are the M blocks × N chunks.
///
/// One thread: M blocks of at most [`A_BLOCK_BYTES`] (the packed block stays in L2 while every
/// B panel streams past it) and all of N per block.
///
/// Several threads: the grid (M blocks × N chunks) with the smallest estimated time, where
/// * the arithmetic takes `ceil(items / threads)` rounds of the largest item (items are near
///   equal by construction; rayon hands them out dynamically),
/// * every M block streams all the B panels of its N chunks from L3 and every N chunk packs
///   the A rows of its M block, so the traffic is about `m_blocks·|B| + n_chunks·|A|` bytes,
///   shared by the threads (less when a thread's B chunk stays in L2 across its M blocks, or
///   its A block across its N chunks),
/// * each item costs a fixed [`ITEM_CYCLES`].
///
/// So a short, deep GEMM (ResNet stage 4: M = 49, N = 512, K = 4608; `B` is 2.3 MiB, `A` 260
/// KiB) splits N only and each 288 KiB B panel is fetched once, and a narrow one (stage 1:
/// N = 64, one B panel) splits M only, into equal blocks. M blocks may exceed
/// [`A_BLOCK_BYTES`] only when all of `A` fits in L2 next to a B panel ([`L2_ITEM_BYTES`]).
///
/// Only the partition depends on the thread count; each output element's arithmetic does not.
fn partition(s: &Shape) -> (usize, usize) {
    let (mp, np) = (s.m_panels.max(1), s.n_panels.max(1));
    let cap = (A_BLOCK_BYTES / s.a_panel.max(1)).clamp(1, mp);
    if s.threads <= 1 {
        return (cap, np);
    }
    // Saturating arithmetic: the estimates only compare, and never overflow into a wrong pick.
    let a_bytes = mp.saturating_mul(s.a_panel);
    let b_bytes = np.saturating_mul(s.b_panel);
    let whole_a_fits = a_bytes.saturating_add(s.b_panel) <= L2_ITEM_BYTES;
    let tile_cycles = s.tile_macs.div_ceil(MACS_PER_CYCLE).max(1);
    // More than ~16 items per thread never pays (the item overhead grows, balance does not).
    let max_items = 16 * s.threads;
    let mut best = (cap, np);
    let mut best_cost = usize::MAX;
    let mb_min = if whole_a_fits { 1 } else { mp.div_ceil(cap) };
    for mb in mb_min..=mp.min(max_items).max(mb_min) {
        let mc = mp.div_ceil(mb);
        let mb = mp.div_ceil(mc);
        for nb in 1..=np.min(max_items / mb).max(1) {
            let pc = np.div_ceil(nb);
            let nb = np.div_ceil(pc);
            let items = mb * nb;
            let rounds = items.div_ceil(s.threads);
            let item = (mc * pc).saturating_mul(tile_cycles) + ITEM_CYCLES;
            let compute = rounds.saturating_mul(item);
            // A thread keeps its last A block (so packs each block about once per thread), and
            // keeps its B chunk in L2 across M blocks when block and chunk fit together.
            let chunk = (mc.saturating_mul(s.a_panel)).saturating_add(pc.saturating_mul(s.b_panel));
            let b_fetches = if chunk <= L2_ITEM_BYTES {
                mb.min(s.threads)
            } else {
                mb
            };
            let a_fetches = nb.min(s.threads);
            let bytes = b_fetches
                .saturating_mul(b_bytes)
                .saturating_add(a_fetches.saturating_mul(a_bytes));
            let traffic = bytes / (L3_BYTES_PER_CYCLE * s.threads);
            let cost = compute.saturating_add(traffic);
            if cost < best_cost {
                best_cost = cost;
                best = (mc, pc);
            }
        }
    }
    best
}

fn check_out(m: usize, n: usize, ldc: usize, len: usize) -> Result<()> {
    if ldc < n {
        return crate::invalid!("output leading dimension {ldc} < N {n}");
    }
    let need = (m - 1)
        .checked_mul(ldc)
        .and_then(|v| v.checked_add(n))
        .ok_or_else(|| Error::InvalidArgument("output size overflows usize".into()))?;
    check_capacity(len, need, "output")
}

fn check_a(pw: &PackedWeights, a: &dyn ASource) -> Result<usize> {
    if a.depth() != pw.k {
        return crate::invalid!("A has depth {} but weights have K = {}", a.depth(), pw.k);
    }
    check_nonzero(a.rows(), "GEMM M (rows)")?;
    Ok(a.rows())
}

/// `out[i·ldc + j] = requant(Σ_k (A[i,k] − a_zp)(W[j,k] − w_zp[j]))` as u8, with fbgemm's float
/// requantization (bias, per-channel scales, ReLU clamping at the output zero point).
pub fn gemm_requant(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
    ldc: usize,
) -> Result<()> {
    let m = check_a(pw, a)?;
    check_qparams_u8(a_q, "input")?;
    check_qparams_u8(out_q, "output")?;
    check_out(m, pw.n, ldc, out.len())?;
    let (rq, col_term) = pw.epilogue_constants(a_q, out_q, relu);
    let sink = Sink::U8 {
        out,
        rq,
        col_term,
        residual: None,
    };
    run(pw, a, sink, ldc);
    Ok(())
}

/// Whether the column-strip path ([`gemm_requant_strips`]) is on (default; a switch for A/B
/// measurements and tests: the bytes are identical either way). `QKERNELS_STRIPS=0` turns it off.
static STRIPS: Switch = Switch::new("QKERNELS_STRIPS");

/// Enables or disables the column-strip path of small-channel convs for the whole process.
#[doc(hidden)]
pub fn set_strips_enabled(on: bool) {
    STRIPS.set(on);
}

/// Output columns per unit of work of [`gemm_requant_strips`]: their strips (≈ 40 KiB for the
/// ResNet stem) stay in L2 while their tiles run.
const STRIP_COLS: usize = 8;

thread_local! {
    /// The strips of [`gemm_requant_strips`], kept per thread between calls (like `A_BUF`).
    static STRIP_BUF: std::cell::RefCell<AVec<u8, ConstAlign<64>>> =
        std::cell::RefCell::new(AVec::new(64));
}

/// A dense conv with few input channels (the RGB stem) as GEMM without im2col rows: for each
/// output column `x` one **column strip** holds, for every padded input row `iy` the conv's
/// windows can touch, the `kw·C` bytes of that row under the window of column `x`
/// (`S_x[iy·kw·C ..]`, padding = the input zero point). Output pixel `(y, x)`'s im2col row is
/// then the `kh·kw·C` contiguous bytes at `S_x + y·stride_h·kw·C`: consecutive output rows
/// overlap, so the strips hold ≈ `stride_h·kh`× fewer bytes than the im2col rows (the stem:
/// 112 strips × 230 runs of 21 bytes instead of 12544 rows × 7 runs). A tile is six output
/// rows `y .. y + 6` of one column: the fused VNNI kernel reads its A rows at stride
/// `stride_h·kw·C` (`lda`), and its output rows are `ow·ldc` apart. The K padding byte(s) the
/// kernel reads past a row's `K` bytes (the next run's first bytes) meet zero weights. The
/// arithmetic of every output element is unchanged: same bytes as [`gemm_requant`] on the conv's
/// im2col rows.
///
/// Returns `Ok(false)`, having done nothing, when the call does not fit the path: weights not on
/// a kernel with a fused 64-column entry, N not a multiple of 64, weight zero points, groups or
/// dilation, input channels a multiple of 4 (the indirect kernel's case), `kw·C > 64`, requant
/// params outside the fused epilogue's range, or switched off.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_requant_strips(
    pw: &PackedWeights,
    geo: &crate::Conv2dGeometry,
    x: &[u8],
    (oh, ow): (usize, usize),
    a_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
) -> Result<bool> {
    let g = geo;
    let kern = pw.kernel;
    let run = g.kernel_w * g.in_c;
    let Some(fused) = kern.ukernel_requant.filter(|_| strips_fit(pw, g, (oh, ow))) else {
        return Ok(false);
    };
    check_qparams_u8(a_q, "input")?;
    check_qparams_u8(out_q, "output")?;
    let n_in = checked_product(&[g.batch, g.in_h, g.in_w, g.in_c], "conv input")?;
    check_len(x.len(), n_in, "conv input (NHWC)")?;
    let ldc = pw.n;
    let n_out = checked_product(&[g.batch, oh, ow, ldc], "conv output")?;
    check_capacity(out.len(), n_out, "conv output")?;
    let (rq, col_term) = pw.epilogue_constants(a_q, out_q, relu);
    let cols = requant_cols(&rq, &col_term, None);
    if !Tile64::supports(&cols, None) {
        return Ok(false);
    }
    let guard = nan_guard_needed(&cols);
    let kp = kern.round_k(pw.k);
    let lda = g.stride_h * run;
    // Padded input rows a strip covers, and its length: the last output row's A row starts
    // at `(oh − 1)·lda` and the kernel reads `kp` bytes from there.
    let strip_rows = (oh - 1) * g.stride_h + g.kernel_h;
    let strip = ((oh - 1) * lda + kp)
        .max(strip_rows * run)
        .next_multiple_of(64);
    let pad = a_q.zero_point as u8;
    let base = OutPtr(out.as_mut_ptr());
    let units: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|b| (0..ow.div_ceil(STRIP_COLS)).map(move |u| (b, u * STRIP_COLS)))
        .collect();
    let work = |buf: &mut AVec<u8, ConstAlign<64>>, (b, x0): (usize, usize)| {
        // (the whole `OutPtr`, which is `Sync`, not its raw pointer field)
        let base = &base;
        let xs = STRIP_COLS.min(ow - x0);
        if buf.len() < xs * strip {
            *buf = AVec::from_iter(64, std::iter::repeat_n(0u8, STRIP_COLS * strip));
        }
        let img = &x[b * g.in_h * g.in_w * g.in_c..][..g.in_h * g.in_w * g.in_c];
        for (c, s) in buf.chunks_exact_mut(strip).take(xs).enumerate() {
            fill_strip(img, g, x0 + c, strip_rows, pad, &mut s[..strip_rows * run]);
        }
        for c in 0..xs {
            let xo = x0 + c;
            let s = &buf[c * strip..][..strip];
            for y0 in (0..oh).step_by(kern.mr) {
                let r = kern.mr.min(oh - y0);
                let row = (b * oh + y0) * ow + xo;
                for p in 0..pw.n / 64 {
                    let ep = Tile64 {
                        cols: cols.range(64 * p, 64),
                        guard,
                        add: None,
                    };
                    let bp = &pw.packed[p * pw.panel_bytes..][..pw.panel_bytes];
                    let a = &s[y0 * lda..(y0 + r - 1) * lda + kp];
                    // SAFETY: `a` holds `r` rows of `kp` bytes at stride `lda` (sliced above:
                    // inside the strip), `bp` a whole B panel of `kern` for K = pw.k (`kp`
                    // rounded to its KR); the kernel's NR is 64 and `ep` its 64 columns of the
                    // call's constants, accepted by `Tile64::supports`, `guard` from
                    // `nan_guard_needed` over all columns. Output rows `row + i·ow`, `i < r`,
                    // columns `64p .. 64p + 64` are inside `out` (`check_capacity` above) and
                    // written by this unit only (units own distinct columns `xo`); `1 ≤ r ≤ MR`;
                    // the ISA was checked when the weights were packed.
                    unsafe {
                        fused(
                            kp,
                            lda,
                            a.as_ptr(),
                            bp.as_ptr(),
                            r,
                            &ep,
                            base.0.add(row * ldc + 64 * p),
                            ow * ldc,
                        )
                    };
                }
            }
        }
    };
    if rayon::current_num_threads() > 1 && units.len() > 1 {
        units
            .into_par_iter()
            .for_each_init(StripBuf::take, |b, u| work(b.buf(), u));
    } else {
        let mut b = StripBuf::take();
        units.into_iter().for_each(|u| work(b.buf(), u));
    }
    Ok(true)
}

/// A thread's strip buffer, taken from its cache (`STRIP_BUF`) for a call and handed back when
/// the call's work on that thread is done.
struct StripBuf(Option<AVec<u8, ConstAlign<64>>>);

impl StripBuf {
    fn take() -> StripBuf {
        StripBuf(Some(
            STRIP_BUF
                .try_with(|b| std::mem::replace(&mut *b.borrow_mut(), AVec::new(64)))
                .unwrap_or_else(|_| AVec::new(64)),
        ))
    }

    fn buf(&mut self) -> &mut AVec<u8, ConstAlign<64>> {
        self.0.as_mut().expect("taken until dropped")
    }
}

impl Drop for StripBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            let _ = STRIP_BUF.try_with(|b| {
                if let Ok(mut cur) = b.try_borrow_mut() {
                    *cur = buf;
                }
            });
        }
    }
}

/// The shape conditions of [`gemm_requant_strips`] (everything but the requant params).
pub(crate) fn strips_fit(
    pw: &PackedWeights,
    g: &crate::Conv2dGeometry,
    (oh, ow): (usize, usize),
) -> bool {
    let run = g.kernel_w * g.in_c;
    STRIPS.enabled()
        && FUSED_EPILOGUE.enabled()
        && pw.kernel.ukernel_requant.is_some()
        && pw.kernel.nr == 64
        && pw.n.is_multiple_of(64)
        && !pw.any_w_zp
        && g.groups == 1
        && g.dilation_h == 1
        && g.dilation_w == 1
        && !g.in_c.is_multiple_of(4)
        && run <= 64
        && g.kernel_h * run == pw.k
        && oh > 0
        && ow > 0
        && g.out_c == pw.n
        // One strip per output column of a unit: keep a unit's strips (`STRIP_COLS` of them)
        // within a few MiB even for very tall images (those keep the im2col rows).
        && ((oh - 1) * g.stride_h + g.kernel_h).saturating_mul(run) <= MAX_STRIP_BYTES
}

/// The largest strip [`gemm_requant_strips`] builds (an image ≈ 50 000 rows tall for the stem).
const MAX_STRIP_BYTES: usize = 1 << 20;

/// Column strip of output column `xo` (see [`gemm_requant_strips`]): `rows` padded input rows
/// from `−pad_h`, each the `kw·C` bytes under the window of column `xo`, the input zero point
/// `pad` outside the image.
fn fill_strip(
    img: &[u8],
    g: &crate::Conv2dGeometry,
    xo: usize,
    rows: usize,
    pad: u8,
    dst: &mut [u8],
) {
    let c = g.in_c;
    let run = g.kernel_w * c;
    let ix0 = (xo * g.stride_w) as isize - g.pad_w as isize;
    let inside = ix0 >= 0 && ix0 as usize + g.kernel_w <= g.in_w;
    if inside && rows >= g.pad_h {
        // Window inside the image's width (all strips but the first and last few): `pad_h`
        // padding runs, one run per image row (no per-row checks), padding runs below.
        let (top, body) = dst[..rows * run].split_at_mut(g.pad_h * run);
        top.fill(pad);
        let image_rows = g.in_h.min(rows - g.pad_h);
        let (body, bottom) = body.split_at_mut(image_rows * run);
        bottom.fill(pad);
        let s = ix0 as usize * c;
        for (d, line) in body.chunks_exact_mut(run).zip(img.chunks_exact(g.in_w * c)) {
            qkernels_kernels::im2col::copy_run(d, &line[s..s + run]);
        }
        return;
    }
    for (iy_p, d) in dst.chunks_exact_mut(run).take(rows).enumerate() {
        let iy = iy_p as isize - g.pad_h as isize;
        if iy < 0 || iy as usize >= g.in_h {
            d.fill(pad);
            continue;
        }
        let line = &img[iy as usize * g.in_w * c..][..g.in_w * c];
        if inside {
            let s = ix0 as usize * c;
            qkernels_kernels::im2col::copy_run(d, &line[s..s + run]);
        } else {
            for (kx, px) in d.chunks_exact_mut(c).enumerate() {
                let ix = ix0 + kx as isize;
                if ix < 0 || ix as usize >= g.in_w {
                    px.fill(pad);
                } else {
                    px.copy_from_slice(&line[ix as usize * c..][..c]);
                }
            }
        }
    }
}

/// [`gemm_requant`] (no ReLU) with a residual add fused into the epilogue: `out[i·ldc + j] =
/// add(requant(…), res.skip[i·res.ldskip + j])` — the same bytes as the GEMM followed by an
/// in-place add pass with the formula rule `res.tail_from` on the output's flat index.
pub(crate) fn gemm_requant_add(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_q: QParams,
    out_q: QParams,
    out: &mut [u8],
    ldc: usize,
    residual: Residual<'_>,
) -> Result<()> {
    let m = check_a(pw, a)?;
    check_qparams_u8(a_q, "input")?;
    check_qparams_u8(out_q, "output")?;
    check_out(m, pw.n, ldc, out.len())?;
    if residual.ldskip < pw.n {
        return crate::invalid!("skip leading dimension {} < N {}", residual.ldskip, pw.n);
    }
    check_out(m, pw.n, residual.ldskip, residual.skip.len())?;
    let (rq, col_term) = pw.epilogue_constants(a_q, out_q, false);
    let sink = Sink::U8 {
        out,
        rq,
        col_term,
        residual: Some(residual),
    };
    run(pw, a, sink, ldc);
    Ok(())
}

/// `out[i·ldc + j] = Σ_k (A[i,k] − a_zp)(W[j,k] − w_zp[j])` as raw i32 (wrapping), no requant.
pub fn gemm_i32(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_zp: i32,
    out: &mut [i32],
    ldc: usize,
) -> Result<()> {
    let m = check_a(pw, a)?;
    check_out(m, pw.n, ldc, out.len())?;
    let col_term = Arc::new(pw.col_term(a_zp));
    run(pw, a, Sink::I32 { out, col_term }, ldc);
    Ok(())
}

/// Quantized linear layer: `x` is `m × k` (row-major, contiguous), `out` is `m × n`.
pub fn linear(
    pw: &PackedWeights,
    x: &[u8],
    m: usize,
    x_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
) -> Result<()> {
    let mk = crate::validate::checked_product(&[m, pw.k], "linear input")?;
    crate::validate::check_len(x.len(), mk, "linear input")?;
    let a = Matrix::new(x, m, pw.k, pw.k)?;
    gemm_requant(pw, &a, x_q, out_q, relu, out, pw.n)
}

/// Plain `C = A · Wᵀ` (`A`: `m × k` u8, `W`: `n × k` i8, `C`: `m × n` i32, exact, no zero
/// points), packing `W` on the fly. For repeated calls pack once with [`PackedWeights`].
pub fn gemm_u8s8s32(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    lda: usize,
    w: &[i8],
    ldw: usize,
    c: &mut [i32],
    ldc: usize,
) -> Result<()> {
    check_nonzero(m, "m")?;
    check_nonzero(n, "n")?;
    check_nonzero(k, "k")?;
    if ldw < k {
        return crate::invalid!("ldw {ldw} < k {k}");
    }
    let need_w = (n - 1)
        .checked_mul(ldw)
        .and_then(|v| v.checked_add(k))
        .ok_or_else(|| Error::InvalidArgument("W size overflows usize".into()))?;
    check_capacity(w.len(), need_w, "W")?;
    let dense: Vec<i8> = (0..n)
        .flat_map(|j| w[j * ldw..j * ldw + k].iter().copied())
        .collect();
    let pw = PackedWeights::with_options(
        &dense,
        n,
        k,
        &WeightQParams::per_tensor(1.0, 0),
        None,
        &GemmOptions::for_isa(isa)?,
    )?;
    let a = Matrix::new(a, m, k, lda)?;
    gemm_i32(&pw, &a, 0, c, ldc)
}

/// Raw output base pointer shared by the workers. Each work item writes a disjoint set of
/// `(row, column)` elements (its own row range × its own column range), so no element is ever
/// written by two items and no `&mut` slices overlap.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: the pointer is only used to build disjoint per-row slices (see `OutPtr` docs); the
// buffer outlives the parallel region (it is borrowed by `run` for its whole duration).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; shared references to `OutPtr` only copy the address.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Everything a work item needs, computed once per call.
struct Plan<'p> {
    pw: &'p PackedWeights,
    kern: &'static GemmKernel,
    a: &'p dyn ASource,
    m: usize,
    kp: usize,
    a_panel: usize,
    /// Rows per M block (a multiple of MR).
    mc: usize,
    /// B panels per N chunk.
    pc: usize,
    /// `a_zp · col_off[j]`.
    col_term: Arc<Vec<i32>>,
    epilogue: Epilogue,
    /// The kernel reads row-major u8 A panels: full panels of a matrix with `lda == K == kp`
    /// are read in place, streamed rows are filled straight into the panel.
    a_rows: bool,
    /// Single-row kernel (same packed B) for a last A panel holding one row: a full MR-row tile
    /// would spend MR× the MACs on it. With `split`, only a block of a single row still ends
    /// up here (a one-row panel after full ones is split away).
    tail1: Option<&'static GemmKernel>,
    /// Rows of the first of the two tiles the last `MR + 1` rows of a block are split into
    /// (0: no split), when the kernel runs short tiles at a cost ∝ rows
    /// (`GemmKernel::tail_rows`): M = 49 = 7·6 + 4 + 3 then costs 49 rows of MACs at a B reuse
    /// of 3–4 rows, instead of 8·6 rows plus a one-row GEMV that streams each 288 KiB B panel
    /// from L2 for 64 MACs per 64 bytes.
    split: usize,
    /// Indirect kernel and image description, when `A` is an eligible im2col (exact kernel with
    /// an IGEMM companion, `ic % KR == 0`, no weight zero point so no row sums): full panels are
    /// then indirection arrays instead of packed rows.
    igemm: Option<(&'static IgemmKernel, Indirect<'p>)>,
    /// The 7-bit companion and its packed B, when `kern` has one (not for the GEMV kernel).
    a7: Option<&'p A7Weights>,
    ldc: usize,
}

/// Where A panel `ip` of the current block lives.
#[derive(Clone, Copy)]
enum PanelAt {
    /// Offset into `Scratch::packed_a`.
    Packed(usize),
    /// Offset into the source matrix (a full panel read in place).
    Source(usize),
    /// Offset into `Scratch::packed_a` of a one-row tail panel packed for `Plan::tail1`.
    Tail1(usize),
    /// Offset into `Scratch::ind` of the `taps · MR` pointers of an indirect tile.
    Indirect(usize),
    /// Offset into `Scratch::ind` of the `MR` window pointers of an indirect tile whose pixels'
    /// windows are inside the image (taps at `Scratch::tap_off`, see
    /// [`Indirect::push_window_tile`]).
    IndirectWindow(usize),
    /// Offset into `Scratch::packed_a` of a panel packed for the 7-bit companion (`Plan::a7`)
    /// with the high bit of every activation cleared, and the range of `Scratch::outliers`
    /// listing where that bit was set (see [`pack_a7`]).
    A7(usize, (u32, u32)),
    /// Offset into the source matrix of a full panel read in place by the 7-bit companion.
    A7Source(usize),
    /// As `A7`, for a one-row tail panel packed for the 7-bit kernel's GEMV companion.
    A7Tail(usize, (u32, u32)),
}

/// Per-thread scratch, reused across the work items a thread runs.
struct Scratch {
    /// The M block whose rows `packed_a`, `panels` and `row_sums` hold: consecutive items of
    /// one M block (N chunks) on the same thread pack it once.
    block: Option<usize>,
    packed_a: AVec<u8, ConstAlign<64>>,
    panels: Vec<PanelAt>,
    rowbuf: Vec<u8>,
    row_sums: Vec<i32>,
    tile: Vec<i32>,
    /// The accumulators of the tile whose epilogue is deferred ([`Deferred`]): MR × 64 i32,
    /// empty unless the call runs deferring kernels.
    defer_acc: AVec<i32, ConstAlign<64>>,
    /// Indirection arrays of the current block (IGEMM path), pointing into the image and `zero`.
    ind: Vec<*const u8>,
    /// `ic` copies of the input zero point (padded taps and unused tail rows).
    zero: Vec<u8>,
    /// [`Indirect::tap_offsets`] of this call.
    tap_off: Vec<usize>,
    /// `(row in panel, k)` of the activations ≥ 128 of the current block's 7-bit panels.
    outliers: Vec<(u32, u32)>,
}

thread_local! {
    /// The packed-A buffer, kept per thread between calls: a fresh ~192 KiB buffer per call is
    /// an `mmap`, page faults on first touch and a `munmap` every time (measured at ≈ 20 % of a
    /// small-K GEMM such as ResNet's 12544×64×147 stem).
    static A_BUF: std::cell::RefCell<AVec<u8, ConstAlign<64>>> =
        std::cell::RefCell::new(AVec::new(64));
    /// The indirection-array buffer, kept per thread between calls like `A_BUF` (its stale
    /// pointers are never read: a block's arrays are rebuilt before its tiles run).
    static IND_BUF: std::cell::RefCell<Vec<*const u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Scratch {
    fn new(plan: &Plan<'_>) -> Scratch {
        let kern = plan.kern;
        let panels = plan.mc / kern.mr;
        let need = panels * plan.a_panel;
        // Every byte of a panel is written by packing before it is read, so a reused buffer's
        // old contents never matter.
        let mut packed_a = A_BUF
            .try_with(|b| std::mem::replace(&mut *b.borrow_mut(), AVec::new(64)))
            .unwrap_or_else(|_| AVec::new(64));
        if packed_a.len() < need {
            packed_a = AVec::from_iter(64, std::iter::repeat_n(0u8, need));
        }
        Scratch {
            block: None,
            packed_a,
            panels: Vec::with_capacity(panels),
            rowbuf: if plan.a.as_matrix().is_some() {
                Vec::new()
            } else {
                vec![0u8; kern.mr * plan.pw.k]
            },
            row_sums: vec![0; plan.mc],
            tile: vec![0; kern.mr * kern.nr],
            defer_acc: if plan
                .igemm
                .as_ref()
                .is_some_and(|(ik, _)| ik.ukernel_defer.is_some())
            {
                AVec::from_iter(64, std::iter::repeat_n(0, kern.mr * 64))
            } else {
                AVec::new(64)
            },
            ind: match &plan.igemm {
                Some((_, ind)) => {
                    let mut v = IND_BUF
                        .try_with(|b| std::mem::take(&mut *b.borrow_mut()))
                        .unwrap_or_default();
                    v.clear();
                    v.reserve(plan.mc * ind.taps());
                    v
                }
                None => Vec::new(),
            },
            zero: match &plan.igemm {
                Some((_, ind)) => vec![ind.pad; ind.ic],
                None => Vec::new(),
            },
            tap_off: match &plan.igemm {
                Some((_, ind)) => ind.tap_offsets(),
                None => Vec::new(),
            },
            outliers: Vec::new(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.packed_a, AVec::new(64));
        // Keep the larger buffer for the next call on this thread (ignore a torn-down TLS).
        let _ = A_BUF.try_with(|b| {
            if let Ok(mut cur) = b.try_borrow_mut()
                && cur.len() < buf.len()
            {
                *cur = buf;
            }
        });
        if self.ind.capacity() > 0 {
            let mut ind = std::mem::take(&mut self.ind);
            ind.clear();
            let _ = IND_BUF.try_with(|b| {
                if let Ok(mut cur) = b.try_borrow_mut()
                    && cur.capacity() < ind.capacity()
                {
                    *cur = ind;
                }
            });
        }
    }
}

/// The driver. Loop nest (no K blocking: every output is one microkernel call over the whole
/// K, which keeps tiles hot for the fused epilogue and makes results independent of blocking):
///
/// ```text
/// for each work item (M block of `mc` rows × chunk of `pc` B panels)   ← rayon, if > 1 thread
///     pack the A block (MC × K, stays in L2; see `partition`), row sums if any w_zp ≠ 0,
///         unless this thread's previous item packed the same block
///     for each B panel of the chunk (K × NR, prepacked, streamed once per block)
///         for each A panel of the block (MR × K)
///             microkernel → MR × NR i32 tile → zero-point correction + requant
///                         [+ residual add with the matching skip elements] → output
/// ```
///
/// B panel outer, A panels inner: the B panel (up to 288 KiB in ResNet-18) stays in L2 while
/// the A panels of the block pass over it, so B comes from L3 once per M block; the other order
/// would re-read every B panel of the chunk from L3 per A panel once the chunk outgrows L2.
///
/// M = 1 uses the kernel's single-row companion (same packed B). The partition into work items
/// ([`partition`]) depends on the thread count, the arithmetic of each output element does not.
fn run(pw: &PackedWeights, a: &dyn ASource, sink: Sink<'_>, ldc: usize) {
    let m = a.rows();
    let kern = if m == 1 {
        pw.gemv.unwrap_or(pw.kernel)
    } else {
        pw.kernel
    };
    let (mr, nr) = (kern.mr, kern.nr);
    let a_panel = (kern.a_panel_bytes)(pw.k);
    let n_panels = pw.n.div_ceil(nr);
    let m_panels = m.div_ceil(mr);
    let threads = rayon::current_num_threads().max(1);
    let (mc_panels, pc) = partition(&Shape {
        m_panels,
        n_panels,
        a_panel,
        b_panel: pw.panel_bytes,
        tile_macs: mr * nr * kern.round_k(pw.k),
        threads,
    });
    let plan = Plan {
        pw,
        kern,
        a,
        m,
        kp: kern.round_k(pw.k),
        a_panel,
        mc: mc_panels * mr,
        pc,
        col_term: match &sink {
            Sink::U8 { col_term, .. } | Sink::I32 { col_term, .. } => col_term.clone(),
        },
        epilogue: Epilogue::new(kern.isa),
        a_rows: a_is_row_major_u8(kern),
        tail1: if kern.mr > 1 { pw.gemv } else { None },
        split: split_rows(kern),
        igemm: igemm_for(pw, kern, a),
        a7: pw.a7.as_deref().filter(|_| std::ptr::eq(kern, pw.kernel)),
        ldc,
    };
    let items: Vec<(usize, usize)> = (0..m.div_ceil(plan.mc))
        .flat_map(|ib| (0..n_panels.div_ceil(pc)).map(move |jb| (ib, jb)))
        .collect();
    let parallel = threads > 1 && items.len() > 1;
    match sink {
        Sink::U8 {
            out, rq, residual, ..
        } => {
            let base = OutPtr(out.as_mut_ptr());
            let fused = fused_for(&plan, &rq, residual.as_ref());
            let run_item = |s: &mut Scratch, item: (usize, usize)| {
                item_u8(&plan, s, item, base, &rq, residual.as_ref(), fused);
            };
            if parallel {
                items
                    .into_par_iter()
                    .for_each_init(|| Scratch::new(&plan), run_item);
            } else {
                let mut s = Scratch::new(&plan);
                items.into_iter().for_each(|it| run_item(&mut s, it));
            }
        }
        Sink::I32 { out, .. } => {
            let base = OutPtr(out.as_mut_ptr());
            let run_item = |s: &mut Scratch, item: (usize, usize)| {
                item_i32(&plan, s, item, base);
            };
            if parallel {
                items
                    .into_par_iter()
                    .for_each_init(|| Scratch::new(&plan), run_item);
            } else {
                let mut s = Scratch::new(&plan);
                items.into_iter().for_each(|it| run_item(&mut s, it));
            }
        }
    }
}

/// `Plan::split` for `kern`: the larger half of `MR + 1` rows when the kernel runs tiles that
/// short at a cost ∝ rows, else 0.
fn split_rows(kern: &GemmKernel) -> usize {
    let lo = (kern.mr + 1).div_ceil(2);
    if kern.mr > 1 && lo <= kern.tail_rows {
        lo
    } else {
        0
    }
}

impl Plan<'_> {
    /// `(i0, r)` of A panel `ip` of a block of `rows` rows: its first row in the block and its
    /// row count. Panels are MR rows, the last one partial, except that with `split` a block
    /// ending in `q·MR + 1` rows (q ≥ 1) ends in panels of `split` and `MR + 1 − split` rows.
    /// The number of panels is `rows.div_ceil(MR)` either way.
    #[inline]
    fn panel(&self, rows: usize, ip: usize) -> (usize, usize) {
        let mr = self.kern.mr;
        let i0 = ip * mr;
        // Not one of the last two panels (the common case, called per tile): no division.
        if self.split == 0 || i0 + 2 * mr <= rows {
            return (i0, mr.min(rows - i0));
        }
        let full = rows / mr;
        if rows % mr == 1 && full >= 1 && ip + 1 >= full {
            let base = (full - 1) * mr;
            return if ip + 1 == full {
                (base, self.split)
            } else {
                (base + self.split, mr + 1 - self.split)
            };
        }
        (i0, mr.min(rows - i0))
    }
}

/// The indirect kernel and image for this call, if the IGEMM path applies (see `Plan::igemm`).
fn igemm_for<'p>(
    pw: &PackedWeights,
    kern: &'static GemmKernel,
    a: &'p dyn ASource,
) -> Option<(&'static IgemmKernel, Indirect<'p>)> {
    if !std::ptr::eq(kern, pw.kernel) {
        return None;
    }
    let ik = pw.igemm_kernel()?;
    let ind = a.as_indirect()?;
    let ok = ind.ic > 0
        && ind.ic.is_multiple_of(kern.kr)
        && ind.taps() * ind.ic == pw.k
        && ind.oh * ind.ow * ind.geo.batch == a.rows()
        && ind.c0 + ind.ic <= ind.geo.in_c;
    ok.then_some((ik, ind))
}

/// IGEMM counterpart of [`pack_a_block`]: builds the indirection arrays of the block's tiles in
/// `s.ind`; a one-row last panel still goes to the single-row kernel as a packed row.
fn indirect_block(plan: &Plan<'_>, ind: &Indirect<'_>, s: &mut Scratch, row0: usize, rows: usize) {
    let (k, mr) = (plan.pw.k, plan.kern.mr);
    s.panels.clear();
    s.ind.clear();
    for p in 0..rows.div_ceil(mr) {
        let (i0, r) = plan.panel(rows, p);
        if let Some(g) = plan.tail1.filter(|_| r == 1) {
            let off = p * plan.a_panel;
            plan.a.fill(row0 + i0, 1, 0, k, &mut s.rowbuf, k);
            let dst = &mut s.packed_a[off..off + (g.a_panel_bytes)(k)];
            (g.pack_a)(&s.rowbuf, k, 1, k, dst);
            s.panels.push(PanelAt::Tail1(off));
        } else {
            let off = s.ind.len();
            if ind.push_window_tile(row0 + i0, r, mr, &s.tap_off, &mut s.ind) {
                s.panels.push(PanelAt::IndirectWindow(off));
            } else {
                s.panels.push(PanelAt::Indirect(off));
                ind.push_tile(row0 + i0, r, mr, &s.tap_off, &s.zero, &mut s.ind);
            }
        }
    }
}

/// Packs the A rows `row0 .. row0 + rows` into `s.packed_a` (and their sums into
/// `s.row_sums` when a weight zero point is non-zero), or records where a panel can be read in
/// place.
fn pack_a_block(plan: &Plan<'_>, s: &mut Scratch, row0: usize, rows: usize) {
    if let Some((_, ind)) = &plan.igemm {
        indirect_block(plan, ind, s, row0, rows);
        return;
    }
    let kern = plan.kern;
    let (k, mr) = (plan.pw.k, kern.mr);
    let need_sums = plan.pw.any_w_zp;
    s.panels.clear();
    s.outliers.clear();
    // Streamed rows for a row-major kernel: the block's panels are consecutive MR-row slices
    // of one `rows × kp` row-major buffer, so the source writes every row of the block in one
    // call (a conv's im2col then copies whole interior stretches of an output row at once,
    // instead of restarting its geometry every MR rows). A one-row tail panel for the GEMV
    // companion is left to the loop below.
    let streamed = if plan.a_rows && plan.a.as_matrix().is_none() {
        let kp = plan.kp;
        debug_assert_eq!(plan.a_panel, mr * kp);
        let n = if plan.tail1.is_some() && rows % mr == 1 && plan.panel(rows, rows / mr).1 == 1 {
            rows - 1
        } else {
            rows
        };
        if n > 0 {
            plan.a.fill(row0, n, 0, k, &mut s.packed_a[..n * kp], kp);
            // Zero the K padding of every row, and the missing rows of a partial last panel.
            for row in s.packed_a[..n * kp].chunks_exact_mut(kp) {
                // (kp − k < KR bytes: element stores, not a `memset` call per row)
                match &mut row[k..] {
                    [] => {}
                    [a] => *a = 0,
                    [a, b] => (*a, *b) = (0, 0),
                    tail => tail.fill(0),
                }
            }
            s.packed_a[n * kp..n.div_ceil(mr) * mr * kp].fill(0);
        }
        n.div_ceil(mr)
    } else {
        0
    };
    for p in 0..rows.div_ceil(mr) {
        let (i0, r) = plan.panel(rows, p);
        let off = p * plan.a_panel;
        let dst = &mut s.packed_a[off..off + plan.a_panel];
        if p < streamed {
            // Row `i0` of the streamed rows (`p · a_panel` except for the second tile of a
            // split tail, which starts inside the previous panel's slot); the tile reads `r`
            // rows from here, and `a_panel` bytes from here are inside the buffer because the
            // block's rows end at or before `streamed · a_panel`.
            let off = i0 * plan.kp;
            s.panels.push(PanelAt::Packed(off));
            if need_sums {
                let src = &s.packed_a[off..off + r * plan.kp];
                for (i, row) in src.chunks_exact(plan.kp).enumerate() {
                    s.row_sums[i0 + i] = row[..k].iter().map(|&v| i32::from(v)).sum();
                }
            }
            continue;
        }
        // The panel's rows: in the source matrix (which may be read in place), or streamed
        // into the row buffer.
        let (src, lda, source_at): (&[u8], usize, Option<usize>) = match plan.a.as_matrix() {
            Some((data, lda)) => {
                let at = (row0 + i0) * lda;
                (&data[at..], lda, Some(at))
            }
            None => {
                plan.a.fill(row0 + i0, r, 0, k, &mut s.rowbuf, k);
                (&s.rowbuf, k, None)
            }
        };
        s.panels.push(pack_panel(
            plan,
            src,
            lda,
            r,
            source_at,
            dst,
            off,
            &mut s.outliers,
        ));
        if need_sums {
            for i in 0..r {
                s.row_sums[i0 + i] = src[i * lda..][..k].iter().map(|&v| i32::from(v)).sum();
            }
        }
    }
}

/// Packs (or places) one A panel: the `r` rows at `src` (stride `lda`, `K` bytes each), which
/// sit at offset `source_at` of the source matrix when they may be read there in place (`None`
/// for streamed rows). In order: a one-row tail goes to the GEMV companion (its 7-bit variant
/// when the row qualifies); a full panel of a row-major kernel whose rows are K-aligned is read
/// in place; the 7-bit companion takes the panel when it qualifies ([`pack_a7`]); otherwise the
/// kernel's own packer.
fn pack_panel(
    plan: &Plan<'_>,
    src: &[u8],
    lda: usize,
    r: usize,
    source_at: Option<usize>,
    dst: &mut [u8],
    off: usize,
    outliers: &mut Vec<(u32, u32)>,
) -> PanelAt {
    let (kern, k) = (plan.kern, plan.pw.k);
    if let Some(g) = plan.tail1.filter(|_| r == 1) {
        if let Some(at) = plan
            .a7
            .and_then(|a7| a7.gemv)
            .and_then(|g7| pack_a7(g7, true, src, lda, 1, k, dst, off, None, outliers))
        {
            return at;
        }
        (g.pack_a)(src, lda, 1, k, &mut dst[..(g.a_panel_bytes)(k)]);
        return PanelAt::Tail1(off);
    }
    // Whole K-aligned panel of the source matrix: candidate for reading in place.
    let whole = source_at.filter(|_| r == kern.mr && lda == k);
    if let Some(at) = whole.filter(|_| plan.a_rows && k == plan.kp) {
        return PanelAt::Source(at);
    }
    if let Some(a7) = plan.a7 {
        let in_place = whole.filter(|_| k == a7.kernel.round_k(k));
        if let Some(at) = pack_a7(
            a7.kernel, false, src, lda, r, k, dst, off, in_place, outliers,
        ) {
            return at;
        }
    }
    (kern.pack_a)(src, lda, r, k, dst);
    PanelAt::Packed(off)
}

/// Prepares the `r` rows at `src` (stride `lda`, `k` bytes each) for the 7-bit companion, or
/// returns `None` when the general kernel should take them.
///
/// `Σ_k a·w = Σ_k (a & 0x7f)·w + 128 · Σ_{k: a ≥ 128} w` exactly (wrapping i32 is a ring), so a
/// panel with a few activations ≥ 128 still runs the 7-bit kernel on its masked copy, and
/// [`tile`] adds `128 · W[j][k]` to row `i` of the tile for each outlier `(i, k)` (one row of
/// the transposed weights). Calibrated 7-bit models do have such outliers (the observer clips
/// the histogram tail, the u8 clamp does not): ≈ 0.05 % of the activations of a PyTorch
/// `reduce_range` ResNet-18, which leaves few panels of 6 × K bytes free of them. Past
/// `K / 16` outliers per panel the corrections would cost more than the faster kernel saves,
/// and the general kernel is used.
///
/// A panel without outliers is read in place when `in_place` gives its offset in the source
/// matrix (full panel, `lda == K`, K a multiple of 4); otherwise it is packed at `off`.
fn pack_a7(
    kernel: &GemmKernel,
    tail: bool,
    src: &[u8],
    lda: usize,
    r: usize,
    k: usize,
    dst: &mut [u8],
    off: usize,
    in_place: Option<usize>,
    outliers: &mut Vec<(u32, u32)>,
) -> Option<PanelAt> {
    // One vectorised count of the activations ≥ 128 decides first: none is the common case of
    // a 7-bit model; past `K / 16` the general kernel takes the panel without packing or
    // scanning it for the 7-bit kernel (an 8-bit model, or random u8 input, would otherwise
    // pack every panel twice and record half its bytes as outliers: 8× slower on the stem).
    let high: usize = (0..r)
        .map(|i| {
            src[i * lda..][..k]
                .iter()
                .map(|&v| u32::from(v >> 7))
                .sum::<u32>() as usize
        })
        .sum();
    if high * 16 > k {
        return None;
    }
    let any_high = high > 0;
    if !any_high && let Some(at) = in_place {
        return Some(PanelAt::A7Source(at));
    }
    let kp = kernel.round_k(k);
    let dst = &mut dst[..(kernel.a_panel_bytes)(k)];
    (kernel.pack_a)(src, lda, r, k, dst);
    let start = outliers.len();
    if any_high {
        for (i, row) in dst.chunks_exact_mut(kp).take(r).enumerate() {
            for (c, chunk) in row[..k].chunks_mut(32).enumerate() {
                if chunk.iter().fold(0u8, |acc, &v| acc | v) < 0x80 {
                    continue;
                }
                for (t, v) in chunk.iter_mut().enumerate() {
                    if *v >= 0x80 {
                        *v &= 0x7f;
                        outliers.push((i as u32, (c * 32 + t) as u32));
                    }
                }
            }
        }
        debug_assert_eq!(outliers.len() - start, high);
    }
    let range = (start as u32, outliers.len() as u32);
    Some(if tail {
        PanelAt::A7Tail(off, range)
    } else {
        PanelAt::A7(off, range)
    })
}

/// The prefetch hint of tile `ip` of B panel `p`: its share of panel `p + 1` (the panel the
/// loop in [`item_u8`] reads next), so that the next panel is fetched from memory while this one
/// is used instead of stalling that panel's first tile (see `qkernels_kernels::gemm::Prefetch`).
fn next_panel_prefetch(plan: &Plan<'_>, rows: usize, ip: usize, p: usize) -> Prefetch {
    let pw = plan.pw;
    if (p + 1) * plan.kern.nr >= pw.n {
        return Prefetch::NONE;
    }
    let panel_lines = pw.panel_bytes / 64;
    let share = panel_lines.div_ceil(rows.div_ceil(plan.kern.mr));
    let first = (ip * share).min(panel_lines);
    Prefetch {
        // A hint only: never dereferenced (`wrapping_add` keeps it a plain address).
        at: pw
            .packed
            .as_ptr()
            .wrapping_add((p + 1) * pw.panel_bytes + first * 64),
        lines: share.min(panel_lines - first),
    }
}

/// The A operand of an indirect tile `ip`: its pointers in `s.ind` (`taps · MR` of them with a
/// null tap-offset table, or MR window pointers with `s.tap_off`), if the panel is indirect.
fn indirect_a<'s>(
    plan: &Plan<'_>,
    s: &'s Scratch,
    ip: usize,
) -> Option<(&'s [*const u8], *const usize)> {
    let mr = plan.kern.mr;
    match (s.panels[ip], &plan.igemm) {
        (PanelAt::Indirect(off), Some((_, ind))) => {
            Some((&s.ind[off..off + ind.taps() * mr], std::ptr::null()))
        }
        (PanelAt::IndirectWindow(off), Some(_)) => {
            Some((&s.ind[off..off + mr], s.tap_off.as_ptr()))
        }
        _ => None,
    }
}

/// Runs the microkernel on A panel `ip` of the packed block and B panel `p` into `s.tile`
/// (row stride NR); returns `(rows, cols)` of the valid part.
fn tile<'p2>(
    plan: &Plan<'p2>,
    s: &mut Scratch,
    rows: usize,
    ip: usize,
    p: usize,
) -> (usize, usize) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let (_, r) = plan.panel(rows, ip);
    let cols = nr.min(plan.pw.n - p * nr);
    if let (Some((ptrs, tap_off)), Some((ik, ind))) = (indirect_a(plan, s, ip), &plan.igemm) {
        let bp = &plan.pw.packed[p * plan.pw.panel_bytes..][..plan.pw.panel_bytes];
        debug_assert_eq!((ik.gemm.mr, ik.gemm.nr), (mr, nr));
        debug_assert_eq!(s.tap_off.len(), ind.taps());
        // SAFETY: `ptrs` is this tile's `taps · MR` pointers built by `Indirect::push_tile`, each
        // to `ic` bytes of the image (bounds-checked slices of `ind.x`, borrowed for the call) or
        // to `s.zero` (`ic` bytes, not modified while the block runs) or null (a padded tap
        // with zero point 0, which the kernel skips), with a null `tap_off`; or
        // its MR window pointers built by `Indirect::push_window_tile`, each from a checked
        // slice of `ind.x` of `tap_off[taps − 1] + ic` bytes, with `tap_off` = `s.tap_off`
        // (`taps` offsets, ascending). `ic % 4 == 0` and `taps · ic = K` were checked by
        // `igemm_for`, and `bp` is a whole B panel packed by `ik.gemm` (the weights' kernel) for
        // that K. `s.tile` holds MR×NR i32, row stride NR; `1 ≤ r ≤ MR`, `1 ≤ cols ≤ NR`; the ISA
        // was checked at pack time.
        unsafe {
            (ik.ukernel)(
                ind.taps(),
                ind.ic,
                ptrs.as_ptr(),
                tap_off,
                bp.as_ptr(),
                s.tile.as_mut_ptr(),
                nr,
                r,
                cols,
                next_panel_prefetch(plan, rows, ip, p),
            )
        };
        return (r, cols);
    }
    let k = plan.pw.k;
    let source = |off: usize, len: usize| {
        let (data, _) = plan
            .a
            .as_matrix()
            .expect("in-place panels come from a matrix");
        &data[off..off + len]
    };
    let main_b = || &plan.pw.packed[p * plan.pw.panel_bytes..][..plan.pw.panel_bytes];
    let a7_b = |a7: &'p2 A7Weights| &a7.packed[p * a7.panel_bytes..][..a7.panel_bytes];
    let a7 = || {
        plan.a7
            .expect("7-bit panels exist only with a 7-bit kernel")
    };
    let (ap, bp, ukern): (&[u8], &[u8], &GemmKernel) = match s.panels[ip] {
        PanelAt::Packed(off) => (&s.packed_a[off..off + plan.a_panel], main_b(), kern),
        PanelAt::Source(off) => (source(off, plan.a_panel), main_b(), kern),
        PanelAt::Tail1(off) => {
            let g = plan
                .tail1
                .expect("tail panels exist only with a tail kernel");
            (&s.packed_a[off..off + (g.a_panel_bytes)(k)], main_b(), g)
        }
        PanelAt::A7(off, _) => {
            let a7 = a7();
            let len = (a7.kernel.a_panel_bytes)(k);
            (&s.packed_a[off..off + len], a7_b(a7), a7.kernel)
        }
        PanelAt::A7Source(off) => {
            let a7 = a7();
            let len = (a7.kernel.a_panel_bytes)(k);
            (source(off, len), a7_b(a7), a7.kernel)
        }
        PanelAt::A7Tail(off, _) => {
            let a7 = a7();
            let g7 = a7
                .gemv
                .expect("7-bit tail panels exist only with a 7-bit GEMV kernel");
            (&s.packed_a[off..off + (g7.a_panel_bytes)(k)], a7_b(a7), g7)
        }
        PanelAt::Indirect(_) | PanelAt::IndirectWindow(_) => {
            unreachable!("indirect panels exist only on the IGEMM path")
        }
    };
    let kc = ukern.round_k(k);
    debug_assert_eq!(bp.len(), (ukern.b_panel_bytes)(k));
    debug_assert_eq!(ap.len(), (ukern.a_panel_bytes)(k));
    debug_assert!(r <= ukern.mr);
    // SAFETY: `ap`/`bp` are whole panels in `ukern`'s layouts for K = `pw.k` (`kc` is K rounded
    // to `ukern`'s KR). An in-place A panel is MR full rows of K = lda bytes with K a multiple
    // of KR, exactly what `pack_a` produces for a row-major kernel (`a_is_row_major_u8`); a tail
    // panel was packed by the GEMV companion's own `pack_a`, and the companion shares `pack_b`
    // with the kernel that packed B; a 7-bit panel was packed (or checked in place) for the
    // 7-bit companion, holds only bytes ≤ 127 (its `a_max`), and is paired with the B packed by
    // that kernel's `pack_b`. `s.tile` holds MR×NR i32 with row stride NR (every kernel used
    // here has the tile of `kern`); `1 ≤ r ≤ ukern.mr`, `1 ≤ cols ≤ NR`; the ISA was checked at
    // pack time.
    unsafe {
        (ukern.ukernel)(
            kc,
            ap.as_ptr(),
            bp.as_ptr(),
            s.tile.as_mut_ptr(),
            nr,
            r,
            cols,
            false,
        )
    };
    if let PanelAt::A7(_, (o0, o1)) | PanelAt::A7Tail(_, (o0, o1)) = s.panels[ip] {
        // Put back the high bits masked off by `pack_a7`: `128 · W[j][k]` per outlier `(i, k)`.
        let (wt, n, j0) = (&a7().wt, plan.pw.n, p * nr);
        for &(i, kk) in &s.outliers[o0 as usize..o1 as usize] {
            let w = &wt[kk as usize * n + j0..][..cols];
            let t = &mut s.tile[i as usize * nr..][..cols];
            for (t, &w) in t.iter_mut().zip(w) {
                *t = t.wrapping_add(i32::from(w) << 7);
            }
        }
    }
    (r, cols)
}

fn item_u8(
    plan: &Plan<'_>,
    s: &mut Scratch,
    (ib, jb): (usize, usize),
    base: OutPtr<u8>,
    rq: &RequantParams,
    residual: Option<&Residual<'_>>,
    fused: Option<Fused>,
) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let row0 = ib * plan.mc;
    let rows = plan.mc.min(plan.m - row0);
    if s.block != Some(ib) {
        pack_a_block(plan, s, row0, rows);
        s.block = Some(ib);
    }
    let n_panels = plan.pw.n.div_ceil(nr);
    // The tile whose epilogue the next fused tile does (see `Deferred`), in `s.defer_acc`, and
    // the call's constants of that epilogue.
    let mut pending: Option<Deferred<'_>> = None;
    let acc_buf = s.defer_acc.as_mut_ptr();
    let consts = fused.filter(|f| f.igemm_defer.is_some()).map(|f| {
        let p = requant_cols(rq, &plan.col_term, None);
        DeferConsts::new(&p, residual.map(|r| &r.params), f.guard)
    });
    for p in jb * plan.pc..((jb + 1) * plan.pc).min(n_panels) {
        let j0 = p * nr;
        // The panel's 64 columns of epilogue constants (fused tiles; the unfused epilogue
        // slices its own).
        let cols = (fused.is_some() && j0 + 64 <= plan.pw.n)
            .then(|| requant_cols(rq, &plan.col_term, None).range(j0, 64));
        for ip in 0..rows.div_ceil(mr) {
            let (i0, _) = plan.panel(rows, ip);
            if let (Some(f), Some(cols)) = (fused, cols)
                && tile_fused(
                    plan,
                    s,
                    residual,
                    f,
                    (rows, ip, p),
                    row0,
                    base,
                    (&mut pending, acc_buf, consts.as_ref()),
                    cols,
                )
            {
                continue;
            }
            let (r, cols) = tile(plan, s, rows, ip, p);
            epilogue(plan, s, rq, residual, (row0 + i0, i0, j0), (r, cols), base);
        }
    }
    finish_pending(&mut pending);
}

/// Requantizes the deferred tile, if any (the last fused tile of a work item, or the one
/// before a tile that cannot take its epilogue over).
fn finish_pending(pending: &mut Option<Deferred<'_>>) {
    if let Some(d) = pending.take() {
        // SAFETY: a `Deferred` is made only by `tile_fused` after a deferring kernel ran (an
        // AVX-512 VNNI kernel: the ISA, with FMA, was checked at pack time) and stored the
        // tile's accumulators in `s.defer_acc`, which nothing else writes until this call; its
        // epilogue, output rows and skip rows are those `tile_fused` checked (see there).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            qkernels_kernels::requant::finish_deferred(&d)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("deferred tiles exist only on x86-64: {d:?}");
    }
}

/// The call-wide part of the fused epilogue ([`fused_for`]).
#[derive(Clone, Copy, Debug)]
struct Fused {
    /// The indirect kernel's fused entry, on the IGEMM path.
    igemm: Option<IgemmRequantUkernel>,
    /// The GEMM kernel's fused entry, for packed and in-place A panels.
    gemm: Option<GemmRequantUkernel>,
    /// The indirect kernel's deferring entry, when the call defers full tiles: every tile has
    /// at least MR taps (each deferred row gets a tap's worth of K steps to hide in: the 3×3
    /// convs), K ≤ [`DEFER_MAX_K`], and not switched off.
    igemm_defer: Option<IgemmDeferUkernel>,
    /// Whether the NaN guard runs ([`nan_guard_needed`] over all N columns: decided once per
    /// call, not per tile).
    guard: bool,
}

/// Whether this u8 call runs its full 64-column tiles on a fused-epilogue kernel (the
/// microkernel requantizes its accumulators straight from registers): the kernel (or its IGEMM
/// companion, on that path) has such an entry for 64-column tiles, and the params are those of
/// its register-resident epilogue ([`Tile64::supports`]: no weight zero point, requant params
/// in u8 range, an in-range residual add). Other tiles and calls keep the microkernel → i32
/// tile → [`epilogue`] path.
fn fused_for(
    plan: &Plan<'_>,
    rq: &RequantParams,
    residual: Option<&Residual<'_>>,
) -> Option<Fused> {
    if plan.kern.nr != 64 || plan.pw.any_w_zp || !FUSED_EPILOGUE.enabled() {
        return None;
    }
    let igemm = plan.igemm.as_ref().and_then(|(ik, _)| ik.ukernel_requant);
    let gemm = plan.kern.ukernel_requant;
    if igemm.is_none() && gemm.is_none() {
        return None;
    }
    let p = requant_cols(rq, &plan.col_term, None);
    let defer = DEFER_EPILOGUE.enabled();
    Tile64::supports(&p, residual.map(|r| &r.params)).then(|| Fused {
        igemm,
        gemm,
        igemm_defer: igemm
            .and(plan.igemm.as_ref())
            .filter(|(_, ind)| {
                defer && ind.taps() >= plan.kern.mr && ind.taps() * ind.ic <= DEFER_MAX_K
            })
            .and_then(|(ik, _)| ik.ukernel_defer),
        guard: nan_guard_needed(&p),
    })
}

/// Runs tile `(ip, p)` of the block on a fused-epilogue kernel and writes its u8 output (and
/// residual add) directly, if it is a full 64-column tile of an indirect panel or of a packed
/// or in-place panel of the main kernel; returns `false` (having done nothing) otherwise.
/// `cols` are panel `p`'s 64 columns of the epilogue constants, cut once per panel by the caller.
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile_fused<'a>(
    plan: &'a Plan<'_>,
    s: &Scratch,
    residual: Option<&'a Residual<'_>>,
    f: Fused,
    (rows, ip, p): (usize, usize, usize),
    row0: usize,
    base: OutPtr<u8>,
    (pending, acc_buf, consts): (&mut Option<Deferred<'a>>, *mut i32, Option<&'a DeferConsts>),
    cols: RequantCols<'a>,
) -> bool {
    const NR: usize = 64;
    let j0 = p * NR;
    if plan.pw.n < j0 + NR {
        return false;
    }
    let kern = plan.kern;
    debug_assert_eq!(kern.nr, NR);
    let bp = &plan.pw.packed[p * plan.pw.panel_bytes..][..plan.pw.panel_bytes];
    // The A side: an indirection array, or a panel in `kern`'s layout.
    enum A<'a> {
        Ind(
            IgemmRequantUkernel,
            usize,
            usize,
            &'a [*const u8],
            *const usize,
        ),
        Panel(GemmRequantUkernel, &'a [u8]),
    }
    let a = match (s.panels[ip], &plan.igemm, f.igemm, f.gemm) {
        (PanelAt::Indirect(_) | PanelAt::IndirectWindow(_), Some((_, ind)), Some(k), _) => {
            let (ptrs, tap_off) = indirect_a(plan, s, ip).expect("an indirect panel");
            A::Ind(k, ind.taps(), ind.ic, ptrs, tap_off)
        }
        (PanelAt::Packed(off), _, _, Some(k)) => A::Panel(k, &s.packed_a[off..off + plan.a_panel]),
        (PanelAt::Source(off), _, _, Some(k)) => {
            let (data, _) = plan
                .a
                .as_matrix()
                .expect("in-place panels come from a matrix");
            A::Panel(k, &data[off..off + plan.a_panel])
        }
        _ => return false,
    };
    let (i0, r) = plan.panel(rows, ip);
    let row = row0 + i0;
    let flat0 = row * plan.ldc + j0;
    let ep = Tile64 {
        cols,
        guard: f.guard,
        add: residual.map(|res| {
            let skip = &res.skip[row * res.ldskip + j0..];
            assert!(skip.len() >= (r - 1) * res.ldskip + NR);
            TileAdd {
                skip,
                ldskip: res.ldskip,
                params: &res.params,
                vec_len: res.tail_from.saturating_sub(flat0),
            }
        }),
    };
    let out = base.0.wrapping_add(flat0);
    let pf = || next_panel_prefetch(plan, rows, ip, p);
    // A full tile whose epilogue can wait: run the deferring entry, which also finishes the
    // pending tile between its K steps, and leave this one pending.
    let defer = match (consts, &a, f.igemm_defer) {
        (Some(k), A::Ind(..), Some(u)) if r == kern.mr && Deferred::supports(&ep, r, plan.ldc) => {
            Some((k, u))
        }
        _ => None,
    };
    if defer.is_none() {
        finish_pending(pending);
    }
    // SAFETY: `ep`: 64-column slices of the call's constants, params accepted by
    // `Tile64::supports` (`fused_for`), `guard` from `nan_guard_needed` over all N columns, skip
    // rows asserted above. Output rows `row .. row + r` × columns `j0 .. j0 + 64` (≤ N ≤ ldc)
    // are inside the output validated by `check_out` and belong to this work item only; the skip
    // is a shared borrow distinct from the exclusively borrowed output, so they cannot overlap.
    // `1 ≤ r ≤ MR`; the kernels' NR is 64 (checked by `fused_for`); the ISA was checked at pack
    // time. The A and B operands are exactly those `tile` passes to the unfused kernels (same
    // contracts: indirection arrays or window pointers with `s.tap_off`, `ic`, K, the B panel and
    // the prefetch hint for the indirect kernel; whole
    // panels of `kern`'s layouts for K = `pw.k`, `kc` rounded to its KR, for the GEMM kernel).
    // Deferring (`r = MR`, an add without its scalar tail inside the tile: `Deferred::supports`):
    // `acc_buf` is this work item's `s.defer_acc` (MR × 64 i32, written only here); the pending
    // tile, if any, is one of this item's earlier tiles, with the same contracts, whose
    // accumulators are in `acc_buf` (the kernel reads them all before it overwrites them) and
    // whose output rows are disjoint from this tile's.
    unsafe {
        match (a, defer) {
            (A::Ind(_, taps, ic, ptrs, tap_off), Some((_, k))) => k(
                taps,
                ic,
                ptrs.as_ptr(),
                tap_off,
                bp.as_ptr(),
                pending.as_ref(),
                acc_buf,
                pf(),
            ),
            (A::Ind(k, taps, ic, ptrs, tap_off), _) => k(
                taps,
                ic,
                ptrs.as_ptr(),
                tap_off,
                bp.as_ptr(),
                r,
                &ep,
                out,
                plan.ldc,
                pf(),
            ),
            (A::Panel(k, ap), _) => {
                debug_assert_eq!(ap.len(), (kern.a_panel_bytes)(plan.pw.k));
                k(
                    plan.kp,
                    plan.kp,
                    ap.as_ptr(),
                    bp.as_ptr(),
                    r,
                    &ep,
                    out,
                    plan.ldc,
                )
            }
        }
    };
    if let Some((k, _)) = defer {
        *pending = Some(Deferred::new(acc_buf, r, &ep, k, out, plan.ldc));
    }
    true
}

/// The epilogue constants of all N columns: `rq`'s per-column multipliers and bias, the call's
/// `col_term`, and the weight zero points when any is non-zero.
pub(crate) fn requant_cols<'a>(
    rq: &'a RequantParams,
    col_term: &'a [i32],
    w_zp: Option<&'a [i32]>,
) -> RequantCols<'a> {
    RequantCols {
        col_term,
        w_zp,
        bias: rq.bias_acc.as_deref(),
        mult: &rq.mult,
        out_zp: rq.out_zp,
        qmin: rq.qmin,
        qmax: rq.qmax,
    }
}

/// The epilogue of one `r × cols` tile in `s.tile` (the driver's one entry point per tile):
/// zero-point correction + requant, and the fused residual add when there is one. `row` is the
/// tile's first output row, `i0` its offset in the block (row sums), `j0` its first column.
#[inline]
fn epilogue(
    plan: &Plan<'_>,
    s: &Scratch,
    rq: &RequantParams,
    residual: Option<&Residual<'_>>,
    (row, i0, j0): (usize, usize, usize),
    (r, cols): (usize, usize),
    base: OutPtr<u8>,
) {
    let nr = plan.kern.nr;
    let w_zp = plan.pw.any_w_zp.then_some(&plan.pw.w_zp[..]);
    let cols_p = requant_cols(rq, &plan.col_term, w_zp).range(j0, cols);
    let flat0 = row * plan.ldc + j0;
    // SAFETY: rows `row .. row + r` (< M) × columns `j0 .. j0 + cols` (≤ N ≤ ldc) are inside the
    // output validated by `check_out`, and belong to this work item only (no other item and no
    // reference touches them during the call). The skip slice is a shared borrow distinct from
    // the exclusively borrowed output, so they cannot overlap.
    unsafe {
        let out = base.0.add(flat0);
        match residual {
            None => plan.epilogue.requant_tile_raw(
                &s.tile,
                nr,
                r,
                cols,
                &s.row_sums[i0..],
                &cols_p,
                out,
                plan.ldc,
            ),
            Some(res) => {
                let add = TileAdd {
                    skip: &res.skip[row * res.ldskip + j0..],
                    ldskip: res.ldskip,
                    params: &res.params,
                    vec_len: res.tail_from.saturating_sub(flat0),
                };
                plan.epilogue.requant_add_tile_raw(
                    &s.tile,
                    nr,
                    r,
                    cols,
                    &s.row_sums[i0..],
                    &cols_p,
                    &add,
                    out,
                    plan.ldc,
                )
            }
        }
    }
}

fn item_i32(plan: &Plan<'_>, s: &mut Scratch, (ib, jb): (usize, usize), base: OutPtr<i32>) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let row0 = ib * plan.mc;
    let rows = plan.mc.min(plan.m - row0);
    if s.block != Some(ib) {
        pack_a_block(plan, s, row0, rows);
        s.block = Some(ib);
    }
    let n_panels = plan.pw.n.div_ceil(nr);
    for p in jb * plan.pc..((jb + 1) * plan.pc).min(n_panels) {
        let j0 = p * nr;
        for ip in 0..rows.div_ceil(mr) {
            let (r, cols) = tile(plan, s, rows, ip, p);
            let (i0, _) = plan.panel(rows, ip);
            for i in 0..r {
                // SAFETY: as in `item_u8`: inside the validated output, owned by this item.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        base.0.add((row0 + i0 + i) * plan.ldc + j0),
                        cols,
                    )
                };
                correct_tile(
                    kern.isa,
                    &s.tile[i * nr..][..cols],
                    nr,
                    1,
                    cols,
                    &s.row_sums[i0 + i..],
                    &plan.col_term[j0..j0 + cols],
                    plan.pw.any_w_zp.then(|| &plan.pw.w_zp[j0..j0 + cols]),
                    dst,
                    cols,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Shape, partition};

    /// The AVX-512 VNNI 8×64 kernel's shape of a ResNet-18 layer (K rounded to 4).
    fn shape(m: usize, n: usize, k: usize, threads: usize) -> Shape {
        let kp = k.div_ceil(4) * 4;
        Shape {
            m_panels: m.div_ceil(8),
            n_panels: n.div_ceil(64),
            a_panel: 8 * kp,
            b_panel: 64 * kp,
            tile_macs: 8 * 64 * kp,
            threads,
        }
    }

    fn grid(s: &Shape) -> (usize, usize) {
        let (mc, pc) = partition(s);
        (s.m_panels.div_ceil(mc), s.n_panels.div_ceil(pc))
    }

    #[test]
    fn one_thread_keeps_l2_blocks_and_all_of_n() {
        let s = shape(3136, 64, 576, 1);
        assert_eq!(partition(&s), (42, 1));
        let s = shape(49, 512, 4608, 1);
        assert_eq!(partition(&s), (5, 8));
    }

    #[test]
    fn two_threads_split_deep_gemms_over_n_and_narrow_ones_over_m() {
        // Stage 4 3×3: one M block (B fetched once), N in two halves.
        assert_eq!(grid(&shape(49, 512, 4608, 2)), (1, 2));
        // Stage 1 3×3: N is one panel; equal M blocks, an even number of them.
        let (mb, nb) = grid(&shape(3136, 64, 576, 2));
        assert_eq!(nb, 1);
        assert_eq!(mb % 2, 0, "{mb} blocks");
        assert_eq!(392 % mb, 0, "{mb} blocks");
    }

    #[test]
    fn every_grid_has_work_for_every_thread_when_possible() {
        for (m, n, k) in [
            (12544, 64, 147),
            (3136, 64, 576),
            (784, 128, 1152),
            (784, 128, 64),
            (196, 256, 2304),
            (49, 512, 4608),
            (49, 512, 256),
            (1, 1000, 512),
            (1, 10, 64),
        ] {
            for threads in [2, 3, 4, 8] {
                let s = shape(m, n, k, threads);
                let (mc, pc) = partition(&s);
                assert!(mc >= 1 && pc >= 1 && mc <= s.m_panels && pc <= s.n_panels);
                let (mb, nb) = grid(&s);
                assert!(
                    mb * nb >= threads.min(s.m_panels * s.n_panels),
                    "{m}x{n}x{k} on {threads} threads: {mb}x{nb}"
                );
            }
        }
    }
}
