//! libFuzzer entry point; the body lives in `qkernels_fuzz::ops_vs_ref` so the CI corpus replay
//! (`fuzz/tests/replay.rs`) runs exactly the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkernels_fuzz::ops_vs_ref::run(data));
