//! Determinism: GEMM and conv (dense, grouped, depthwise) give identical bytes for 1, 2, 3 and
//! 8 rayon threads, for any batch split (a batch of N equals its items run one by one), across
//! repeated runs, and when one packed handle (`PackedWeights`, `Conv2d`) is shared by several
//! `std::thread`s at once — on every ISA this CPU supports. The single-threaded result is also
//! checked against `qkernels-ref`, so "all equal" cannot mean "all equally wrong".

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::gemm::{self, GemmOptions, PackedWeights};
use qkernels::{Accumulation, Isa, QParams, WeightQParams, reference};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const THREADS: [usize; 4] = [1, 2, 3, 8];

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

fn data_u8(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

fn data_i8(rng: &mut StdRng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

fn per_channel(rng: &mut StdRng, n: usize) -> WeightQParams {
    WeightQParams::per_channel(
        (0..n).map(|_| rng.gen_range(0.002..0.02)).collect(),
        (0..n).map(|_| rng.gen_range(-3..=3)).collect(),
    )
}

// M = 333 rows is four M blocks of the driver (MC = 96), so 2+ threads really split the work.
const M: usize = 333;
const N: usize = 70;
const K: usize = 203;
const X_Q: QParams = QParams::new(0.05, 7);
const OUT_Q: QParams = QParams::new(0.9, 120);

struct GemmCase {
    a: Vec<u8>,
    w: Vec<i8>,
    wq: WeightQParams,
    bias: Vec<f32>,
}

fn gemm_case() -> GemmCase {
    let mut rng = StdRng::seed_from_u64(8);
    GemmCase {
        a: data_u8(&mut rng, M * K),
        w: data_i8(&mut rng, N * K),
        wq: per_channel(&mut rng, N),
        bias: (0..N).map(|_| rng.gen_range(-5.0..5.0)).collect(),
    }
}

fn run_linear(pw: &PackedWeights, a: &[u8], m: usize) -> Vec<u8> {
    let mut out = vec![0u8; m * pw.n()];
    gemm::linear(pw, a, m, X_Q, OUT_Q, false, &mut out).unwrap();
    out
}

#[test]
fn gemm_same_bytes_for_every_thread_count_split_and_repeat() {
    let c = gemm_case();
    let want = reference::linear(
        M,
        K,
        N,
        &c.a,
        X_Q,
        &c.w,
        &c.wq,
        Some(&c.bias),
        OUT_Q,
        false,
        Accumulation::Exact,
    );
    for isa in Isa::supported() {
        let pw = PackedWeights::with_options(
            &c.w,
            N,
            K,
            &c.wq,
            Some(&c.bias),
            &GemmOptions::for_isa(isa).unwrap(),
        )
        .unwrap();
        let first = in_pool(1, || run_linear(&pw, &c.a, M));
        assert_eq!(first, want, "{isa}: 1 thread vs reference");
        for t in THREADS {
            for rep in 0..3 {
                let got = in_pool(t, || run_linear(&pw, &c.a, M));
                assert_eq!(got, first, "{isa}: {t} threads, repeat {rep}");
            }
            // Raw i32 path too.
            let raw = |threads| {
                in_pool(threads, || {
                    let mut out = vec![0i32; M * N];
                    let a = gemm::Matrix::new(&c.a, M, K, K).unwrap();
                    gemm::gemm_i32(&pw, &a, X_Q.zero_point, &mut out, N).unwrap();
                    out
                })
            };
            assert_eq!(raw(t), raw(1), "{isa}: gemm_i32 with {t} threads");
        }
        // Batch split: rows in chunks of 1, 5, 96, 97 and 200 give the rows of the full run.
        for chunk in [1usize, 5, 96, 97, 200] {
            for t in [1, 3] {
                let mut got = Vec::with_capacity(M * N);
                for r0 in (0..M).step_by(chunk) {
                    let rows = chunk.min(M - r0);
                    got.extend(in_pool(t, || {
                        run_linear(&pw, &c.a[r0 * K..(r0 + rows) * K], rows)
                    }));
                }
                assert_eq!(
                    got, first,
                    "{isa}: split in chunks of {chunk} rows, {t} threads"
                );
            }
        }
    }
}

#[test]
fn shared_packed_weights_from_many_threads() {
    let c = gemm_case();
    let pw = Arc::new(PackedWeights::new(&c.w, N, K, &c.wq, Some(&c.bias)).unwrap());
    let a = Arc::new(c.a);
    let want = run_linear(&pw, &a, M);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (pw, a) = (Arc::clone(&pw), Arc::clone(&a));
            std::thread::spawn(move || {
                // Half the threads use the global pool, half a private one.
                (0..4)
                    .map(|_| {
                        if i % 2 == 0 {
                            run_linear(&pw, &a, M)
                        } else {
                            in_pool(2, || run_linear(&pw, &a, M))
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for got in h.join().unwrap() {
            assert_eq!(got, want);
        }
    }
}

struct ConvCase {
    name: &'static str,
    params: Conv2dParams,
    accumulation: Accumulation,
    batch: usize,
    h: usize,
    w: usize,
}

fn conv_cases() -> Vec<ConvCase> {
    let dense = Conv2dParams::square(16, 32, 3, 1, 1);
    let strided = Conv2dParams::square(8, 24, 3, 2, 1);
    let mut grouped = Conv2dParams::square(12, 18, 3, 1, 1);
    grouped.groups = 3;
    let mut depthwise = Conv2dParams::square(32, 32, 3, 1, 1);
    depthwise.groups = 32;
    let pointwise = Conv2dParams::square(24, 40, 1, 1, 0);
    vec![
        ConvCase {
            name: "dense 3x3",
            params: dense,
            accumulation: Accumulation::Exact,
            batch: 4,
            h: 11,
            w: 13,
        },
        ConvCase {
            name: "strided 3x3/2",
            params: strided,
            accumulation: Accumulation::SaturateAll,
            batch: 3,
            h: 17,
            w: 15,
        },
        ConvCase {
            name: "grouped",
            params: grouped,
            accumulation: Accumulation::Exact,
            batch: 3,
            h: 9,
            w: 10,
        },
        ConvCase {
            name: "depthwise (fbgemm saturating kernel)",
            params: depthwise,
            accumulation: Accumulation::SaturateDepthwise,
            batch: 4,
            h: 12,
            w: 12,
        },
        ConvCase {
            name: "pointwise 1x1 (direct A)",
            params: pointwise,
            accumulation: Accumulation::Exact,
            batch: 5,
            h: 8,
            w: 9,
        },
    ]
}

struct ConvData {
    x: Vec<u8>,
    w: Vec<i8>,
    wq: WeightQParams,
    bias: Vec<f32>,
}

fn conv_data(c: &ConvCase, seed: u64) -> ConvData {
    let p = &c.params;
    let mut rng = StdRng::seed_from_u64(seed);
    ConvData {
        x: data_u8(&mut rng, c.batch * c.h * c.w * p.in_channels),
        w: data_i8(
            &mut rng,
            p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w,
        ),
        wq: per_channel(&mut rng, p.out_channels),
        bias: (0..p.out_channels)
            .map(|_| rng.gen_range(-5.0..5.0))
            .collect(),
    }
}

fn run_conv(conv: &Conv2d, x: &[u8], batch: usize, h: usize, w: usize) -> Vec<u8> {
    let (oh, ow) = conv.output_size(h, w).unwrap();
    let mut out = vec![0u8; batch * oh * ow * conv.params().out_channels];
    conv.run(x, batch, h, w, X_Q, OUT_Q, true, &mut out)
        .unwrap();
    out
}

#[test]
fn conv_same_bytes_for_every_thread_count_split_and_repeat() {
    for (ci, c) in conv_cases().iter().enumerate() {
        let d = conv_data(c, 100 + ci as u64);
        let geo = c.params.geometry(c.batch, c.h, c.w);
        let want = reference::conv2d_nhwc(
            &geo,
            &d.x,
            X_Q,
            &d.w,
            &d.wq,
            Some(&d.bias),
            OUT_Q,
            true,
            c.accumulation,
        );
        let in_item = c.h * c.w * c.params.in_channels;
        for isa in Isa::supported() {
            let opts = ConvOptions {
                isa,
                accumulation: c.accumulation,
            };
            let conv = Conv2d::with_options(c.params, &d.w, &d.wq, Some(&d.bias), &opts).unwrap();
            let first = in_pool(1, || run_conv(&conv, &d.x, c.batch, c.h, c.w));
            assert_eq!(first, want, "{}: {isa} 1 thread vs reference", c.name);
            for t in THREADS {
                for rep in 0..2 {
                    let got = in_pool(t, || run_conv(&conv, &d.x, c.batch, c.h, c.w));
                    assert_eq!(got, first, "{}: {isa} {t} threads, repeat {rep}", c.name);
                }
            }
            // Every batch split: items one by one, and first item + the rest.
            for t in [1, 2, 8] {
                let mut one_by_one = Vec::new();
                for b in 0..c.batch {
                    let x = &d.x[b * in_item..(b + 1) * in_item];
                    one_by_one.extend(in_pool(t, || run_conv(&conv, x, 1, c.h, c.w)));
                }
                assert_eq!(
                    one_by_one, first,
                    "{}: {isa} item by item, {t} threads",
                    c.name
                );
                let mut halves = in_pool(t, || run_conv(&conv, &d.x[..in_item], 1, c.h, c.w));
                halves.extend(in_pool(t, || {
                    run_conv(&conv, &d.x[in_item..], c.batch - 1, c.h, c.w)
                }));
                assert_eq!(halves, first, "{}: {isa} 1 + rest, {t} threads", c.name);
            }
        }
    }
}

#[test]
fn shared_conv_from_many_threads() {
    for (ci, c) in conv_cases().iter().enumerate() {
        let d = conv_data(c, 200 + ci as u64);
        let opts = ConvOptions {
            isa: qkernels::active_isa(),
            accumulation: c.accumulation,
        };
        let conv =
            Arc::new(Conv2d::with_options(c.params, &d.w, &d.wq, Some(&d.bias), &opts).unwrap());
        let x = Arc::new(d.x);
        let want = run_conv(&conv, &x, c.batch, c.h, c.w);
        let (batch, h, w) = (c.batch, c.h, c.w);
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let (conv, x) = (Arc::clone(&conv), Arc::clone(&x));
                std::thread::spawn(move || {
                    (0..3)
                        .map(|_| {
                            if i % 2 == 0 {
                                run_conv(&conv, &x, batch, h, w)
                            } else {
                                in_pool(3, || run_conv(&conv, &x, batch, h, w))
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for hnd in handles {
            for got in hnd.join().unwrap() {
                assert_eq!(got, want, "{}: concurrent run", c.name);
            }
        }
    }
}

// ---------------------------------------------------------------- ResNet-18 runner

mod resnet18 {
    use super::{THREADS, in_pool};
    use qkernels::Isa;
    use qkernels::resnet18::{Activation, Model, ModelOptions, Workspace};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    const MODEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/digits_resnet18.safetensors"
    );
    // 3 images of 40×36: small enough to run many times, big enough that every layer's GEMM
    // is split across threads.
    const BATCH: usize = 3;
    const H: usize = 40;
    const W: usize = 36;

    fn input(model: &Model) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(18);
        (0..BATCH * model.input_channels() * H * W)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect()
    }

    fn traced(model: &Model, x: &[f32], batch: usize) -> Vec<Activation> {
        model.run_traced(x, batch, H, W).unwrap()
    }

    /// Every layer's output (not just the logits) for 1, 2, 3 and 8 threads, repeated, and the
    /// batch run item by item, on every supported ISA.
    #[test]
    fn runner_same_bytes_for_every_thread_count_and_batch_split() {
        let bytes = std::fs::read(MODEL).unwrap();
        for isa in Isa::supported() {
            let model = Model::from_bytes_with(&bytes, &ModelOptions::for_isa(isa)).unwrap();
            let x = input(&model);
            let first = in_pool(1, || traced(&model, &x, BATCH));
            for t in THREADS {
                for rep in 0..2 {
                    let got = in_pool(t, || traced(&model, &x, BATCH));
                    assert!(
                        got == first,
                        "{isa}: {t} threads, repeat {rep}: layers differ"
                    );
                }
            }
            let per_item = H * W * model.input_channels();
            let mut logits_all = vec![0u8; BATCH * model.num_classes()];
            model
                .run_quantized(&x, BATCH, H, W, &mut logits_all)
                .unwrap();
            for t in [1, 3] {
                let mut one_by_one = Vec::new();
                for b in 0..BATCH {
                    let mut l = vec![0u8; model.num_classes()];
                    in_pool(t, || {
                        model.run_quantized(&x[b * per_item..(b + 1) * per_item], 1, H, W, &mut l)
                    })
                    .unwrap();
                    one_by_one.extend(l);
                }
                assert_eq!(one_by_one, logits_all, "{isa}: item by item, {t} threads");
                // Every layer of item b equals the batch run's slice for item b.
                let b = BATCH - 1;
                let single = in_pool(t, || traced(&model, &x[b * per_item..], 1));
                for (s, f) in single.iter().zip(&first) {
                    let n = s.data.len();
                    assert_eq!(
                        s.data[..],
                        f.data[b * n..(b + 1) * n],
                        "{isa}: layer {}",
                        s.name
                    );
                }
            }
        }
    }

    /// One `Model` shared by several threads, each with its own workspace reused across runs.
    #[test]
    fn shared_model_from_many_threads() {
        let model = Arc::new(Model::load(MODEL).unwrap());
        let x = Arc::new(input(&model));
        let classes = model.num_classes();
        let mut want = vec![0u8; BATCH * classes];
        model.run_quantized(&x, BATCH, H, W, &mut want).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (model, x) = (Arc::clone(&model), Arc::clone(&x));
                std::thread::spawn(move || {
                    let mut ws = Workspace::new();
                    (0..3)
                        .map(|_| {
                            let mut l = vec![0u8; BATCH * classes];
                            let mut go =
                                || model.run_quantized_with(&mut ws, &x, BATCH, H, W, &mut l);
                            if i % 2 == 0 { go() } else { in_pool(2, go) }.unwrap();
                            l
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for got in h.join().unwrap() {
                assert_eq!(got, want);
            }
        }
    }
}
