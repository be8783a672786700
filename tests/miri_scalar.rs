//! Small cases sized for Miri (`scripts/sanitizers.sh` runs this file under
//! `cargo +nightly miri test`): the scalar microkernels through their packers, the GEMM driver
//! (packing, blocking, rayon split, requant epilogue, strided A/C), im2col / grouped /
//! depthwise / 1×1 convolution and the element-wise and pooling ops, all on `Isa::Scalar`,
//! compared with `qkernels-ref`. Natively it is just one more fast test.
//!
//! Under Miri only `Isa::Scalar` runs: SIMD kernels are `#[target_feature]` code behind
//! runtime detection (which Miri answers from compile-time features, i.e. baseline x86-64
//! without AVX2), and they are checked under AddressSanitizer instead.

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::gemm::{self, GemmOptions, Matrix, PackedWeights};
use qkernels::{Accumulation, Isa, Pool2d, QParams, WeightQParams, ops, reference};
use qkernels_kernels::gemm::all_kernels;

/// Deterministic data without pulling `rand` through Miri.
fn seq(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn seq_i8(n: usize, seed: u32) -> Vec<i8> {
    seq(n, seed).into_iter().map(|b| b as i8).collect()
}

const XQ: QParams = QParams::new(0.05, 9);
const OQ: QParams = QParams::new(0.4, 100);

#[test]
fn scalar_microkernels_through_their_packers() {
    for kern in all_kernels().into_iter().filter(|k| k.isa == Isa::Scalar) {
        for (m, n, k) in [
            (1, 1, 1),
            (kern.mr, kern.nr, kern.kr + 3),
            (2, kern.nr - 1, 9),
        ] {
            let lda = k + 2;
            let a = seq((m - 1) * lda + k, 1);
            let w = seq_i8(n * k, 2);
            let mut pa = vec![0u8; (kern.a_panel_bytes)(k)];
            let mut pb = vec![0u8; (kern.b_panel_bytes)(k)];
            (kern.pack_a)(&a, lda, m, k, &mut pa);
            (kern.pack_b)(&w, k, n, k, &mut pb);
            let ldc = n + 1;
            let mut c = vec![7i32; (m - 1) * ldc + n];
            // SAFETY: panels packed by this kernel's packers for `k`; `c` holds `m` rows of
            // stride `ldc ≥ n`; `m ≤ MR`, `n ≤ NR`; scalar code runs on every CPU.
            unsafe {
                (kern.ukernel)(
                    kern.round_k(k),
                    pa.as_ptr(),
                    pb.as_ptr(),
                    c.as_mut_ptr(),
                    ldc,
                    m,
                    n,
                    true,
                )
            };
            let dense: Vec<u8> = (0..m).flat_map(|i| a[i * lda..][..k].to_vec()).collect();
            let want = reference::matmul_u8s8s32_ref(m, n, k, &dense, &w, kern.saturating);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(
                        c[i * ldc + j],
                        want[i * n + j].wrapping_add(7),
                        "{}",
                        kern.name
                    );
                }
            }
        }
    }
}

#[test]
fn scalar_gemm_driver() {
    // 24 rows on a 2-thread pool: the driver splits them into several M blocks run in
    // parallel.
    for (m, n, k, sat, per_channel) in [(3, 5, 7, false, false), (24, 6, 11, true, true)] {
        let a = seq(m * k, 3);
        let w = seq_i8(n * k, 4);
        let wq = if per_channel {
            WeightQParams::per_channel((0..n).map(|j| 0.01 + j as f64 * 1e-3).collect(), vec![1; n])
        } else {
            WeightQParams::per_tensor(0.02, -2)
        };
        let bias: Vec<f32> = (0..n).map(|j| j as f32 - 2.5).collect();
        let opts = GemmOptions {
            isa: Isa::Scalar,
            saturate_pairs: sat,
        };
        let pw = PackedWeights::with_options(&w, n, k, &wq, Some(&bias), &opts).unwrap();
        let mode = if sat {
            Accumulation::SaturateAll
        } else {
            Accumulation::Exact
        };
        let want = reference::linear(m, k, n, &a, XQ, &w, &wq, Some(&bias), OQ, true, mode);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut out = vec![0u8; m * n];
        pool.install(|| gemm::linear(&pw, &a, m, XQ, OQ, true, &mut out))
            .unwrap();
        assert_eq!(out, want);
        // Strided A and C through gemm_requant.
        let (lda, ldc) = (k + 3, n + 2);
        let mut sa = vec![0xFFu8; (m - 1) * lda + k];
        for i in 0..m {
            sa[i * lda..][..k].copy_from_slice(&a[i * k..][..k]);
        }
        let mut c = vec![0u8; (m - 1) * ldc + n];
        let am = Matrix::new(&sa, m, k, lda).unwrap();
        gemm::gemm_requant(&pw, &am, XQ, OQ, true, &mut c, ldc).unwrap();
        for i in 0..m {
            assert_eq!(&c[i * ldc..][..n], &want[i * n..][..n]);
        }
    }
    let mut c = vec![0i32; 4 * 3];
    let (a, w) = (seq(4 * 5, 5), seq_i8(3 * 5, 6));
    gemm::gemm_u8s8s32(Isa::Scalar, 4, 3, 5, &a, 5, &w, 5, &mut c, 3).unwrap();
    assert_eq!(c, reference::matmul_u8s8s32_ref(4, 3, 5, &a, &w, false));
}

#[test]
fn scalar_conv_paths() {
    let mut grouped = Conv2dParams::square(4, 6, 3, 1, 1);
    grouped.groups = 2;
    let mut depthwise = Conv2dParams::square(8, 8, 3, 1, 1);
    depthwise.groups = 8;
    let mut dilated = Conv2dParams::square(3, 2, 2, 1, 1);
    dilated.dilation_w = 2;
    let cases = [
        (
            Conv2dParams::square(3, 4, 3, 2, 1),
            Accumulation::Exact,
            5,
            6,
        ),
        (grouped, Accumulation::SaturateAll, 4, 4),
        (depthwise, Accumulation::SaturateDepthwise, 4, 5),
        (
            Conv2dParams::square(5, 3, 1, 1, 0),
            Accumulation::Exact,
            3,
            3,
        ),
        (dilated, Accumulation::Exact, 4, 5),
    ];
    for (i, (p, acc, h, w)) in cases.into_iter().enumerate() {
        let batch = if i == 0 { 2 } else { 1 };
        let x = seq(batch * h * w * p.in_channels, 10 + i as u32);
        let wt = seq_i8(
            p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w,
            20,
        );
        let wq = WeightQParams::per_channel(vec![0.01; p.out_channels], vec![0; p.out_channels]);
        let opts = ConvOptions {
            isa: Isa::Scalar,
            accumulation: acc,
        };
        let conv = Conv2d::with_options(p, &wt, &wq, None, &opts).unwrap();
        let (oh, ow) = conv.output_size(h, w).unwrap();
        let mut out = vec![0u8; batch * oh * ow * p.out_channels];
        conv.run(&x, batch, h, w, XQ, OQ, false, &mut out).unwrap();
        let geo = p.geometry(batch, h, w);
        let want = reference::conv2d_nhwc(&geo, &x, XQ, &wt, &wq, None, OQ, false, acc);
        assert_eq!(out, want, "case {i}: {p:?}");
    }
}

#[test]
fn scalar_ops() {
    let isa = Isa::Scalar;
    let n = 70; // one 64-element vector block + a scalar tail
    let a = seq(n, 30);
    let b = seq(n, 31);
    let (qa, qb) = (QParams::new(0.1, 3), QParams::new(0.07, 200));
    let mut y = vec![0u8; n];
    ops::add_u8_with_isa(isa, &a, qa, &b, qb, OQ, true, &mut y).unwrap();
    assert_eq!(y, reference::add(&a, qa, &b, qb, OQ, true));
    let x: Vec<f32> = (0..n)
        .map(|i| [f32::NAN, f32::INFINITY, -1e30, 2.5][i % 4] + i as f32 * 0.0)
        .chain((0..n).map(|i| i as f32 * 0.37 - 9.0))
        .collect();
    let mut q = vec![0u8; x.len()];
    ops::quantize_u8_with_isa(isa, &x, qa, &mut q).unwrap();
    assert_eq!(q, reference::quantize_u8(&x, qa));
    let mut qi = vec![0i8; x.len()];
    ops::quantize_i8_with_isa(isa, &x, QParams::new(0.1, -3), &mut qi).unwrap();
    assert_eq!(qi, reference::quantize_i8(&x, QParams::new(0.1, -3)));
    let mut f = vec![0f32; n];
    ops::dequantize_u8_with_isa(isa, &a, qa, &mut f).unwrap();
    assert_eq!(
        f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        reference::dequantize_u8(&a, qa)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    let (nb, h, w, c) = (1, 5, 6, 3);
    let x = seq(nb * h * w * c, 40);
    let p = Pool2d::square(3, 2, 1);
    let (want, oh, ow) = reference::max_pool2d_nhwc(&x, nb, h, w, c, &p);
    let mut y = vec![0u8; want.len()];
    assert_eq!(
        ops::max_pool2d_u8_with_isa(isa, &x, nb, h, w, c, &p, &mut y).unwrap(),
        (oh, ow)
    );
    assert_eq!(y, want);
    let mut y = vec![0u8; 2 * 2 * c];
    ops::adaptive_avg_pool2d_u8_with_isa(isa, &x, nb, h, w, c, 2, 2, qa, &mut y).unwrap();
    assert_eq!(
        y,
        reference::adaptive_avg_pool2d_nhwc(&x, nb, h, w, c, 2, 2, qa.zero_point)
    );
}
