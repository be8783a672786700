//! conv2d and linear as PyTorch's fbgemm backend computes them.
//!
//! A conv is a GEMM per group: one row of `A` per output pixel, `K = kh·kw·(IC/G)` entries in
//! **(kh, kw, ic)** order with `ic` fastest (fbgemm reorders OIHW weights to O,kh,kw,I), and
//! padded taps holding the **input zero point** (so they contribute exactly 0 after the
//! zero-point correction — fbgemm's `PackAWithIm2Col`). The accumulator is corrected and
//! requantized exactly as in [`crate::requant`]. Output is NHWC `[N, OH, OW, OC]`.

use crate::gemm::{Accumulation, dot_u8s8, zero_point_correction};
use crate::requant::RequantParams;
use crate::{QParams, WeightQParams};

/// Shape and hyper-parameters of a 2-D convolution over NHWC input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
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

impl Conv2dGeometry {
    /// Output height: `(H + 2p − d·(k−1) − 1) / s + 1` (floor), or 0 when the window does not fit.
    pub fn out_h(&self) -> usize {
        out_extent(
            self.in_h,
            self.kernel_h,
            self.stride_h,
            self.pad_h,
            self.dilation_h,
        )
    }

    /// Output width, as [`Conv2dGeometry::out_h`].
    pub fn out_w(&self) -> usize {
        out_extent(
            self.in_w,
            self.kernel_w,
            self.stride_w,
            self.pad_w,
            self.dilation_w,
        )
    }

    /// Input channels per group.
    pub fn in_c_per_group(&self) -> usize {
        self.in_c / self.groups
    }

    /// Output channels per group.
    pub fn out_c_per_group(&self) -> usize {
        self.out_c / self.groups
    }

    /// GEMM depth per group: `kh·kw·IC/G`.
    pub fn k_per_group(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c_per_group()
    }
}

/// `(input + 2·pad − dilation·(kernel−1) − 1) / stride + 1`, 0 when the window never fits.
pub fn out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> usize {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * pad;
    if padded < span {
        0
    } else {
        (padded - span) / stride + 1
    }
}

/// Whether PyTorch routes this conv to fbgemm's direct depthwise kernel (`FbgemmConv.cc`
/// `takeDepthWiseFastPath`): groups = IC, OC ∈ {G, 2G}, G % 8 = 0, square kernel 3/5/7,
/// equal strides of 1 or 2, dilation 1, padding (k−1)/2. That kernel pair-saturates on every
/// x86 ISA, VNNI included.
pub fn depthwise_kernel_applies(g: &Conv2dGeometry) -> bool {
    let k = g.kernel_h;
    g.groups == g.in_c
        && (g.out_c == g.groups || g.out_c == 2 * g.groups)
        && g.groups.is_multiple_of(8)
        && g.kernel_w == k
        && matches!(k, 3 | 5 | 7)
        && g.stride_h == g.stride_w
        && matches!(g.stride_h, 1 | 2)
        && g.dilation_h == 1
        && g.dilation_w == 1
        && g.pad_h == (k - 1) / 2
        && g.pad_w == (k - 1) / 2
}

/// Whether a conv pair-saturates in the given accumulation mode.
pub fn conv_saturates(g: &Conv2dGeometry, mode: Accumulation) -> bool {
    match mode {
        Accumulation::Exact => false,
        Accumulation::SaturateDepthwise => depthwise_kernel_applies(g),
        Accumulation::SaturateAll => true,
    }
}

/// Reorders OIHW weights of one group into GEMM rows `[OC/G][kh·kw·IC/G]` in (kh, kw, ic) order.
pub fn weight_rows_khwc(g: &Conv2dGeometry, w_oihw: &[i8], group: usize) -> Vec<i8> {
    let (icg, ocg) = (g.in_c_per_group(), g.out_c_per_group());
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let mut rows = Vec::with_capacity(ocg * g.k_per_group());
    for o in 0..ocg {
        let oc = group * ocg + o;
        for y in 0..kh {
            for x in 0..kw {
                for ic in 0..icg {
                    rows.push(w_oihw[((oc * icg + ic) * kh + y) * kw + x]);
                }
            }
        }
    }
    rows
}

/// One im2col row: the `K` inputs seen by output pixel `(b, oy, ox)` in group `group`,
/// padded taps holding `pad_value` (the input zero point).
pub fn im2col_row(
    g: &Conv2dGeometry,
    x: &[u8],
    pad_value: u8,
    b: usize,
    oy: usize,
    ox: usize,
    group: usize,
) -> Vec<u8> {
    let icg = g.in_c_per_group();
    let mut row = Vec::with_capacity(g.k_per_group());
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_h as isize;
            let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_w as isize;
            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
            for ic in 0..icg {
                row.push(if inside {
                    let (iy, ix) = (iy as usize, ix as usize);
                    x[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + group * icg + ic]
                } else {
                    pad_value
                });
            }
        }
    }
    row
}

/// Quantized conv2d, NHWC u8 in, OIHW i8 weights, NHWC u8 out `[N, OH, OW, OC]`.
///
/// `x_q.zero_point` must be in 0..=255 (it fills the padding).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_nhwc(
    g: &Conv2dGeometry,
    x: &[u8],
    x_q: QParams,
    w_oihw: &[i8],
    w_q: &WeightQParams,
    bias: Option<&[f32]>,
    out_q: QParams,
    relu: bool,
    mode: Accumulation,
) -> Vec<u8> {
    assert!(g.groups > 0 && g.in_c.is_multiple_of(g.groups) && g.out_c.is_multiple_of(g.groups));
    assert_eq!(x.len(), g.batch * g.in_h * g.in_w * g.in_c, "input length");
    assert_eq!(
        w_oihw.len(),
        g.out_c * g.in_c_per_group() * g.kernel_h * g.kernel_w
    );
    let pad_value = u8::try_from(x_q.zero_point).expect("input zero point must be in 0..=255");
    let (oh, ow) = (g.out_h(), g.out_w());
    let ocg = g.out_c_per_group();
    let saturate = conv_saturates(g, mode);
    let rq = RequantParams::new(g.out_c, x_q, w_q, bias, out_q, relu);
    let mut out = vec![0u8; g.batch * oh * ow * g.out_c];
    for group in 0..g.groups {
        let wrows = weight_rows_khwc(g, w_oihw, group);
        let k = g.k_per_group();
        for b in 0..g.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    let arow = im2col_row(g, x, pad_value, b, oy, ox, group);
                    let row_off: i32 = arow.iter().map(|&v| i32::from(v)).sum();
                    for o in 0..ocg {
                        let oc = group * ocg + o;
                        let wrow = &wrows[o * k..(o + 1) * k];
                        let acc = dot_u8s8(&arow, wrow, saturate);
                        let wzp = w_q.zero_point(oc);
                        let col_off = wrow
                            .iter()
                            .map(|&v| i32::from(v))
                            .sum::<i32>()
                            .wrapping_sub(wzp.wrapping_mul(k as i32));
                        let raw = zero_point_correction(acc, x_q.zero_point, col_off, row_off, wzp);
                        out[((b * oh + oy) * ow + ox) * g.out_c + oc] = rq.apply(raw, oc);
                    }
                }
            }
        }
    }
    out
}

/// Quantized linear: `x` is `[m, k]` u8, `w` is `[n, k]` i8 (PyTorch layout), out `[m, n]` u8.
/// Pair-saturates only in [`Accumulation::SaturateAll`].
#[allow(clippy::too_many_arguments)]
pub fn linear(
    m: usize,
    k: usize,
    n: usize,
    x: &[u8],
    x_q: QParams,
    w: &[i8],
    w_q: &WeightQParams,
    bias: Option<&[f32]>,
    out_q: QParams,
    relu: bool,
    mode: Accumulation,
) -> Vec<u8> {
    let g = Conv2dGeometry {
        batch: m,
        in_h: 1,
        in_w: 1,
        in_c: k,
        out_c: n,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_w: 0,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    // A 1×1 conv over a 1×1 image is exactly a linear layer; never the depthwise kernel.
    let mode = if mode == Accumulation::SaturateAll {
        Accumulation::SaturateAll
    } else {
        Accumulation::Exact
    };
    conv2d_nhwc(&g, x, x_q, w, w_q, bias, out_q, relu, mode)
}
