//! Property tests of the element-wise and pooling ops against `qkernels-ref` (tolerance 0) on
//! every ISA this CPU supports: random lengths (SIMD tails), random and tie-heavy qparams,
//! extreme float inputs, random pooling geometries. Fixed seeds: failures reproduce.

use qkernels::{Isa, Pool2d, QParams, ops, reference as r};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn isas() -> Vec<Isa> {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    Isa::supported()
}

fn rand_scale(rng: &mut StdRng) -> f64 {
    10f64.powf(rng.gen_range(-4.0..1.5))
}

fn rand_u8(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

/// Floats around the quantization grid of `q`, with exact ties, extremes and non-finite values.
fn rand_floats(rng: &mut StdRng, n: usize, q: QParams) -> Vec<f32> {
    let s = q.scale as f32;
    (0..n)
        .map(|_| match rng.gen_range(0..20) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => f32::NAN,
            3 => rng.gen_range(-1e30f32..1e30),
            4 => {
                [2147483520.0f32, 2147483648.0, -2147483648.0, -2147483904.0][rng.gen_range(0..4)]
                    * s
            }
            5..=9 => (rng.gen_range(-300i32..300) as f32 + 0.5) * s, // ties
            _ => rng.gen_range(-300.0f32..300.0) * s,
        })
        .collect()
}

#[test]
fn quantize_matches_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    for case in 0..400 {
        let n = if case % 10 == 0 {
            rng.gen_range(300..2000)
        } else {
            rng.gen_range(0..300)
        };
        // Powers of two make `1/scale` exact, so the generated ties stay ties.
        let scale = if case % 2 == 0 {
            2f64.powi(rng.gen_range(-10..4))
        } else {
            rand_scale(&mut rng)
        };
        let qu = QParams::new(scale, rng.gen_range(0..=255));
        let qi = QParams::new(scale, rng.gen_range(-128..=127));
        let x = rand_floats(&mut rng, n, qu);
        let want_u = r::quantize_u8(&x, qu);
        let want_i = r::quantize_i8(&x, qi);
        for &isa in &isas {
            let mut y = vec![0u8; n];
            ops::quantize_u8_with_isa(isa, &x, qu, &mut y).unwrap();
            assert_eq!(
                y, want_u,
                "quantize_u8 case {case} isa {isa} n {n} q {qu:?}"
            );
            let mut y = vec![0i8; n];
            ops::quantize_i8_with_isa(isa, &x, qi, &mut y).unwrap();
            assert_eq!(
                y, want_i,
                "quantize_i8 case {case} isa {isa} n {n} q {qi:?}"
            );
        }
    }
}

/// The one-pass input step (quantize NCHW f32 → NHWC u8, optionally channel-padded with the
/// zero point) equals the reference quantize followed by the transpose, on every ISA: RGB
/// (`c = 3`, the SIMD paths, `cs` 3 and 4), other channel counts, pixel counts around the SIMD
/// widths (tails), batch > 1.
#[test]
fn quantize_nchw_to_nhwc_matches_quantize_then_transpose() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0011);
    for case in 0..300 {
        let c = [3, 3, 3, 1, 2, 4, 5][case % 7];
        let cs = c + [0, 0, 1, 2][rng.gen_range(0..4)];
        let hw = if case % 10 == 0 {
            rng.gen_range(200..3000)
        } else {
            rng.gen_range(1..70)
        };
        let batch = rng.gen_range(1..=3);
        let scale = if case % 2 == 0 {
            2f64.powi(rng.gen_range(-10..4))
        } else {
            rand_scale(&mut rng)
        };
        let q = QParams::new(scale, rng.gen_range(0..=255));
        let x = rand_floats(&mut rng, batch * c * hw, q);
        let flat = r::quantize_u8(&x, q);
        let mut want = vec![0xA5u8; batch * hw * cs + 7];
        for b in 0..batch {
            for p in 0..hw {
                for ch in 0..cs {
                    want[(b * hw + p) * cs + ch] = if ch < c {
                        flat[(b * c + ch) * hw + p]
                    } else {
                        q.zero_point as u8
                    };
                }
            }
        }
        for &isa in &isas {
            let mut y = vec![0xA5u8; batch * hw * cs + 7];
            ops::quantize_u8_nchw_to_nhwc_with_isa(isa, &x, batch, c, hw, cs, q, &mut y).unwrap();
            assert_eq!(
                y, want,
                "case {case} isa {isa} batch {batch} c {c} cs {cs} hw {hw} q {q:?}"
            );
        }
    }
    let mut y = vec![0u8; 12];
    let q = QParams::new(0.1, 3);
    assert!(
        ops::quantize_u8_nchw_to_nhwc_with_isa(Isa::Scalar, &[0.0; 6], 1, 3, 2, 2, q, &mut y)
            .is_err()
    );
    assert!(
        ops::quantize_u8_nchw_to_nhwc_with_isa(Isa::Scalar, &[0.0; 5], 1, 3, 2, 3, q, &mut y)
            .is_err()
    );
    assert!(
        ops::quantize_u8_nchw_to_nhwc_with_isa(Isa::Scalar, &[0.0; 6], 1, 3, 2, 4, q, &mut y[..7])
            .is_err()
    );
}

#[test]
fn dequantize_matches_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    for case in 0..300 {
        let n = rng.gen_range(0..300);
        let q = QParams::new(rand_scale(&mut rng), rng.gen_range(0..=255));
        let x = rand_u8(&mut rng, n);
        let want: Vec<u32> = r::dequantize_u8(&x, q)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for &isa in &isas {
            let mut y = vec![0f32; n];
            ops::dequantize_u8_with_isa(isa, &x, q, &mut y).unwrap();
            let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "dequantize case {case} isa {isa} n {n}");
        }
    }
}

#[test]
fn add_matches_reference_with_vector_tail_rule() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    for case in 0..600 {
        let n = match case % 8 {
            0 => rng.gen_range(300..5000),
            1 => 64 * rng.gen_range(0..6),
            _ => rng.gen_range(0..300),
        };
        let (qa, qb, qo) = if case % 3 == 0 {
            // Tie-heavy: equal input scales, output scale twice the input scale.
            let s = 2f64.powi(rng.gen_range(-8..2));
            (
                QParams::new(s, rng.gen_range(0..=255)),
                QParams::new(s, rng.gen_range(0..=255)),
                QParams::new(2.0 * s, rng.gen_range(0..=255)),
            )
        } else {
            (
                QParams::new(rand_scale(&mut rng), rng.gen_range(0..=255)),
                QParams::new(rand_scale(&mut rng), rng.gen_range(0..=255)),
                QParams::new(rand_scale(&mut rng), rng.gen_range(0..=255)),
            )
        };
        let a = rand_u8(&mut rng, n);
        let b = rand_u8(&mut rng, n);
        for relu in [false, true] {
            let want = r::add(&a, qa, &b, qb, qo, relu);
            for &isa in &isas {
                let mut y = vec![0u8; n];
                ops::add_u8_with_isa(isa, &a, qa, &b, qb, qo, relu, &mut y).unwrap();
                assert_eq!(y, want, "add case {case} isa {isa} n {n} relu {relu}");
            }
        }
    }
}

#[test]
fn add_vector_and_tail_formulas_are_not_interchangeable() {
    // The two formulas rarely disagree on random inputs, so build inputs where they do: a tie
    // `da / s_out = k + ½` (s_out = 2·s_a, q_a − zp_a odd) plus `db`, which is exactly 0 in the
    // scalar formula (q_b = zp_b) but the rounding error of `s_b·zp_b` in the FMA formula.
    // Such an element must match the reference both inside the vector region and in the tail.
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let mut differing = 0;
    for _ in 0..400 {
        let sa = 2f64.powi(rng.gen_range(-8..0));
        let qa_p = QParams::new(sa, rng.gen_range(0..=127));
        let qb_p = QParams::new(rand_scale(&mut rng), rng.gen_range(1..=255));
        let qo = QParams::new(2.0 * sa, rng.gen_range(0..=255));
        let qa = (qa_p.zero_point + 2 * rng.gen_range(0..60) + 1) as u8;
        let qb = qb_p.zero_point as u8;
        for relu in [false, true] {
            let v = r::ops::add_element_vector(qa, qa_p, qb, qb_p, qo, relu);
            let s = r::ops::add_element_scalar(qa, qa_p, qb, qb_p, qo, relu);
            if v == s {
                continue;
            }
            differing += 1;
            // 64 + 7 elements: index 10 is in the vector region, index 70 in the tail.
            let mut a = rand_u8(&mut rng, 71);
            let mut b = rand_u8(&mut rng, 71);
            (a[10], b[10], a[70], b[70]) = (qa, qb, qa, qb);
            let want = r::add(&a, qa_p, &b, qb_p, qo, relu);
            assert_eq!((want[10], want[70]), (v, s));
            for &isa in &isas {
                let mut y = vec![0u8; 71];
                ops::add_u8_with_isa(isa, &a, qa_p, &b, qb_p, qo, relu, &mut y).unwrap();
                assert_eq!(y, want, "isa {isa}");
            }
        }
    }
    assert!(
        differing > 20,
        "only {differing} differing cases constructed"
    );
}

#[test]
fn max_pool_matches_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let mut checked = 0;
    while checked < 300 {
        let k = (rng.gen_range(1..=4), rng.gen_range(1..=4));
        let p = Pool2d {
            kernel_h: k.0,
            kernel_w: k.1,
            stride_h: rng.gen_range(1..=3),
            stride_w: rng.gen_range(1..=3),
            pad_h: rng.gen_range(0..=k.0 / 2),
            pad_w: rng.gen_range(0..=k.1 / 2),
            dilation_h: rng.gen_range(1..=2),
            dilation_w: rng.gen_range(1..=2),
        };
        let (n, h, w) = (
            rng.gen_range(1..=2),
            rng.gen_range(1..=9),
            rng.gen_range(1..=9),
        );
        let c = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..=4),
            1 => rng.gen_range(60..=140),
            _ => rng.gen_range(1..=70),
        };
        let Ok((oh, ow)) = ops::pool_output_size(h, w, &p) else {
            continue;
        };
        let x = rand_u8(&mut rng, n * h * w * c);
        let (want, woh, wow) = r::max_pool2d_nhwc(&x, n, h, w, c, &p);
        assert_eq!((woh, wow), (oh, ow));
        for &isa in &isas {
            let mut y = vec![0u8; n * oh * ow * c];
            let got = ops::max_pool2d_u8_with_isa(isa, &x, n, h, w, c, &p, &mut y).unwrap();
            assert_eq!(got, (oh, ow));
            assert_eq!(y, want, "max_pool {p:?} n{n} h{h} w{w} c{c} isa {isa}");
        }
        checked += 1;
    }
}

/// The separable 3×3 stride-2 path (ResNet's stem pool, any row stride, pad 0 or 1): every
/// small image size (odd and even, 1×1 upwards, so both borders and the clamped last column),
/// channel counts around each ISA's register width, two images per call, and the ResNet size.
#[test]
fn max_pool_3x3_stride2_matches_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0007);
    let cs = [1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 127, 128, 130];
    let mut cases = vec![(1, 112, 112, 64, 2, 1), (2, 57, 31, 64, 2, 1)];
    for h in 1..=9 {
        for w in 1..=9 {
            let c = cs[rng.gen_range(0..cs.len())];
            cases.push((
                rng.gen_range(1..=2),
                h,
                w,
                c,
                rng.gen_range(1..=3),
                rng.gen_range(0..=1),
            ));
        }
    }
    let mut checked = 0;
    for (n, h, w, c, stride_h, pad) in cases {
        for pad_h in [pad, 1 - pad] {
            let p = Pool2d {
                kernel_h: 3,
                kernel_w: 3,
                stride_h,
                stride_w: 2,
                pad_h,
                pad_w: pad,
                dilation_h: 1,
                dilation_w: 1,
            };
            let Ok((oh, ow)) = ops::pool_output_size(h, w, &p) else {
                continue;
            };
            let x = rand_u8(&mut rng, n * h * w * c);
            let (want, woh, wow) = r::max_pool2d_nhwc(&x, n, h, w, c, &p);
            assert_eq!((woh, wow), (oh, ow));
            for &isa in &isas {
                // A poisoned tail past the output: the kernel must not write there.
                let mut y = vec![0xA5u8; n * oh * ow * c + 7];
                let got = ops::max_pool2d_u8_with_isa(isa, &x, n, h, w, c, &p, &mut y).unwrap();
                assert_eq!(got, (oh, ow));
                assert_eq!(
                    &y[..want.len()],
                    &want[..],
                    "{p:?} n{n} h{h} w{w} c{c} {isa}"
                );
                assert_eq!(
                    &y[want.len()..],
                    &[0xA5u8; 7],
                    "{p:?} n{n} h{h} w{w} c{c} {isa}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} cases");
}

#[test]
fn adaptive_avg_pool_matches_reference() {
    let isas = isas();
    let mut rng = StdRng::seed_from_u64(0x5eed_0006);
    for case in 0..300 {
        let (n, h, w) = (
            rng.gen_range(1..=2),
            rng.gen_range(1..=12),
            rng.gen_range(1..=12),
        );
        let c = rng.gen_range(1..=90);
        let (oh, ow) = if case % 4 == 0 {
            (1, 1) // global average pooling
        } else {
            (rng.gen_range(1..=h), rng.gen_range(1..=w))
        };
        let q = QParams::new(rand_scale(&mut rng), rng.gen_range(0..=255));
        let x = rand_u8(&mut rng, n * h * w * c);
        let want = r::adaptive_avg_pool2d_nhwc(&x, n, h, w, c, oh, ow, q.zero_point);
        for &isa in &isas {
            let mut y = vec![0u8; n * oh * ow * c];
            ops::adaptive_avg_pool2d_u8_with_isa(isa, &x, n, h, w, c, oh, ow, q, &mut y).unwrap();
            assert_eq!(
                y, want,
                "adaptive_avg case {case} n{n} h{h} w{w} c{c} -> {oh}x{ow} isa {isa}"
            );
        }
    }
}
