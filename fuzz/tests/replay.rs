//! CI replay of the fuzz targets without libFuzzer (stable toolchain): every file of the
//! committed seed corpus (`fuzz/corpus/<target>/`), then a fixed-seed batch of pseudo-random
//! inputs, through exactly the code the fuzzers run. A panic (an API/ref mismatch, or a panic
//! on hostile input) fails the test. `QKERNELS_FUZZ_REPLAY=<n>` changes the random batch size.

use qkernels_fuzz::input::Rng;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap();
            run(&data);
            files += 1;
        }
    }
    assert!(files > 0, "no seed corpus in {}", dir.display());
    let n: usize = std::env::var("QKERNELS_FUZZ_REPLAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::new(0x5EED_0000 ^ target.len() as u64);
    for _ in 0..n {
        let len = (rng.next_u64() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect();
        run(&data);
    }
}

#[test]
fn gemm_vs_ref() {
    replay("gemm_vs_ref", qkernels_fuzz::gemm_vs_ref::run);
}

#[test]
fn conv_vs_ref() {
    replay("conv_vs_ref", qkernels_fuzz::conv_vs_ref::run);
}

#[test]
fn ops_vs_ref() {
    replay("ops_vs_ref", qkernels_fuzz::ops_vs_ref::run);
}

#[test]
fn model_loader() {
    replay("model_loader", qkernels_fuzz::model_loader::run);
}

#[test]
fn c_abi() {
    replay("c_abi", qkernels_fuzz::c_abi::run);
}

/// The header-mode seed must reach the deep end: a model that loads and runs.
#[test]
fn model_loader_header_seed_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/model_loader/header_digits");
    let seed = std::fs::read(dir).unwrap();
    let file = qkernels_fuzz::model_loader::build_file(&seed[1..]).expect("JSON header");
    let model = qkernels::resnet18::Model::from_bytes(&file).expect("seed model loads");
    assert_eq!(model.num_classes(), 10);
}
