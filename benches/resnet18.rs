//! The full int8 ResNet-18 (random weights, `Model::synthetic`, 1000 classes), 224×224, batch 1
//! and 8, on every supported ISA, in a 1-thread and a 2-thread rayon pool.
//! `Throughput::Elements(batch)`: criterion's "elem/s" is images/s.
//!
//! Filter with e.g. `cargo bench --bench resnet18 -- avx512vnni/t1/`.
//!
//! Under `cargo test --all-targets` criterion runs each benchmark once (test mode: no `--bench`
//! argument); the input is then 32×32 so that the smoke run (test profile, scalar path included)
//! takes seconds, not minutes. The layer shapes and code paths are the same, only smaller.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkernels::Isa;
use qkernels::resnet18::{Model, ModelOptions, Workspace};
use std::hint::black_box;
use std::time::Duration;

/// Criterion measures only when the binary is run with `--bench` (`cargo bench`) and without
/// `--test` (`cargo bench -- --test` and `cargo test --benches` run each benchmark once).
fn measuring() -> bool {
    let has = |f: &str| std::env::args().any(|a| a == f);
    has("--bench") && !has("--test")
}

/// Deterministic normalised-pixel input in about ±2.
fn input(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn bench_resnet18(c: &mut Criterion) {
    let size = if measuring() { 224 } else { 32 };
    let mut g = c.benchmark_group("resnet18");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for isa in Isa::supported() {
        let model = Model::synthetic(1000, (size, size), 42, &ModelOptions::for_isa(isa))
            .expect("synthetic ResNet-18");
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("rayon pool");
            for batch in [1usize, 8] {
                let x = input(batch * 3 * size * size);
                let mut logits = vec![0f32; batch * model.num_classes()];
                let mut ws = Workspace::new();
                g.throughput(Throughput::Elements(batch as u64));
                let id = BenchmarkId::new(
                    format!("{}/t{threads}", isa.name()),
                    format!("b{batch}_{size}"),
                );
                // `install` per iteration (criterion's state is not `Send`): a few µs of
                // hand-off against milliseconds of network.
                g.bench_function(id, |b| {
                    b.iter(|| {
                        pool.install(|| {
                            model
                                .run_with(&mut ws, black_box(&x), batch, size, size, &mut logits)
                                .expect("ResNet-18 run")
                        });
                        black_box(&logits);
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_resnet18);
criterion_main!(benches);
