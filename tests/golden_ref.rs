//! Every golden op case (produced by PyTorch 2.15, fbgemm engine) against the scalar reference
//! `qkernels-ref`, byte for byte. Saturation cases are checked in every accumulation mode.

mod common;

use common::*;
use qkernels_ref as r;
use qkernels_ref::{Accumulation, Pool2d};

/// Runs one golden case through the reference in `mode`; returns (actual, expected) bytes.
fn run_case(g: &Golden, case: &serde_json::Value, mode: Accumulation) -> (Vec<u8>, Vec<u8>) {
    let p = &case["params"];
    let op = case["op"].as_str().expect("op");
    match op {
        "quantize" => {
            let x = g.tensor(case, "x").f32();
            let q = qparams(p);
            match p["dtype"].as_str().unwrap() {
                "quint8" => (r::quantize_u8(&x, q), g.tensor(case, "y").u8()),
                "qint8" => (
                    bytemuck_i8(r::quantize_i8(&x, q)),
                    bytemuck_i8(g.tensor(case, "y").i8()),
                ),
                d => panic!("{}: unknown dtype {d}", name(case)),
            }
        }
        "dequantize" => {
            let x = g.tensor(case, "x").u8();
            assert_eq!(p["dtype"].as_str(), Some("quint8"));
            let y = r::dequantize_u8(&x, qparams(p));
            (f32_bytes(&y), f32_bytes(&g.tensor(case, "y").f32()))
        }
        "add" => {
            let a = g.tensor(case, "a");
            let b = g.tensor(case, "b");
            assert_eq!(a.shape, b.shape);
            let y = r::add(
                &a.u8(),
                qparams(&p["a"]),
                &b.u8(),
                qparams(&p["b"]),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
            );
            (y, g.tensor(case, "y").u8())
        }
        "conv2d" => {
            let x = g.tensor(case, "x");
            let w = g.tensor(case, "w");
            let geo = conv_geometry(&x, &w, p);
            let xs = &x.shape;
            let x_nhwc = r::nchw_to_nhwc(&x.u8(), xs[0], xs[1], xs[2], xs[3]);
            let bias = Golden::has_tensor(case, "bias").then(|| g.tensor(case, "bias").f32());
            let y = r::conv2d_nhwc(
                &geo,
                &x_nhwc,
                qparams(&p["input"]),
                &w.i8(),
                &weight_qparams(&p["weight"]),
                bias.as_deref(),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
                mode,
            );
            let expected = expected_conv_output(g, case, mode);
            (
                r::nhwc_to_nchw(&y, geo.batch, geo.out_c, geo.out_h(), geo.out_w()),
                expected,
            )
        }
        "linear" => {
            let x = g.tensor(case, "x");
            let w = g.tensor(case, "w");
            let (m, k) = (x.shape[0], x.shape[1]);
            let n = w.shape[0];
            let bias = Golden::has_tensor(case, "bias").then(|| g.tensor(case, "bias").f32());
            let y = r::linear(
                m,
                k,
                n,
                &x.u8(),
                qparams(&p["input"]),
                &w.i8(),
                &weight_qparams(&p["weight"]),
                bias.as_deref(),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
                mode,
            );
            (y, g.tensor(case, "y").u8())
        }
        "max_pool2d" => {
            assert_eq!(p["layout"].as_str(), Some("nhwc"));
            let x = g.tensor(case, "x");
            let s = &x.shape;
            let (k, st, pad) = (pair(&p["kernel"]), pair(&p["stride"]), pair(&p["padding"]));
            let pool = Pool2d {
                kernel_h: k.0,
                kernel_w: k.1,
                stride_h: st.0,
                stride_w: st.1,
                pad_h: pad.0,
                pad_w: pad.1,
                dilation_h: 1,
                dilation_w: 1,
            };
            let xn = r::nchw_to_nhwc(&x.u8(), s[0], s[1], s[2], s[3]);
            let (y, oh, ow) = r::max_pool2d_nhwc(&xn, s[0], s[2], s[3], s[1], &pool);
            (
                r::nhwc_to_nchw(&y, s[0], s[1], oh, ow),
                g.tensor(case, "y").u8(),
            )
        }
        "adaptive_avg_pool2d" => {
            assert_eq!(p["layout"].as_str(), Some("nhwc"));
            let x = g.tensor(case, "x");
            let s = &x.shape;
            let (oh, ow) = pair(&p["output_size"]);
            let xn = r::nchw_to_nhwc(&x.u8(), s[0], s[1], s[2], s[3]);
            let zp = qparams(&p["input"]).zero_point;
            let y = r::adaptive_avg_pool2d_nhwc(&xn, s[0], s[2], s[3], s[1], oh, ow, zp);
            (
                r::nhwc_to_nchw(&y, s[0], s[1], oh, ow),
                g.tensor(case, "y").u8(),
            )
        }
        other => panic!("{}: unknown golden op {other:?}", name(case)),
    }
}

/// The expected conv output in `mode`: cases flagged `fbgemm_i16_saturation` hold PyTorch's
/// saturated result in `y` and the exact one in `y_exact`.
fn expected_conv_output(g: &Golden, case: &serde_json::Value, mode: Accumulation) -> Vec<u8> {
    let sat = case["params"]["fbgemm_i16_saturation"]
        .as_bool()
        .unwrap_or(false);
    if sat && mode == Accumulation::Exact {
        g.tensor(case, "y_exact").u8()
    } else {
        g.tensor(case, "y").u8()
    }
}

fn bytemuck_i8(v: Vec<i8>) -> Vec<u8> {
    v.into_iter().map(|b| b as u8).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn every_golden_case_matches_reference() {
    let g = Golden::load();
    assert_eq!(g.cases.len(), 77, "golden case count");
    let mut checked = 0;
    let mut per_op = std::collections::BTreeMap::<String, usize>::new();
    for case in &g.cases {
        let op = case["op"].as_str().unwrap().to_string();
        let sat = case["params"]["fbgemm_i16_saturation"]
            .as_bool()
            .unwrap_or(false);
        // Saturating cases: exact mode vs y_exact, both saturating modes vs y.
        // Every other conv must be unaffected by SaturateDepthwise (golden y came from a VNNI CPU).
        let modes: &[Accumulation] = match op.as_str() {
            "conv2d" if sat => &[
                Accumulation::Exact,
                Accumulation::SaturateDepthwise,
                Accumulation::SaturateAll,
            ],
            "conv2d" => &[Accumulation::Exact, Accumulation::SaturateDepthwise],
            _ => &[Accumulation::Exact],
        };
        for &mode in modes {
            let (got, want) = run_case(&g, case, mode);
            assert_eq!(got.len(), want.len(), "{} ({mode:?}): length", name(case));
            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                bad,
                0,
                "{} ({mode:?}): {bad} of {} elements differ",
                name(case),
                want.len()
            );
            assert_eq!(got, want, "{} ({mode:?})", name(case));
            checked += 1;
        }
        *per_op.entry(op).or_default() += 1;
    }
    println!(
        "golden: {} cases, {checked} case×mode checks, all bytes equal: {per_op:?}",
        g.cases.len()
    );
}

#[test]
fn saturating_cases_differ_between_modes() {
    // The saturation cases must actually exercise saturation: y != y_exact.
    let g = Golden::load();
    let sat: Vec<_> = g
        .cases
        .iter()
        .filter(|c| c["params"]["fbgemm_i16_saturation"].as_bool() == Some(true))
        .collect();
    assert_eq!(sat.len(), 2);
    for case in sat {
        assert_ne!(
            g.tensor(case, "y").u8(),
            g.tensor(case, "y_exact").u8(),
            "{}",
            name(case)
        );
    }
}

#[test]
fn add_ties_need_the_tail_rule() {
    // Sanity of the test data and of the rule: applying one formula to every element fails.
    let g = Golden::load();
    for case in g.cases.iter().filter(|c| name(c).starts_with("add_ties_")) {
        let p = &case["params"];
        let (a, b) = (g.tensor(case, "a").u8(), g.tensor(case, "b").u8());
        let (qa, qb, qo) = (qparams(&p["a"]), qparams(&p["b"]), qparams(&p["out"]));
        let relu = p["relu"].as_bool().unwrap();
        let y = g.tensor(case, "y").u8();
        let all_vector: Vec<u8> = (0..a.len())
            .map(|i| r::ops::add_element_vector(a[i], qa, b[i], qb, qo, relu))
            .collect();
        let all_scalar: Vec<u8> = (0..a.len())
            .map(|i| r::ops::add_element_scalar(a[i], qa, b[i], qb, qo, relu))
            .collect();
        assert!(
            all_vector != y || all_scalar != y,
            "{}: ties not exercised",
            name(case)
        );
        assert_eq!(r::add(&a, qa, &b, qb, qo, relu), y, "{}", name(case));
    }
}
