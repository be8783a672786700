//! Element-wise and pooling ops at ResNet-18 sizes on every supported ISA, one thread,
//! `Throughput::Bytes` (bytes of input read).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkernels::{Isa, Pool2d, QParams, ops};
use std::hint::black_box;
use std::time::Duration;

fn bytes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn bench_ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("ops");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000));
    let q = QParams::new(0.05, 7);
    for isa in Isa::supported() {
        let isa_name = isa.name();
        // Residual add of layer1 (56×56×64) with ReLU.
        let n = 56 * 56 * 64;
        let (a, b) = (bytes(n), bytes(n + 1)[1..].to_vec());
        let mut y = vec![0u8; n];
        group.throughput(Throughput::Bytes(2 * n as u64));
        group.bench_function(BenchmarkId::new(isa_name, "add_relu_56x56x64"), |bn| {
            bn.iter(|| {
                ops::add_u8_with_isa(
                    isa,
                    black_box(&a),
                    q,
                    &b,
                    QParams::new(0.04, 9),
                    QParams::new(0.07, 0),
                    true,
                    &mut y,
                )
                .unwrap()
            })
        });
        // Stem max pool 3×3/2 pad 1 on 112×112×64.
        let x = bytes(112 * 112 * 64);
        let mut y = vec![0u8; 56 * 56 * 64];
        group.throughput(Throughput::Bytes(x.len() as u64));
        group.bench_function(
            BenchmarkId::new(isa_name, "maxpool_3x3s2_112x112x64"),
            |bn| {
                bn.iter(|| {
                    ops::max_pool2d_u8_with_isa(
                        isa,
                        black_box(&x),
                        1,
                        112,
                        112,
                        64,
                        &Pool2d::square(3, 2, 1),
                        &mut y,
                    )
                    .unwrap()
                })
            },
        );
        // Global average pool 7×7×512 → 1×1×512.
        let x = bytes(7 * 7 * 512);
        let mut y = vec![0u8; 512];
        group.throughput(Throughput::Bytes(x.len() as u64));
        group.bench_function(BenchmarkId::new(isa_name, "avgpool_global_7x7x512"), |bn| {
            bn.iter(|| {
                ops::adaptive_avg_pool2d_u8_with_isa(
                    isa,
                    black_box(&x),
                    1,
                    7,
                    7,
                    512,
                    1,
                    1,
                    q,
                    &mut y,
                )
                .unwrap()
            })
        });
        // Input quantize / dequantize of a 224×224×3 image.
        let n = 224 * 224 * 3;
        let xf: Vec<f32> = (0..n).map(|i| ((i % 511) as f32 - 255.0) * 0.01).collect();
        let mut yq = vec![0u8; n];
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_function(BenchmarkId::new(isa_name, "quantize_224x224x3"), |bn| {
            bn.iter(|| ops::quantize_u8_with_isa(isa, black_box(&xf), q, &mut yq).unwrap())
        });
        let mut yf = vec![0f32; n];
        group.throughput(Throughput::Bytes(n as u64));
        group.bench_function(BenchmarkId::new(isa_name, "dequantize_224x224x3"), |bn| {
            bn.iter(|| ops::dequantize_u8_with_isa(isa, black_box(&yq), q, &mut yf).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ops);
criterion_main!(benches);
