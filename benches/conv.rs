//! Every distinct conv layer of ResNet-18 (224×224, batch 1) on every supported ISA, one
//! thread, `Throughput::Elements(MACs)` (so criterion prints MAC/s as "elem/s").
//!
//! Filter with e.g. `cargo bench --bench conv -- avx512vnni/`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::{Accumulation, Isa, QParams, WeightQParams};
use std::hint::black_box;
use std::time::Duration;

/// (name, params, input spatial size).
pub fn resnet18_layers() -> Vec<(&'static str, Conv2dParams, usize)> {
    vec![
        (
            "stem_7x7s2_3-64_224",
            Conv2dParams::square(3, 64, 7, 2, 3),
            224,
        ),
        ("3x3_64-64_56", Conv2dParams::square(64, 64, 3, 1, 1), 56),
        (
            "3x3s2_64-128_56",
            Conv2dParams::square(64, 128, 3, 2, 1),
            56,
        ),
        (
            "3x3_128-128_28",
            Conv2dParams::square(128, 128, 3, 1, 1),
            28,
        ),
        (
            "3x3s2_128-256_28",
            Conv2dParams::square(128, 256, 3, 2, 1),
            28,
        ),
        (
            "3x3_256-256_14",
            Conv2dParams::square(256, 256, 3, 1, 1),
            14,
        ),
        (
            "3x3s2_256-512_14",
            Conv2dParams::square(256, 512, 3, 2, 1),
            14,
        ),
        ("3x3_512-512_7", Conv2dParams::square(512, 512, 3, 1, 1), 7),
        (
            "1x1s2_64-128_56",
            Conv2dParams::square(64, 128, 1, 2, 0),
            56,
        ),
        (
            "1x1s2_128-256_28",
            Conv2dParams::square(128, 256, 1, 2, 0),
            28,
        ),
        (
            "1x1s2_256-512_14",
            Conv2dParams::square(256, 512, 1, 2, 0),
            14,
        ),
    ]
}

/// Depthwise layers (MobileNetV2-like, 3×3, channel multiplier 1; `G % 8 == 0`, so PyTorch
/// takes fbgemm's direct depthwise kernel too).
pub fn depthwise_layers() -> Vec<(&'static str, Conv2dParams, usize)> {
    let dw = |c: usize, s: usize| Conv2dParams {
        groups: c,
        ..Conv2dParams::square(c, c, 3, s, 1)
    };
    vec![
        ("dw3x3_32_112", dw(32, 1), 112),
        ("dw3x3s2_96_112", dw(96, 2), 112),
        ("dw3x3_144_56", dw(144, 1), 56),
        ("dw3x3_192_28", dw(192, 1), 28),
        ("dw3x3_576_14", dw(576, 1), 14),
    ]
}

/// Deterministic pseudo-random bytes (no RNG state shared between layers).
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect()
}

/// One benched layer: the conv packed for `isa` (deterministic weights, per-channel scales,
/// bias), its input and output buffers, and its MAC count.
struct Layer {
    conv: Conv2d,
    x: Vec<u8>,
    y: Vec<u8>,
    macs: f64,
}

fn layer(isa: Isa, p: Conv2dParams, hw: usize) -> Layer {
    let (oh, ow) = p.output_size(hw, hw).unwrap();
    let k = p.kernel_h * p.kernel_w * p.in_channels / p.groups;
    let w: Vec<i8> = bytes(p.out_channels * k, 2)
        .into_iter()
        .map(|v| (v as i8) / 2)
        .collect();
    let wq = WeightQParams::per_channel(
        (0..p.out_channels)
            .map(|i| 0.002 + 1e-5 * i as f64)
            .collect(),
        vec![0; p.out_channels],
    );
    let bias: Vec<f32> = (0..p.out_channels).map(|i| 0.01 * i as f32).collect();
    let opts = ConvOptions {
        isa,
        accumulation: Accumulation::Exact,
    };
    Layer {
        conv: Conv2d::with_options(p, &w, &wq, Some(&bias), &opts).unwrap(),
        x: bytes(hw * hw * p.in_channels, 1),
        y: vec![0u8; oh * ow * p.out_channels],
        macs: (oh * ow * p.out_channels * k) as f64,
    }
}

fn bench_conv(c: &mut Criterion) {
    // One thread, like the PyTorch side: with a one-thread global pool the drivers never hand
    // work to rayon (no cross-thread wake-up per call).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let mut group = c.benchmark_group("conv");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    for isa in Isa::supported() {
        for (name, p, hw) in resnet18_layers().into_iter().chain(depthwise_layers()) {
            let Layer {
                conv,
                x,
                mut y,
                macs,
            } = layer(isa, p, hw);
            let macs = macs as u64;
            let (xq, yq) = (QParams::new(0.02, 10), QParams::new(0.05, 3));
            group.throughput(Throughput::Elements(macs));
            group.bench_function(BenchmarkId::new(isa.name(), name), |b| {
                b.iter(|| {
                    conv.run(black_box(&x), 1, hw, hw, xq, yq, true, &mut y)
                        .unwrap()
                })
            });
            if isa == Isa::Avx512Vnni {
                // The im2col-packing path on the same layer (IGEMM switched off).
                qkernels::gemm::set_igemm_enabled(false);
                let id = BenchmarkId::new(format!("{}_im2col", isa.name()), name);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        conv.run(black_box(&x), 1, hw, hw, xq, yq, true, &mut y)
                            .unwrap()
                    })
                });
                qkernels::gemm::set_igemm_enabled(true);
            }
        }
    }
    group.finish();
}

/// The im2col A source alone (whole rows into an MR-row panel buffer, as the driver calls it).
fn bench_im2col(c: &mut Criterion) {
    use qkernels::conv::Im2col;
    use qkernels::gemm::ASource;
    let mut group = c.benchmark_group("im2col_fill");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000));
    for (name, p, hw) in resnet18_layers() {
        if p.kernel_h == 1 && p.stride_h == 1 {
            continue;
        }
        let (oh, ow) = p.output_size(hw, hw).unwrap();
        let x = bytes(hw * hw * p.in_channels, 1);
        let src = Im2col {
            geo: p.geometry(1, hw, hw),
            x: &x,
            pad: 10,
            group: 0,
            oh,
            ow,
            isa: qkernels::active_isa(),
        };
        let (m, k) = (src.rows(), src.depth());
        let mr = 8;
        let mut buf = vec![0u8; mr * k];
        group.throughput(Throughput::Bytes((m * k) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for r0 in (0..m).step_by(mr) {
                    src.fill(r0, mr.min(m - r0), 0, k, &mut buf, k);
                }
                black_box(&buf);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_im2col);

/// `QKERNELS_BENCH_PER_ITER=1 cargo bench --bench conv` (optionally `QKERNELS_BENCH_LAYER=<substring>`):
/// instead of criterion, time every call
/// individually (after a warm-up) and print the median and minimum per layer and ISA. On a
/// shared, loaded machine a single call usually fits in one scheduler time slice, so the
/// per-call median is far less disturbed than batch means; `tools/bench_torch_conv.py
/// --per-iter` measures PyTorch the same way.
fn per_iteration_report() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let isas: Vec<Isa> = Isa::supported()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    // Optional substring filter on the layer name, e.g. `QKERNELS_BENCH_LAYER=3x3_64`.
    let only = std::env::var("QKERNELS_BENCH_LAYER").unwrap_or_default();
    println!("layer,isa,median_ms,min_ms,gmacs_median");
    for isa in isas {
        for (name, p, hw) in resnet18_layers().into_iter().chain(depthwise_layers()) {
            if !name.contains(only.as_str()) {
                continue;
            }
            let Layer {
                conv,
                x,
                mut y,
                macs,
            } = layer(isa, p, hw);
            let (xq, yq) = (QParams::new(0.02, 10), QParams::new(0.05, 3));
            let mut run = || {
                conv.run(black_box(&x), 1, hw, hw, xq, yq, true, &mut y)
                    .unwrap()
            };
            // A/B in one interleaved run: the indirect (IGEMM) path and the im2col-packing path
            // alternate call by call (the latter labelled `<isa>_im2col`; identical on ISAs
            // without an IGEMM kernel, so only VNNI reports it).
            let variants: &[bool] = if isa == Isa::Avx512Vnni {
                &[true, false]
            } else {
                &[true]
            };
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_millis(300) {
                run();
            }
            let mut times = vec![Vec::new(); variants.len()];
            let t0 = std::time::Instant::now();
            while times[0].len() < 20 || t0.elapsed() < Duration::from_secs(1) {
                for (v, &on) in variants.iter().enumerate() {
                    qkernels::gemm::set_igemm_enabled(on);
                    let t = std::time::Instant::now();
                    run();
                    times[v].push(t.elapsed().as_secs_f64());
                }
            }
            qkernels::gemm::set_igemm_enabled(true);
            for (v, times) in times.iter_mut().enumerate() {
                times.sort_by(f64::total_cmp);
                let med = times[times.len() / 2];
                let suffix = if v == 0 { "" } else { "_im2col" };
                println!(
                    "{name},{}{suffix},{:.4},{:.4},{:.1}",
                    isa.name(),
                    med * 1e3,
                    times[0] * 1e3,
                    macs / med / 1e9
                );
            }
        }
    }
}

fn main() {
    if std::env::var_os("QKERNELS_BENCH_PER_ITER").is_some() {
        per_iteration_report();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
