//! # qkernels-ref — the executable specification
//!
//! Plain, scalar, readable Rust that reproduces PyTorch's quantized CPU arithmetic (fbgemm
//! engine) **bit for bit**. Every SIMD kernel in `qkernels-kernels` and every public entry point
//! of `qkernels` is tested against these functions with `assert_eq!` (tolerance 0), and these
//! functions are themselves tested against golden vectors produced by PyTorch
//! (`tests/data/ops.*`).
//!
//! Nothing here is written for speed. Each function follows the order of floating-point
//! operations PyTorch/fbgemm uses, because the order *is* the result: `x * (1/s)` is not `x / s`,
//! `fma(a, b, c)` is not `a * b + c`, and `round_ties_even` is not `round`.
//!
//! Conventions: activations are `u8` (quint8) in NHWC order; weights are `i8` (qint8) in PyTorch's
//! layouts (conv OIHW, linear `[out, in]`); scales arrive as `f64` (as PyTorch stores them) and
//! are converted to `f32` exactly where PyTorch converts them. Integer arithmetic on accumulators
//! wraps like C `int32_t` on x86 (it never overflows for `K <= 65793`).
#![forbid(unsafe_code)]

pub mod conv;
pub mod gemm;
pub mod ops;
pub mod quant;
pub mod requant;

pub use conv::{Conv2dGeometry, conv2d_nhwc, depthwise_kernel_applies, linear};
pub use gemm::{Accumulation, col_offsets, matmul_u8s8s32_ref, row_offsets};
pub use ops::{Pool2d, adaptive_avg_pool2d_nhwc, add, add_threads, max_pool2d_nhwc};
pub use quant::{
    cvt_rne_saturating, dequantize_i8, dequantize_per_channel_i8, dequantize_u8, quantize_i8,
    quantize_per_channel_i8, quantize_u8,
};
pub use requant::{RequantParams, requantize_u8acc32_ref};

/// Affine quantization parameters of a tensor: `real = scale * (q - zero_point)`.
///
/// `scale` is `f64` because that is how PyTorch stores it; kernels use `scale as f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f64,
    pub zero_point: i32,
}

impl QParams {
    pub const fn new(scale: f64, zero_point: i32) -> QParams {
        QParams { scale, zero_point }
    }

    /// The scale as every kernel uses it: rounded once to `f32` (RNE).
    pub fn scale_f32(&self) -> f32 {
        self.scale as f32
    }
}

/// Quantization parameters of an `i8` weight tensor: one `(scale, zero_point)` for the whole
/// tensor (`per_channel == false`), or one per output channel.
///
/// The distinction matters beyond the count: PyTorch adds the float bias differently in the two
/// schemes (see [`requant`]), so a per-channel tensor with a single channel is not per-tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightQParams {
    pub per_channel: bool,
    pub scales: Vec<f64>,
    pub zero_points: Vec<i32>,
}

impl WeightQParams {
    /// Per-tensor weight quantization.
    pub fn per_tensor(scale: f64, zero_point: i32) -> WeightQParams {
        WeightQParams {
            per_channel: false,
            scales: vec![scale],
            zero_points: vec![zero_point],
        }
    }

    /// Per-output-channel weight quantization.
    pub fn per_channel(scales: Vec<f64>, zero_points: Vec<i32>) -> WeightQParams {
        WeightQParams {
            per_channel: true,
            scales,
            zero_points,
        }
    }

    /// Scale of output channel `n` (f64, as stored).
    pub fn scale(&self, n: usize) -> f64 {
        if self.per_channel {
            self.scales[n]
        } else {
            self.scales[0]
        }
    }

    /// Zero point of output channel `n`.
    pub fn zero_point(&self, n: usize) -> i32 {
        if self.per_channel {
            self.zero_points[n]
        } else {
            self.zero_points[0]
        }
    }
}

/// Reorders an NCHW tensor into NHWC (a plain transpose; used by tests and loaders).
pub fn nchw_to_nhwc<T: Copy>(x: &[T], n: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    assert_eq!(x.len(), n * c * h * w, "nchw_to_nhwc: length");
    let mut out = Vec::with_capacity(x.len());
    for b in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    out.push(x[((b * c + ch) * h + y) * w + xx]);
                }
            }
        }
    }
    out
}

/// Reorders an NHWC tensor into NCHW.
pub fn nhwc_to_nchw<T: Copy>(x: &[T], n: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    assert_eq!(x.len(), n * c * h * w, "nhwc_to_nchw: length");
    let mut out = Vec::with_capacity(x.len());
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out.push(x[((b * h + y) * w + xx) * c + ch]);
                }
            }
        }
    }
    out
}
