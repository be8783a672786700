//! Bodies of the qkernels fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`) and
//! the fixed-seed corpus replay that CI runs on stable (`tests/replay.rs`).
//!
//! Every target decodes its input with [`arbitrary::Unstructured`] into one of two kinds of
//! case:
//!
//! * **valid** (most inputs): small shapes, legal quantization parameters and data; the public
//!   API runs on *every ISA this CPU supports* and must reproduce `qkernels-ref` byte for byte
//!   (any difference panics, which libFuzzer reports as a crash);
//! * **hostile**: raw dimensions (tiny or near `usize::MAX`), arbitrary `f64` scales (NaN, ±inf,
//!   0, negative, subnormal), arbitrary zero points, arbitrary strides and buffer lengths, and
//!   every ISA including ones this CPU lacks; the API must return `Ok` or `Err`, never panic.
//!
//! Decoding never fails: when the input runs out, `Unstructured` yields zeros/minimums, so every
//! byte string is a case.

pub mod c_abi;
pub mod conv_vs_ref;
pub mod gemm_vs_ref;
pub mod input;
pub mod model_loader;
pub mod ops_vs_ref;
