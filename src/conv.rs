//! Quantized 2-D convolution over NHWC u8 activations with prepacked OIHW i8 weights.
//!
//! Two engines, chosen once at pack time (see `docs/architecture.md`):
//!
//! * **GEMM per group** (fbgemm's im2col path): one `A` row per output pixel with
//!   `K = kh·kw·IC/G` entries in (kh, kw, ic) order, padded taps holding the input zero point.
//!   The rows are written by [`Im2col`] (an [`ASource`]) straight into the driver's A block, as
//!   runs copied from the image and runs of padding — no im2col matrix, no padded image copy. A
//!   1×1 stride-1 conv with no padding reads the input directly as the `A` matrix; a 1×1
//!   stride-2 downsample gathers one `IC`-byte run per row.
//! * **Direct depthwise kernel** (`groups == IC`, multiplier 1 or 2, any kernel, stride,
//!   padding, dilation): channels in SIMD lanes, exact i32 accumulation or fbgemm's pair
//!   saturation when [`qkernels_ref::conv::conv_saturates`] says PyTorch saturates.
//!
//! [`Conv2d::run_add`] adds the ResNet residual join (conv → requant → add → ReLU) with bytes
//! identical to the unfused PyTorch sequence. On the GEMM engine the add runs inside the
//! driver's per-tile epilogue (L1-hot, in parallel with the GEMM); the depthwise engine runs it
//! as a pass over its output.

use crate::gemm::{
    ASource, GemmOptions, Indirect, Matrix, PackedWeights, Residual, gemm_requant, gemm_requant_add,
};
use crate::validate::{
    check_capacity, check_len, check_nonzero, check_qparams_u8, checked_product,
};
use crate::{Accumulation, Error, Isa, QParams, Result, WeightQParams};
use qkernels_kernels::depthwise::{self, DepthwisePacked, DwGeometry, DwRequant};
use qkernels_kernels::im2col::{
    BorderRow, InteriorRows, copy_interior_rows, copy_run, write_border_row,
};
use qkernels_kernels::ops::AddParams;
use qkernels_ref::RequantParams;

/// Hyper-parameters of a conv layer (independent of the input's spatial size and batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

impl Conv2dParams {
    /// Square kernel `k`, stride `s`, padding `p`, dilation 1, one group.
    pub fn square(in_channels: usize, out_channels: usize, k: usize, s: usize, p: usize) -> Self {
        Conv2dParams {
            in_channels,
            out_channels,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        }
    }

    /// Checks every field; `Err` names the first bad one.
    pub fn validate(&self) -> Result<()> {
        check_nonzero(self.in_channels, "conv in_channels")?;
        check_nonzero(self.out_channels, "conv out_channels")?;
        check_nonzero(self.kernel_h, "conv kernel_h")?;
        check_nonzero(self.kernel_w, "conv kernel_w")?;
        check_nonzero(self.stride_h, "conv stride_h")?;
        check_nonzero(self.stride_w, "conv stride_w")?;
        check_nonzero(self.dilation_h, "conv dilation_h")?;
        check_nonzero(self.dilation_w, "conv dilation_w")?;
        check_nonzero(self.groups, "conv groups")?;
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return crate::invalid!(
                "conv groups {} must divide in_channels {} and out_channels {}",
                self.groups,
                self.in_channels,
                self.out_channels
            );
        }
        checked_product(
            &[
                self.out_channels,
                self.in_channels,
                self.kernel_h,
                self.kernel_w,
            ],
            "conv weights",
        )?;
        Ok(())
    }

    /// The geometry for an input of `batch × h × w`.
    pub fn geometry(&self, batch: usize, h: usize, w: usize) -> crate::Conv2dGeometry {
        crate::Conv2dGeometry {
            batch,
            in_h: h,
            in_w: w,
            in_c: self.in_channels,
            out_c: self.out_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_h: self.pad_h,
            pad_w: self.pad_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            groups: self.groups,
        }
    }

    /// Output spatial size for an `h × w` input; `Err` if the (padded) input is smaller than the
    /// dilated kernel or a size overflows.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        use crate::validate::window_output_extent as ext;
        Ok((
            ext(
                h,
                self.kernel_h,
                self.stride_h,
                self.pad_h,
                self.dilation_h,
                "conv height",
            )?,
            ext(
                w,
                self.kernel_w,
                self.stride_w,
                self.pad_w,
                self.dilation_w,
                "conv width",
            )?,
        ))
    }
}

/// Options fixed when a conv is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    pub isa: Isa,
    pub accumulation: Accumulation,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            isa: crate::active_isa(),
            accumulation: Accumulation::Exact,
        }
    }
}

/// A conv layer with weights packed once (immutable; safe to share between threads).
#[derive(Clone, Debug)]
pub struct Conv2d {
    params: Conv2dParams,
    engine: Engine,
    opts: ConvOptions,
    /// The Winograd F(2×2, 3×3) engine, when eligible (exact AVX2 3×3 stride-1 pad-1 convs,
    /// see [`crate::winograd`]); the GEMM weights are kept too (switch, epilogue constants).
    wino: Option<Box<crate::winograd::WinogradWeights>>,
}

/// How a conv layer is computed.
#[derive(Clone, Debug)]
enum Engine {
    /// One packed GEMM per group (im2col rows streamed into the A packing).
    Gemm(Vec<PackedWeights>),
    /// The direct depthwise kernel (groups = IC, OC ∈ {IC, 2·IC}).
    Depthwise(Box<DepthwiseEngine>),
}

#[derive(Clone, Debug)]
struct DepthwiseEngine {
    packed: DepthwisePacked,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
    saturate: bool,
}

/// Whether a layer runs on the direct depthwise kernel: one input channel per group (more than
/// one group) and a channel multiplier of 1 or 2. Any kernel size, stride, padding, dilation.
pub fn uses_depthwise_kernel(p: &Conv2dParams) -> bool {
    p.groups > 1
        && p.groups == p.in_channels
        && (p.out_channels == p.groups || p.out_channels == 2 * p.groups)
}

impl Conv2d {
    /// The packed GEMM weights (one per group; none for the depthwise engine), for moving them
    /// into a model's shared huge-page arena.
    pub(crate) fn packed_weights_mut(&mut self) -> &mut [PackedWeights] {
        match &mut self.engine {
            Engine::Gemm(v) => v,
            Engine::Depthwise(_) => &mut [],
        }
    }

    /// Packs OIHW weights `[OC, IC/G, kh, kw]` for the active ISA, exact accumulation.
    pub fn new(
        params: Conv2dParams,
        w_oihw: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
    ) -> Result<Conv2d> {
        Conv2d::with_options(params, w_oihw, wq, bias, &ConvOptions::default())
    }

    /// Packs OIHW weights for `opts.isa` and `opts.accumulation`.
    pub fn with_options(
        params: Conv2dParams,
        w_oihw: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        opts: &ConvOptions,
    ) -> Result<Conv2d> {
        params.validate()?;
        let p = &params;
        let want = checked_product(
            &[
                p.out_channels,
                p.in_channels / p.groups,
                p.kernel_h,
                p.kernel_w,
            ],
            "conv weights",
        )?;
        check_len(w_oihw.len(), want, "conv weights (OIHW)")?;
        crate::validate::check_weight_qparams(wq, p.out_channels, "conv weights")?;
        if let Some(b) = bias {
            check_len(b.len(), p.out_channels, "conv bias")?;
        }
        // Whether PyTorch would saturate on this layer depends only on its hyper-parameters.
        let saturate = qkernels_ref::conv::conv_saturates(&p.geometry(1, 1, 1), opts.accumulation);
        if uses_depthwise_kernel(p) {
            if !opts.isa.is_supported() {
                return Err(Error::Unsupported(format!(
                    "ISA {} is not supported by this CPU",
                    opts.isa
                )));
            }
            let zps: Vec<i32> = (0..p.out_channels).map(|o| wq.zero_point(o)).collect();
            let packed = DepthwisePacked::new(
                p.in_channels,
                p.out_channels / p.in_channels,
                p.kernel_h,
                p.kernel_w,
                w_oihw,
                &zps,
            );
            let engine = Engine::Depthwise(Box::new(DepthwiseEngine {
                packed,
                wq: wq.clone(),
                bias: bias.map(<[f32]>::to_vec),
                saturate,
            }));
            return Ok(Conv2d {
                params,
                engine,
                opts: *opts,
                wino: None,
            });
        }
        let geo = p.geometry(1, p.kernel_h, p.kernel_w);
        let ocg = p.out_channels / p.groups;
        let gopts = GemmOptions {
            isa: opts.isa,
            saturate_pairs: saturate,
        };
        let groups = (0..p.groups)
            .map(|g| {
                let rows = qkernels_ref::conv::weight_rows_khwc(&geo, w_oihw, g);
                let wq_g = slice_wq(wq, g * ocg, ocg);
                let b = bias.map(|b| &b[g * ocg..(g + 1) * ocg]);
                PackedWeights::with_options(&rows, ocg, geo.k_per_group(), &wq_g, b, &gopts)
            })
            .collect::<Result<Vec<_>>>()?;
        let wino = crate::winograd::eligible(p, opts.isa, saturate, wq)
            .then(|| Box::new(crate::winograd::WinogradWeights::new(p, w_oihw)));
        Ok(Conv2d {
            params,
            engine: Engine::Gemm(groups),
            opts: *opts,
            wino,
        })
    }

    /// The layer's hyper-parameters.
    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// The options it was packed with.
    pub fn options(&self) -> &ConvOptions {
        &self.opts
    }

    /// Output `(height, width)` for an `h × w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.params.output_size(h, w)
    }

    /// Runs the conv: `x` NHWC `[batch, h, w, IC]` u8, `out` NHWC `[batch, OH, OW, OC]` u8
    /// (exactly that many elements are written; `out` may be longer).
    pub fn run(
        &self,
        x: &[u8],
        batch: usize,
        h: usize,
        w: usize,
        x_q: QParams,
        out_q: QParams,
        relu: bool,
        out: &mut [u8],
    ) -> Result<()> {
        self.run_impl(x, batch, h, w, x_q, out_q, relu, None, out)
    }

    /// [`Conv2d::run`], then (when `residual` is given) the in-place residual add of
    /// [`Conv2d::run_add`]: `(skip, params)` with `skip` already checked to hold the output's
    /// element count.
    fn run_impl(
        &self,
        x: &[u8],
        batch: usize,
        h: usize,
        w: usize,
        x_q: QParams,
        out_q: QParams,
        relu: bool,
        residual: Option<(&[u8], AddParams)>,
        out: &mut [u8],
    ) -> Result<()> {
        let p = &self.params;
        check_nonzero(batch, "conv batch")?;
        check_nonzero(h, "conv input height")?;
        check_nonzero(w, "conv input width")?;
        check_qparams_u8(x_q, "conv input")?;
        check_qparams_u8(out_q, "conv output")?;
        let n_in = checked_product(&[batch, h, w, p.in_channels], "conv input")?;
        check_len(x.len(), n_in, "conv input (NHWC)")?;
        let (oh, ow) = self.output_size(h, w)?;
        let n_out = checked_product(&[batch, oh, ow, p.out_channels], "conv output")?;
        check_capacity(out.len(), n_out, "conv output")?;
        let geo = p.geometry(batch, h, w);
        let groups = match &self.engine {
            Engine::Gemm(groups) => groups,
            Engine::Depthwise(dw) => {
                let out = &mut out[..n_out];
                self.run_depthwise(dw, x, &geo, x_q, out_q, relu, out);
                if let Some((skip, ap)) = residual {
                    let tail_from = n_out / 64 * 64;
                    crate::ops::add_inplace_on(self.opts.isa, out, skip, &ap, tail_from);
                }
                return Ok(());
            }
        };
        // The add's formula rule is PyTorch's one-thread rule on the flat NHWC index.
        let tail_from = n_out / 64 * 64;
        if let Some(ww) = self.wino.as_deref()
            && self.uses_winograd(batch, h, w)
        {
            let out = &mut out[..n_out];
            ww.run(
                &groups[0],
                self.opts.isa,
                x,
                (batch, h, w),
                x_q,
                out_q,
                relu,
                out,
            );
            if let Some((skip, ap)) = residual {
                crate::ops::add_inplace_on(self.opts.isa, out, skip, &ap, tail_from);
            }
            return Ok(());
        }
        // Few input channels (the RGB stem): column strips instead of im2col rows.
        if residual.is_none()
            && groups.len() == 1
            && !self.uses_igemm(batch, h, w)
            && crate::gemm::gemm_requant_strips(
                &groups[0],
                &geo,
                x,
                (oh, ow),
                x_q,
                out_q,
                relu,
                &mut out[..n_out],
            )?
        {
            return Ok(());
        }
        let ocg = p.out_channels / p.groups;
        let m = batch * oh * ow;
        for (g, pw) in groups.iter().enumerate() {
            let dst = &mut out[g * ocg..n_out];
            // Group g writes columns g·ocg .. (g+1)·ocg of every row; its slices start there.
            let res = residual.map(|(skip, params)| Residual {
                skip: &skip[g * ocg..n_out],
                ldskip: p.out_channels,
                params,
                tail_from: tail_from.saturating_sub(g * ocg),
            });
            if is_direct_1x1(p) {
                let a = Matrix::new(x, m, p.in_channels, p.in_channels)?;
                match res {
                    None => gemm_requant(pw, &a, x_q, out_q, relu, dst, p.out_channels)?,
                    Some(r) => gemm_requant_add(pw, &a, x_q, out_q, dst, p.out_channels, r)?,
                }
            } else {
                let a = Im2col {
                    geo,
                    x,
                    pad: x_q.zero_point as u8,
                    group: g,
                    oh,
                    ow,
                    isa: self.opts.isa,
                };
                match res {
                    None => gemm_requant(pw, &a, x_q, out_q, relu, dst, p.out_channels)?,
                    Some(r) => gemm_requant_add(pw, &a, x_q, out_q, dst, p.out_channels, r)?,
                }
            }
        }
        Ok(())
    }
}

impl Conv2d {
    /// Whether a call on a `batch × h × w` input runs on the indirect (IGEMM) kernel: GEMM
    /// engine, not the direct 1×1 path, an IGEMM kernel for the packed weights (exact VNNI, no
    /// weight zero point), `IC/G` a multiple of its K-interleave and more than one output pixel.
    #[doc(hidden)]
    pub fn uses_igemm(&self, batch: usize, h: usize, w: usize) -> bool {
        let p = &self.params;
        let Engine::Gemm(groups) = &self.engine else {
            return false;
        };
        let Ok((oh, ow)) = self.output_size(h, w) else {
            return false;
        };
        let icg = p.in_channels / p.groups;
        !is_direct_1x1(p)
            && batch * oh * ow > 1
            && groups[0]
                .igemm_kernel()
                .is_some_and(|k| icg.is_multiple_of(k.gemm.kr))
    }

    /// Whether a call on a `batch × h × w` input (without residual add) runs on the column-strip
    /// path of small-channel convs (`gemm::gemm_requant_strips`: the RGB stem on AVX-512 VNNI),
    /// given requant params its fused epilogue takes (any valid u8 params).
    #[doc(hidden)]
    pub fn uses_strips(&self, batch: usize, h: usize, w: usize) -> bool {
        let Engine::Gemm(groups) = &self.engine else {
            return false;
        };
        let Ok(size) = self.output_size(h, w) else {
            return false;
        };
        groups.len() == 1
            && !self.uses_igemm(batch, h, w)
            && crate::gemm::strips_fit(&groups[0], &self.params.geometry(batch, h, w), size)
    }

    /// Whether a call runs on the exact integer Winograd F(2×2, 3×3) engine (packed for it: exact
    /// AVX2, 3×3, stride 1, pad 1, dilation 1, one group, no weight zero point; and switched on:
    /// [`crate::winograd::set_winograd_enabled`], `QKERNELS_WINOGRAD`) for a `batch × h × w`
    /// input with enough 2×2 output tiles ([`crate::winograd::set_winograd_min_tiles`]).
    #[doc(hidden)]
    pub fn uses_winograd(&self, batch: usize, h: usize, w: usize) -> bool {
        self.wino.is_some()
            && crate::winograd::winograd_enabled()
            && crate::winograd::worth_it(batch, h, w)
    }

    /// Whether this layer runs on the direct depthwise kernel (else: GEMM per group).
    pub fn is_depthwise(&self) -> bool {
        matches!(self.engine, Engine::Depthwise(_))
    }

    /// Whether this layer accumulates with fbgemm's pair saturation (decided at pack time from
    /// the layer's hyper-parameters and [`ConvOptions::accumulation`]).
    pub fn saturates(&self) -> bool {
        match &self.engine {
            Engine::Gemm(groups) => groups[0].saturates(),
            Engine::Depthwise(dw) => dw.saturate,
        }
    }

    fn run_depthwise(
        &self,
        dw: &DepthwiseEngine,
        x: &[u8],
        geo: &crate::Conv2dGeometry,
        x_q: QParams,
        out_q: QParams,
        relu: bool,
        out: &mut [u8],
    ) {
        let (c, m) = (dw.packed.channels, dw.packed.mult);
        let oc = c * m;
        let rq = RequantParams::new(oc, x_q, &dw.wq, dw.bias.as_deref(), out_q, relu);
        // Constants in the kernel's [j][c] layout (output channel c·m + j).
        let perm = |v: &[f32]| -> Vec<f32> {
            (0..m)
                .flat_map(|j| (0..c).map(move |i| v[i * m + j]))
                .collect()
        };
        let krq = DwRequant {
            mult: perm(&rq.mult),
            bias_acc: rq.bias_acc.as_deref().map(perm),
            out_zp: rq.out_zp,
            qmin: rq.qmin,
            qmax: rq.qmax,
        };
        let g = DwGeometry {
            batch: geo.batch,
            in_h: geo.in_h,
            in_w: geo.in_w,
            out_h: geo.out_h(),
            out_w: geo.out_w(),
            stride_h: geo.stride_h,
            stride_w: geo.stride_w,
            pad_h: geo.pad_h,
            pad_w: geo.pad_w,
            dilation_h: geo.dilation_h,
            dilation_w: geo.dilation_w,
        };
        let rows = g.batch * g.out_h;
        let row_bytes = g.out_w * oc;
        let threads = rayon::current_num_threads();
        let chunk_rows = if threads > 1 {
            rows.div_ceil(threads * 4).max(1)
        } else {
            rows
        };
        let pad = x_q.zero_point as u8;
        let work = |(i, chunk): (usize, &mut [u8])| {
            let r0 = i * chunk_rows;
            let r1 = r0 + chunk.len() / row_bytes;
            // SAFETY: `self.opts.isa` was checked as supported when the layer was packed.
            unsafe {
                depthwise::run(
                    self.opts.isa,
                    &dw.packed,
                    &g,
                    x,
                    pad,
                    dw.saturate,
                    &krq,
                    r0..r1,
                    chunk,
                )
            }
        };
        let chunks = out.chunks_mut(chunk_rows * row_bytes).enumerate();
        if threads > 1 && rows > chunk_rows {
            use rayon::prelude::*;
            chunks.collect::<Vec<_>>().into_par_iter().for_each(work);
        } else {
            chunks.for_each(work);
        }
    }

    /// Conv → requantize to `conv_q` → `quantized::add(conv_out, skip)` (→ ReLU when `relu`) to
    /// `out_q`: the ResNet residual join. The bytes equal the unfused PyTorch sequence
    /// (`qkernels_ref::add` on the conv's u8 output and `skip`, with the vector/tail formula
    /// rule on the flattened NHWC index), because each conv output byte is formed first and the
    /// add is applied to it with the global rule — per GEMM tile in the driver's epilogue, or
    /// as a pass over the output of the depthwise engine.
    ///
    /// `skip` is NHWC `[batch, OH, OW, OC]` with qparams `skip_q`.
    pub fn run_add(
        &self,
        x: &[u8],
        batch: usize,
        h: usize,
        w: usize,
        x_q: QParams,
        conv_q: QParams,
        skip: &[u8],
        skip_q: QParams,
        out_q: QParams,
        relu: bool,
        out: &mut [u8],
    ) -> Result<()> {
        check_qparams_u8(skip_q, "residual skip")?;
        check_qparams_u8(out_q, "residual output")?;
        let (oh, ow) = self.output_size(h, w)?;
        let n_out = checked_product(&[batch, oh, ow, self.params.out_channels], "conv output")?;
        check_len(skip.len(), n_out, "residual skip (NHWC)")?;
        let p = crate::ops::add_params(conv_q, skip_q, out_q, relu);
        self.run_impl(x, batch, h, w, x_q, conv_q, false, Some((skip, p)), out)
    }
}

/// A 1×1, stride-1, unpadded, one-group conv: the input is the `A` matrix itself.
fn is_direct_1x1(p: &Conv2dParams) -> bool {
    p.groups == 1
        && p.kernel_h == 1
        && p.kernel_w == 1
        && p.stride_h == 1
        && p.stride_w == 1
        && p.pad_h == 0
        && p.pad_w == 0
}

fn slice_wq(wq: &WeightQParams, start: usize, len: usize) -> WeightQParams {
    if wq.per_channel {
        WeightQParams::per_channel(
            wq.scales[start..start + len].to_vec(),
            wq.zero_points[start..start + len].to_vec(),
        )
    } else {
        wq.clone()
    }
}

/// im2col rows of one group of a conv, generated on demand.
pub struct Im2col<'a> {
    pub geo: crate::Conv2dGeometry,
    pub x: &'a [u8],
    /// The input zero point (fills padded taps).
    pub pad: u8,
    pub group: usize,
    pub oh: usize,
    pub ow: usize,
    /// ISA of the row copies (the conv's; any supported ISA gives the same bytes).
    pub isa: Isa,
}

/// Per-call constants of [`Im2col::fill`] (no divisions in the row loop).
struct FillGeo {
    icg: usize,
    row_len: usize,
    dense: bool,
    pad64: [u8; 64],
}

impl Im2col<'_> {
    /// Fills a padded run with the input zero point (`pad64` is 64 copies of it).
    #[inline(always)]
    fn pad_run(d: &mut [u8], pad64: &[u8; 64]) {
        if d.is_empty() {
        } else if d.len() <= 64 {
            copy_run(d, &pad64[..d.len()]);
        } else {
            d.fill(pad64[0]);
        }
    }

    /// Writes the whole row of output pixel `(b, oy, ox)` (`d.len() == K`): per kernel row, the
    /// in-image taps are one contiguous run when dilation is 1 and there is one group.
    #[inline(always)]
    fn write_full_row(&self, f: &FillGeo, b: usize, oy: usize, ox: usize, d: &mut [u8]) {
        let g = &self.geo;
        let icg = f.icg;
        let ix0 = (ox * g.stride_w) as isize - g.pad_w as isize;
        let iy0 = (oy * g.stride_h) as isize - g.pad_h as isize;
        let img = b * g.in_h;
        if f.dense {
            // Taps kx with 0 ≤ ix0 + kx < in_w are inside (dilation 1).
            let lo = (-ix0).clamp(0, g.kernel_w as isize) as usize;
            let hi = (g.in_w as isize - ix0).clamp(lo as isize, g.kernel_w as isize) as usize;
            let (l_len, m_len) = (lo * icg, (hi - lo) * icg);
            // Only used when some tap is inside (m_len > 0), where it is ≥ 0.
            let src_x = (ix0 + lo as isize).max(0) as usize;
            let line_bytes = g.in_w * g.in_c;
            // Kernel rows ky with 0 ≤ iy0 + ky·dh < in_h are inside vertically.
            let dh = g.dilation_h as isize;
            let ky_lo = ((-iy0).max(0) + dh - 1) / dh;
            let ky_hi = ((g.in_h as isize - iy0).max(0) + dh - 1) / dh;
            let ky_hi = (ky_hi as usize).min(g.kernel_h);
            let ky_lo = (ky_lo as usize).min(ky_hi);
            let src0 = if m_len > 0 && ky_lo < ky_hi {
                let iy = (iy0 + ky_lo as isize * dh) as usize;
                (img + iy) * line_bytes + src_x * g.in_c
            } else {
                0
            };
            let row = BorderRow {
                src0,
                line_step: g.dilation_h * line_bytes,
                runs: g.kernel_h,
                run: f.row_len,
                lead: l_len,
                len: m_len,
                ky_lo,
                ky_hi,
            };
            write_border_row(self.isa, self.x, &row, self.pad, d);
        } else {
            let c0 = self.group * icg;
            for ky in 0..g.kernel_h {
                let iy = iy0 + (ky * g.dilation_h) as isize;
                let inside_y = iy >= 0 && (iy as usize) < g.in_h;
                for kx in 0..g.kernel_w {
                    let tap = &mut d[(ky * g.kernel_w + kx) * icg..][..icg];
                    let ix = ix0 + (kx * g.dilation_w) as isize;
                    if inside_y && ix >= 0 && (ix as usize) < g.in_w {
                        let off = ((img + iy as usize) * g.in_w + ix as usize) * g.in_c + c0;
                        copy_run(tap, &self.x[off..off + icg]);
                    } else {
                        Self::pad_run(tap, &f.pad64);
                    }
                }
            }
        }
    }

    /// Writes `A[r][k0 .. k0 + d.len()]` into `d` (any sub-range of the row), as pieces: runs
    /// copied from the image, runs filled with the input zero point.
    fn write_row_range(&self, r: usize, k0: usize, d: &mut [u8]) {
        let g = &self.geo;
        let icg = g.in_c_per_group();
        let c0 = self.group * icg;
        let (b, rem) = (r / (self.oh * self.ow), r % (self.oh * self.ow));
        let (oy, ox) = (rem / self.ow, rem % self.ow);
        let k1 = k0 + d.len();
        for t in k0 / icg..k1.div_ceil(icg) {
            let (ky, kx) = (t / g.kernel_w, t % g.kernel_w);
            let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_h as isize;
            let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_w as isize;
            let (lo, hi) = ((t * icg).max(k0), ((t + 1) * icg).min(k1));
            let dd = &mut d[lo - k0..hi - k0];
            if iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w {
                let off = ((b * g.in_h + iy as usize) * g.in_w + ix as usize) * g.in_c + c0;
                let s = off + (lo - t * icg);
                dd.copy_from_slice(&self.x[s..s + dd.len()]);
            } else {
                dd.fill(self.pad);
            }
        }
    }
}

impl ASource for Im2col<'_> {
    fn rows(&self) -> usize {
        self.geo.batch * self.oh * self.ow
    }

    fn depth(&self) -> usize {
        self.geo.k_per_group()
    }

    fn as_indirect(&self) -> Option<Indirect<'_>> {
        let icg = self.geo.in_c_per_group();
        Some(Indirect {
            x: self.x,
            geo: self.geo,
            c0: self.group * icg,
            ic: icg,
            oh: self.oh,
            ow: self.ow,
            pad: self.pad,
        })
    }

    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize) {
        if k0 != 0 || kc != self.depth() {
            for i in 0..rows {
                self.write_row_range(row0 + i, k0, &mut dst[i * ld..][..kc]);
            }
            return;
        }
        let (b, rem) = (row0 / (self.oh * self.ow), row0 % (self.oh * self.ow));
        let (mut b, mut oy, mut ox) = (b, rem / self.ow, rem % self.ow);
        let icg = self.geo.in_c_per_group();
        let f = FillGeo {
            icg,
            row_len: self.geo.kernel_w * icg,
            dense: self.geo.dilation_w == 1 && self.geo.groups == 1,
            pad64: [self.pad; 64],
        };
        let g = &self.geo;
        // Interior stretch of an output row (dense layers): output columns whose taps are all
        // inside the image horizontally; rows whose taps are all inside vertically.
        let (ox_lo, ox_hi) = if f.dense && g.kernel_w <= g.in_w + g.pad_w {
            let lo = g.pad_w.div_ceil(g.stride_w);
            let hi = ((g.in_w + g.pad_w - g.kernel_w) / g.stride_w + 1).min(self.ow);
            (lo, hi.max(lo))
        } else {
            (0, 0)
        };
        let line_bytes = g.in_w * g.in_c;
        let mut i = 0;
        while i < rows {
            let iy0 = (oy * g.stride_h) as isize - g.pad_h as isize;
            let y_inside = iy0 >= 0 && iy0 as usize + (g.kernel_h - 1) * g.dilation_h < g.in_h;
            let step = if y_inside && (ox_lo..ox_hi).contains(&ox) {
                let count = (ox_hi - ox).min(rows - i);
                let ix0 = ox * g.stride_w - g.pad_w;
                let rows_g = InteriorRows {
                    src0: (b * g.in_h + iy0 as usize) * line_bytes + ix0 * g.in_c,
                    pixel_step: g.stride_w * g.in_c,
                    line_step: g.dilation_h * line_bytes,
                    runs: g.kernel_h,
                    run: f.row_len,
                    count,
                    ld,
                };
                copy_interior_rows(self.isa, self.x, &rows_g, &mut dst[i * ld..]);
                count
            } else {
                self.write_full_row(&f, b, oy, ox, &mut dst[i * ld..][..kc]);
                1
            };
            i += step;
            ox += step;
            if ox == self.ow {
                ox = 0;
                oy += 1;
                if oy == self.oh {
                    oy = 0;
                    b += 1;
                }
            }
        }
    }
}
