//! The indirect (IGEMM) conv path against `qkernels_ref::conv2d_nhwc`, tolerance 0: kernel
//! sizes 1/3/5 (and non-square), strides 1/2, paddings, dilation 2, `IC/G` ∈ {4, 8, 64, 68},
//! batch 1–2, odd spatial sizes (M tails, one-row tails, M = 1), N tails, groups, and weight
//! zero points (which fall back to the im2col-packing path). Every case also runs with the
//! IGEMM path switched off and must give the same bytes. Fixed seeds.
//!
//! One `#[test]` only: `set_igemm_enabled` is process-wide.

mod common;

use common::RandomConv;
use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::{Accumulation, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[allow(clippy::too_many_arguments)]
fn run_case(
    rng: &mut StdRng,
    p: Conv2dParams,
    batch: usize,
    h: usize,
    w: usize,
    w_zp: bool,
    isas: &[Isa],
) -> bool {
    let case = RandomConv::new(rng, &p, batch, h, w, w_zp);
    let mut used = false;
    for &isa in isas {
        let opts = ConvOptions {
            isa,
            accumulation: Accumulation::Exact,
        };
        let conv =
            Conv2d::with_options(p, &case.wts, &case.wq, case.bias.as_deref(), &opts).unwrap();
        for on in [true, false] {
            qkernels::gemm::set_igemm_enabled(on);
            used |= conv.uses_igemm(batch, h, w);
            let ctx = format!("{p:?} batch {batch} {h}x{w} isa {isa} igemm {on} w_zp {w_zp}");
            case.check(&conv, (batch, h, w), &ctx);
        }
        qkernels::gemm::set_igemm_enabled(true);
    }
    used
}

#[test]
fn igemm_battery_matches_reference() {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    let isas = Isa::supported();
    let vnni = Isa::Avx512Vnni.is_supported();
    let mut rng = StdRng::seed_from_u64(0x16e3_0007);
    let mut cases = 0;
    let mut igemm = 0;
    // (kh, kw)
    let kernels = [(1, 1), (3, 3), (5, 5), (3, 1), (1, 5)];
    for &(kh, kw) in &kernels {
        for stride in [1, 2] {
            for &ic in &[4usize, 8, 64, 68] {
                let pad = rng.gen_range(0..=kh.max(kw) / 2 + 1);
                let dil = if rng.gen_bool(0.3) { 2 } else { 1 };
                let oc = [8usize, 64, 70, 130][rng.gen_range(0..4)];
                let batch = rng.gen_range(1..=2);
                let (h, w) = (rng.gen_range(3..=13) | 1, rng.gen_range(3..=13) | 1);
                let p = Conv2dParams {
                    in_channels: ic,
                    out_channels: oc,
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: stride,
                    stride_w: stride,
                    pad_h: pad,
                    pad_w: pad,
                    dilation_h: dil,
                    dilation_w: dil,
                    groups: 1,
                };
                if p.output_size(h, w).is_err() {
                    continue;
                }
                igemm += usize::from(run_case(&mut rng, p, batch, h, w, false, &isas));
                cases += 1;
            }
        }
    }
    // Explicit shapes: ResNet stage-1 conv (scaled down), M tails of every length mod MR, a
    // one-row tail (M = 7 = 6 + 1), M = 1, dilation 2 with padding, groups with IC/G % 4 == 0,
    // and weight zero points (fallback).
    let sq = Conv2dParams::square;
    let extra: Vec<(Conv2dParams, usize, usize, usize, bool)> = vec![
        (sq(64, 64, 3, 1, 1), 1, 14, 14, false),
        (sq(64, 128, 3, 2, 1), 2, 9, 9, false),
        (sq(64, 128, 1, 2, 0), 1, 11, 11, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 7, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 8, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 9, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 10, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 11, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 1, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 2, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 3, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 4, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 5, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 6, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 12, false),
        (sq(8, 16, 3, 1, 1), 1, 1, 13, false),
        // ResNet stage 4: M = 49 = 7·6 + 4 + 3
        (sq(64, 64, 3, 1, 1), 1, 7, 7, false),
        (sq(64, 128, 3, 2, 1), 1, 13, 13, false),
        (sq(8, 16, 3, 1, 0), 1, 3, 3, false),
        (
            Conv2dParams {
                dilation_h: 2,
                dilation_w: 2,
                ..sq(68, 64, 3, 1, 2)
            },
            2,
            7,
            9,
            false,
        ),
        (
            Conv2dParams {
                groups: 2,
                ..sq(16, 24, 3, 1, 1)
            },
            1,
            7,
            7,
            false,
        ),
        (sq(64, 64, 3, 1, 1), 1, 9, 9, true),
        (sq(4, 64, 5, 2, 2), 2, 13, 11, true),
    ];
    for (p, batch, h, w, w_zp) in extra {
        let used = run_case(&mut rng, p, batch, h, w, w_zp, &isas);
        if vnni {
            let m = batch * p.output_size(h, w).unwrap().0 * p.output_size(h, w).unwrap().1;
            assert_eq!(used, !w_zp && m > 1, "{p:?} {batch} {h}x{w} w_zp {w_zp}");
        }
        igemm += usize::from(used);
        cases += 1;
    }
    assert!(cases > 40, "{cases} cases");
    if vnni {
        assert!(igemm > 40, "only {igemm} of {cases} cases ran on IGEMM");
    }
}
