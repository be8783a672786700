//! libFuzzer entry point; the body lives in `qkernels_fuzz::model_loader` so the CI corpus replay
//! (`fuzz/tests/replay.rs`) runs exactly the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkernels_fuzz::model_loader::run(data));
