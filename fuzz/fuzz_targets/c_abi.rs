//! libFuzzer entry point; the body lives in `qkernels_fuzz::c_abi` so the CI corpus replay
//! (`fuzz/tests/replay.rs`) runs exactly the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkernels_fuzz::c_abi::run(data));
