//! Property tests of `Conv2d` (GEMM per group, 1×1 fast paths, direct depthwise kernel, the
//! residual `run_add`) against `qkernels_ref::conv2d_nhwc` / `qkernels_ref::add`, tolerance 0,
//! on every supported ISA and in all three accumulation modes. Fixed seeds.

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions, uses_depthwise_kernel};
use qkernels::{Accumulation, Isa, QParams, WeightQParams, reference as r};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MODES: [Accumulation; 3] = [
    Accumulation::Exact,
    Accumulation::SaturateDepthwise,
    Accumulation::SaturateAll,
];

fn isas() -> Vec<Isa> {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    Isa::supported()
}

struct Case {
    p: Conv2dParams,
    batch: usize,
    h: usize,
    w: usize,
    x: Vec<u8>,
    xq: QParams,
    wts: Vec<i8>,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
    outq: QParams,
    relu: bool,
}

fn scale(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    10f64.powf(rng.gen_range(lo..hi))
}

/// Inputs and weights; sometimes pushed to the extremes so that pair sums saturate.
fn fill_case(rng: &mut StdRng, p: Conv2dParams, batch: usize, h: usize, w: usize) -> Case {
    let extreme = rng.gen_bool(0.25);
    let n_x = batch * h * w * p.in_channels;
    let x: Vec<u8> = (0..n_x)
        .map(|_| {
            if extreme {
                rng.gen_range(230..=255)
            } else {
                rng.r#gen()
            }
        })
        .collect();
    let n_w = p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
    let sign: i8 = if rng.r#gen() { 1 } else { -1 };
    let wts: Vec<i8> = (0..n_w)
        .map(|_| {
            if extreme {
                sign.saturating_mul(rng.gen_range(100..=127))
            } else {
                rng.r#gen()
            }
        })
        .collect();
    let wq = if rng.r#gen() {
        WeightQParams::per_tensor(scale(rng, -3.5, -1.5), rng.gen_range(-128..=127))
    } else {
        let oc = p.out_channels;
        let zps = if rng.r#gen() {
            vec![0; oc]
        } else {
            (0..oc).map(|_| rng.gen_range(-128..=127)).collect()
        };
        WeightQParams::per_channel((0..oc).map(|_| scale(rng, -3.5, -1.5)).collect(), zps)
    };
    let bias = rng.gen_bool(0.6).then(|| {
        (0..p.out_channels)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect()
    });
    let xq = QParams::new(scale(rng, -2.5, -0.5), rng.gen_range(0..=255));
    let outq = QParams::new(scale(rng, -2.0, 0.5), rng.gen_range(0..=255));
    Case {
        p,
        batch,
        h,
        w,
        x,
        xq,
        wts,
        wq,
        bias,
        outq,
        relu: rng.r#gen(),
    }
}

fn random_params(rng: &mut StdRng) -> Conv2dParams {
    let kh = rng.gen_range(1..=7);
    let kw = if rng.gen_bool(0.7) {
        kh
    } else {
        rng.gen_range(1..=7)
    };
    let (ic, oc, groups) = match rng.gen_range(0..4) {
        0 => {
            // depthwise, channel multiplier 1 or 2
            let c = rng.gen_range(2..=40);
            (c, c * rng.gen_range(1..=2), c)
        }
        1 => {
            let g = rng.gen_range(2..=4);
            (g * rng.gen_range(1..=5), g * rng.gen_range(1..=5), g)
        }
        _ => (rng.gen_range(1..=13), rng.gen_range(1..=37), 1),
    };
    Conv2dParams {
        in_channels: ic,
        out_channels: oc,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: rng.gen_range(1..=3),
        stride_w: rng.gen_range(1..=3),
        pad_h: rng.gen_range(0..=3),
        pad_w: rng.gen_range(0..=3),
        dilation_h: rng.gen_range(1..=2),
        dilation_w: rng.gen_range(1..=2),
        groups,
    }
}

fn reference(c: &Case, mode: Accumulation) -> Vec<u8> {
    let geo = c.p.geometry(c.batch, c.h, c.w);
    r::conv2d_nhwc(
        &geo,
        &c.x,
        c.xq,
        &c.wts,
        &c.wq,
        c.bias.as_deref(),
        c.outq,
        c.relu,
        mode,
    )
}

fn check(c: &Case, isas: &[Isa], what: &str) {
    let (oh, ow) = c.p.output_size(c.h, c.w).unwrap();
    let n_out = c.batch * oh * ow * c.p.out_channels;
    for mode in MODES {
        let want = reference(c, mode);
        for &isa in isas {
            let opts = ConvOptions {
                isa,
                accumulation: mode,
            };
            let conv = Conv2d::with_options(c.p, &c.wts, &c.wq, c.bias.as_deref(), &opts).unwrap();
            // One spare byte: exactly n_out bytes are written.
            let mut y = vec![0xA5u8; n_out + 1];
            conv.run(&c.x, c.batch, c.h, c.w, c.xq, c.outq, c.relu, &mut y)
                .unwrap();
            assert_eq!(
                &y[..n_out],
                &want[..],
                "{what}: {:?} batch {} {}x{} mode {mode:?} isa {isa} wq {:?} relu {} bias {}",
                c.p,
                c.batch,
                c.h,
                c.w,
                c.wq.per_channel,
                c.relu,
                c.bias.is_some()
            );
            assert_eq!(y[n_out], 0xA5, "{what}: wrote past the output");
        }
    }
}

#[test]
fn random_geometries_match_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0001);
    let mut done = 0;
    let mut depthwise = 0;
    while done < 260 {
        let p = random_params(&mut rng);
        let batch = rng.gen_range(1..=3);
        let (h, w) = (rng.gen_range(1..=11), rng.gen_range(1..=11));
        if p.output_size(h, w).is_err() {
            continue;
        }
        if uses_depthwise_kernel(&p) {
            depthwise += 1;
        }
        let c = fill_case(&mut rng, p, batch, h, w);
        check(&c, &isas, "random");
        done += 1;
    }
    assert!(depthwise > 40, "only {depthwise} depthwise cases");
}

#[test]
fn tiny_images_where_the_kernel_sees_mostly_padding() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0002);
    for k in [3, 5, 7] {
        for (ic, oc, groups) in [(3, 5, 1), (8, 8, 8), (8, 16, 8), (6, 4, 2)] {
            let pad = k / 2;
            let p = Conv2dParams {
                groups,
                ..Conv2dParams::square(ic, oc, k, 1, pad)
            };
            for (h, w) in [(1, 1), (1, 2), (2, 1)] {
                let c = fill_case(&mut rng, p, 2, h, w);
                check(&c, &isas, "tiny");
            }
        }
    }
}

#[test]
fn fbgemm_depthwise_shapes_saturate_like_pytorch() {
    // Shapes fbgemm's depthwise kernel takes (G % 8 == 0, k ∈ {3,5,7}, stride 1/2, pad (k−1)/2):
    // in SaturateDepthwise mode they pair-saturate. Extreme inputs make saturation visible;
    // the test also checks it *is* visible, so a kernel that ignored the mode would fail.
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0003);
    let mut saturation_visible = 0;
    for k in [3, 5, 7] {
        for stride in [1, 2] {
            for (c, mult) in [(8, 1), (16, 2), (24, 1), (40, 2)] {
                let p = Conv2dParams {
                    groups: c,
                    ..Conv2dParams::square(c, c * mult, k, stride, (k - 1) / 2)
                };
                let mut case = fill_case(&mut rng, p, 1, 9, 10);
                case.x
                    .iter_mut()
                    .for_each(|v| *v = rng.gen_range(240..=255));
                case.wts
                    .iter_mut()
                    .for_each(|v| *v = rng.gen_range(-128..=-120));
                check(&case, &isas, "fbgemm depthwise");
                if reference(&case, Accumulation::SaturateDepthwise)
                    != reference(&case, Accumulation::Exact)
                {
                    saturation_visible += 1;
                }
            }
        }
    }
    assert!(
        saturation_visible > 10,
        "saturation visible in {saturation_visible} cases only"
    );
}

#[test]
fn resnet_like_layers_match_reference() {
    // Stem (7×7/2, IC 3, K = 147), 3×3 stride 1 and 2, 1×1 stride-2 downsample, small spatial.
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0004);
    let layers = [
        (Conv2dParams::square(3, 16, 7, 2, 3), 23),
        (Conv2dParams::square(16, 16, 3, 1, 1), 9),
        (Conv2dParams::square(16, 24, 3, 2, 1), 9),
        (Conv2dParams::square(16, 24, 1, 2, 0), 9),
        (Conv2dParams::square(16, 24, 1, 1, 0), 5),
    ];
    for (p, hw) in layers {
        let c = fill_case(&mut rng, p, 2, hw, hw);
        check(&c, &isas, "resnet-like");
    }
}

/// The RGB stem (7×7/2, IC 3 → 64, K = 147: interior im2col rows are copied as stretches of
/// whole 21-byte runs, border rows tap by tap) against the reference on every ISA: batch 2,
/// odd and non-square sizes (stretches ending at the right border and at the end of the input
/// buffer), images smaller than the kernel, other paddings and strides, and the full 224×224.
#[test]
fn stem_shapes_match_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0007);
    let stem = Conv2dParams::square(3, 64, 7, 2, 3);
    let cases = [
        (stem, 2, 37, 41),
        (stem, 2, 30, 31),
        (stem, 1, 7, 7),
        (stem, 2, 3, 5),
        (stem, 1, 224, 224),
        (Conv2dParams::square(3, 64, 7, 2, 0), 2, 29, 33),
        (Conv2dParams::square(3, 64, 7, 1, 2), 1, 19, 17),
        (Conv2dParams::square(3, 20, 7, 3, 1), 2, 26, 25),
        (Conv2dParams::square(3, 8, 5, 2, 2), 2, 11, 64),
    ];
    for (p, batch, h, w) in cases {
        let c = fill_case(&mut rng, p, batch, h, w);
        check(&c, &isas, "stem");
    }
}

#[test]
fn run_add_equals_conv_then_reference_add() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0005);
    let mut done = 0;
    while done < 60 {
        let p = random_params(&mut rng);
        let (h, w) = (rng.gen_range(1..=10), rng.gen_range(1..=10));
        let batch = rng.gen_range(1..=2);
        let Ok((oh, ow)) = p.output_size(h, w) else {
            continue;
        };
        let c = fill_case(&mut rng, p, batch, h, w);
        let n_out = batch * oh * ow * p.out_channels;
        let skip: Vec<u8> = (0..n_out).map(|_| rng.r#gen()).collect();
        let skip_q = QParams::new(scale(&mut rng, -2.0, 0.0), rng.gen_range(0..=255));
        let add_q = QParams::new(scale(&mut rng, -2.0, 0.0), rng.gen_range(0..=255));
        let relu = rng.r#gen();
        for mode in MODES {
            let conv_ref = r::conv2d_nhwc(
                &p.geometry(batch, h, w),
                &c.x,
                c.xq,
                &c.wts,
                &c.wq,
                c.bias.as_deref(),
                c.outq,
                false,
                mode,
            );
            let want = r::add(&conv_ref, c.outq, &skip, skip_q, add_q, relu);
            for &isa in &isas {
                let opts = ConvOptions {
                    isa,
                    accumulation: mode,
                };
                let conv =
                    Conv2d::with_options(p, &c.wts, &c.wq, c.bias.as_deref(), &opts).unwrap();
                let mut y = vec![0u8; n_out];
                conv.run_add(
                    &c.x, batch, h, w, c.xq, c.outq, &skip, skip_q, add_q, relu, &mut y,
                )
                .unwrap();
                assert_eq!(y, want, "run_add {p:?} mode {mode:?} isa {isa}");
            }
        }
        done += 1;
    }
}

#[test]
fn im2col_fill_matches_reference_rows_for_any_k_range() {
    // The A source the GEMM driver reads: whole rows (fast path) and arbitrary K sub-ranges.
    use qkernels::conv::Im2col;
    use qkernels::gemm::ASource;
    let mut rng = StdRng::seed_from_u64(0xc0de_0006);
    let mut done = 0;
    while done < 200 {
        let mut p = random_params(&mut rng);
        if uses_depthwise_kernel(&p) && rng.r#gen() {
            p.groups = 1;
        }
        let batch = rng.gen_range(1..=2);
        let (h, w) = (rng.gen_range(1..=9), rng.gen_range(1..=9));
        let Ok((oh, ow)) = p.output_size(h, w) else {
            continue;
        };
        let geo = p.geometry(batch, h, w);
        let x: Vec<u8> = (0..batch * h * w * p.in_channels)
            .map(|_| rng.r#gen())
            .collect();
        let pad: u8 = rng.r#gen();
        let group = rng.gen_range(0..p.groups);
        let src = Im2col {
            geo,
            x: &x,
            pad,
            group,
            oh,
            ow,
            isa: {
                let isas = qkernels::Isa::supported();
                isas[rng.gen_range(0..isas.len())]
            },
        };
        let (m, k) = (src.rows(), src.depth());
        let row0 = rng.gen_range(0..m);
        let rows = rng.gen_range(1..=(m - row0).min(9));
        let (k0, kc) = if rng.r#gen() {
            (0, k)
        } else {
            let k0 = rng.gen_range(0..k);
            (k0, rng.gen_range(1..=k - k0))
        };
        let ld = kc + rng.gen_range(0..3);
        let mut dst = vec![0x5Au8; (rows - 1) * ld + kc];
        src.fill(row0, rows, k0, kc, &mut dst, ld);
        for i in 0..rows {
            let r = row0 + i;
            let (b, oy, ox) = (r / (oh * ow), r % (oh * ow) / ow, r % ow);
            let want = r::conv::im2col_row(&geo, &x, pad, b, oy, ox, group);
            assert_eq!(
                &dst[i * ld..i * ld + kc],
                &want[k0..k0 + kc],
                "{p:?} row {r} k {k0}+{kc}"
            );
        }
        done += 1;
    }
}

/// The residual add fused into the GEMM epilogue against conv-then-add, on shapes where
/// PyTorch's formula rule matters: output lengths that are not multiples of 64 (the last
/// `n_out % 64` elements by *flat* NHWC index take the scalar formula, and that tail starts in
/// the middle of a row and of a microkernel tile), odd channel counts (partial tiles), batch > 1,
/// grouped convs, the 1×1 direct path, GEMV-sized outputs, 1 and 3 threads. Uses qparams where
/// the two formulas disagree on 2.8 % of the pairs as well as random ones, and compares against
/// both the reference and the unfused API (`run` + `add_u8_with_isa`).
#[test]
fn fused_run_add_matches_unfused_conv_then_add_on_tail_shapes() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0xc0de_0007);
    let pools: Vec<rayon::ThreadPool> = [1, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("rayon pool")
        })
        .collect();
    // (params, batch, h, w)
    let shapes = [
        (Conv2dParams::square(16, 37, 3, 1, 1), 2, 9, 7),
        (Conv2dParams::square(8, 65, 1, 1, 0), 3, 5, 5),
        (Conv2dParams::square(24, 64, 3, 1, 1), 2, 11, 13),
        (Conv2dParams::square(13, 70, 3, 2, 1), 1, 15, 15),
        (Conv2dParams::square(32, 127, 1, 2, 0), 2, 7, 9),
        (Conv2dParams::square(64, 129, 3, 1, 1), 1, 3, 5),
        (Conv2dParams::square(20, 7, 1, 1, 0), 1, 1, 1),
        (
            Conv2dParams {
                groups: 2,
                ..Conv2dParams::square(12, 18, 3, 1, 1)
            },
            2,
            6,
            7,
        ),
    ];
    // `so = 2·sa`: PyTorch's vector and scalar formulas disagree on 2.8 % of the pairs
    // (docs/semantics.md, tie2-summary).
    let tie2 = (
        QParams::new(0.009925744496285915, 75),
        QParams::new(0.009925744496285915, 61),
        QParams::new(2.0 * 0.009925744496285915, 56),
    );
    let mut tail_sensitive = 0;
    for (p, batch, h, w) in shapes {
        for variant in 0..3 {
            let mut c = fill_case(&mut rng, p, batch, h, w);
            let (oh, ow) = p.output_size(h, w).unwrap();
            let n_out = batch * oh * ow * p.out_channels;
            let skip: Vec<u8> = (0..n_out).map(|_| rng.r#gen()).collect();
            let (skip_q, add_q) = if variant == 0 {
                c.outq = tie2.0;
                (tie2.1, tie2.2)
            } else {
                (
                    QParams::new(scale(&mut rng, -2.0, 0.0), rng.gen_range(0..=255)),
                    QParams::new(scale(&mut rng, -2.0, 0.0), rng.gen_range(0..=255)),
                )
            };
            let relu = variant != 2;
            let mode = Accumulation::Exact;
            let conv_ref = r::conv2d_nhwc(
                &p.geometry(batch, h, w),
                &c.x,
                c.xq,
                &c.wts,
                &c.wq,
                c.bias.as_deref(),
                c.outq,
                false,
                mode,
            );
            let want = r::add(&conv_ref, c.outq, &skip, skip_q, add_q, relu);
            // Does the rule matter here (would the vector formula on the tail change a byte)?
            let tail = n_out / 64 * 64;
            if (tail..n_out).any(|i| {
                r::ops::add_element_vector(conv_ref[i], c.outq, skip[i], skip_q, add_q, relu)
                    != want[i]
            }) {
                tail_sensitive += 1;
            }
            for &isa in &isas {
                let opts = ConvOptions {
                    isa,
                    accumulation: mode,
                };
                let conv =
                    Conv2d::with_options(p, &c.wts, &c.wq, c.bias.as_deref(), &opts).unwrap();
                for pool in &pools {
                    let t = pool.current_num_threads();
                    let (fused, unfused) = pool.install(|| {
                        let mut fused = vec![0u8; n_out];
                        conv.run_add(
                            &c.x, batch, h, w, c.xq, c.outq, &skip, skip_q, add_q, relu, &mut fused,
                        )
                        .unwrap();
                        let mut y = vec![0u8; n_out];
                        conv.run(&c.x, batch, h, w, c.xq, c.outq, false, &mut y)
                            .unwrap();
                        let mut unfused = vec![0u8; n_out];
                        qkernels::ops::add_u8_with_isa(
                            isa,
                            &y,
                            c.outq,
                            &skip,
                            skip_q,
                            add_q,
                            relu,
                            &mut unfused,
                        )
                        .unwrap();
                        (fused, unfused)
                    });
                    let what = format!("{p:?} batch {batch} variant {variant} isa {isa} t {t}");
                    assert_eq!(unfused, want, "unfused {what}");
                    assert_eq!(fused, want, "fused {what}");
                }
            }
        }
    }
    assert!(tail_sensitive > 0, "no case exercised the tail formula");
}
