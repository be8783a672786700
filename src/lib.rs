//! # qkernels
//!
//! SIMD int8 kernels that compute **the same bytes as PyTorch's fbgemm backend**: u8 activations
//! × i8 weights → exact i32 accumulators → fused requantize + clamp, as GEMM, im2col
//! convolution and the other ops of an int8 ResNet-18, on x86-64 (AVX2, AVX-512 VNNI) and
//! aarch64 (NEON, dotprod, i8mm), with a portable scalar fallback.
//!
//! * [`gemm`] — packed GEMM engine ([`gemm::PackedWeights`], [`gemm::gemm_requant`]).
//! * [`conv`] — quantized conv2d over NHWC ([`conv::Conv2d`]).
//! * [`ops`] — quantize, dequantize, add / add_relu, max / adaptive-average pooling.
//! * [`resnet18`] — load and run a PyTorch-quantized ResNet-18 bit-exactly.
//! * [`ffi`] — the C ABI (`include/qkernels.h`, `docs/c-api.md`).
//! * [`reference`] — the scalar executable specification every kernel is tested against.
//!
//! The ISA is chosen once per process ([`active_isa`]; `QKERNELS_ISA=avx2` forces a lower one),
//! and every entry point also has a form taking an explicit [`Isa`].

pub mod conv;
pub mod error;
pub mod ffi;
pub mod gemm;
pub mod ops;
pub mod resnet18;
mod switch;
pub mod validate;
mod weight_arena;
pub mod winograd;

pub use error::{Error, Result};
pub use qkernels_kernels::isa::{self, Isa};
pub use qkernels_ref as reference;
pub use qkernels_ref::ops::Pool2d;
pub use qkernels_ref::{Accumulation, Conv2dGeometry, QParams, WeightQParams};

/// The ISA every call without an explicit one uses (chosen once; see [`isa::active`]).
pub fn active_isa() -> Isa {
    qkernels_kernels::isa::active()
}

/// `Err(Unsupported)` unless this CPU supports `isa`.
pub fn check_isa(isa: Isa) -> Result<()> {
    if isa.is_supported() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "ISA {isa} is not supported by this CPU"
        )))
    }
}

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
