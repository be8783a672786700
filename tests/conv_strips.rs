//! The column-strip path of small-channel convs (`gemm::gemm_requant_strips`, the RGB stem on
//! AVX-512 VNNI) against `qkernels_ref::conv2d_nhwc`, tolerance 0: input channels 1–7 (not
//! multiples of 4), kernels 1×1 to 7×7 (and non-square), strides 1–3, paddings 0–3, batch 1–2,
//! output heights below, at and above the 6-row tile (every tail), N of 64 and 128 (and 70 and
//! weight zero points, which fall back to im2col rows), ReLU or not, random qparams
//! (`common::RandomConv`). Every case
//! also runs with the path switched off and must give the same bytes. Fixed seeds.
//!
//! One `#[test]` only: `set_strips_enabled` is process-wide.

mod common;

use common::RandomConv;
use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::{Accumulation, Isa, WeightQParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn strips_battery_matches_reference() {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    let mut rng = StdRng::seed_from_u64(0x57_1295);
    let (mut cases, mut strips) = (0, 0);
    let shapes = [(7, 7), (3, 3), (5, 3), (1, 1), (2, 5), (7, 1)];
    for case in 0..120 {
        let (kh, kw) = shapes[case % shapes.len()];
        let ic = [1usize, 2, 3, 5, 6, 7][rng.gen_range(0..6)];
        let stride = rng.gen_range(1..=3);
        let pad = rng.gen_range(0..=3.min(kh.min(kw)));
        let oc = match case % 8 {
            0 => 70,
            1 | 2 => 128,
            _ => 64,
        };
        let w_zp = case % 11 == 5;
        let batch = rng.gen_range(1..=2);
        let (h, w) = (rng.gen_range(kh..kh + 20), rng.gen_range(kw..kw + 20));
        let p = Conv2dParams {
            in_channels: ic,
            out_channels: oc,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        };
        if p.output_size(h, w).is_err() {
            continue;
        }
        let case = RandomConv::new(&mut rng, &p, batch, h, w, w_zp);
        for isa in Isa::supported() {
            let opts = ConvOptions {
                isa,
                accumulation: Accumulation::Exact,
            };
            let conv =
                Conv2d::with_options(p, &case.wts, &case.wq, case.bias.as_deref(), &opts).unwrap();
            for on in [true, false] {
                qkernels::gemm::set_strips_enabled(on);
                let used = conv.uses_strips(batch, h, w);
                assert!(on || !used);
                strips += usize::from(used);
                let ctx = format!("{p:?} batch {batch} {h}x{w} isa {isa} strips {used}");
                case.check(&conv, (batch, h, w), &ctx);
            }
            qkernels::gemm::set_strips_enabled(true);
        }
        cases += 1;
    }
    assert!(cases > 100, "{cases} cases");
    if Isa::Avx512Vnni.is_supported() {
        assert!(strips > 50, "only {strips} of {cases} cases ran on strips");
        // The stem itself takes the path; an image so tall that a strip would pass 1 MiB keeps
        // the im2col rows (its strips would not stay in cache).
        let stem = Conv2dParams::square(3, 64, 7, 2, 3);
        let wq = WeightQParams::per_tensor(0.01, 0);
        let conv = Conv2d::with_options(
            stem,
            &vec![1i8; 64 * 3 * 49],
            &wq,
            None,
            &ConvOptions {
                isa: Isa::Avx512Vnni,
                accumulation: Accumulation::Exact,
            },
        )
        .unwrap();
        assert!(conv.uses_strips(1, 224, 224));
        assert!(!conv.uses_strips(1, 100_000, 16));
    }
}
