//! # qkernels-kernels
//!
//! Every `#[target_feature]` function and every intrinsic of qkernels lives in this crate:
//! GEMM microkernels and their packers, requantization epilogues, element-wise and pooling
//! kernels — one module per ISA, plus portable scalar versions of the same packed contracts.
//!
//! The crate is deliberately low-level: functions take raw panels and trust documented
//! contracts (checked with `debug_assert!` at the kernel boundary). Validation, blocking,
//! threading and the public API live in the `qkernels` crate.

pub mod depthwise;
pub mod gemm;
pub mod im2col;
pub mod isa;
pub mod ops;
pub mod requant;
pub mod winograd;

pub use isa::Isa;
