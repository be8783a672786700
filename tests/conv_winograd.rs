//! The exact Winograd F(2×2, 3×3) engine (exact AVX2, 3×3 stride-1 pad-1 convs) against
//! `qkernels_ref::conv2d_nhwc` / `qkernels_ref::add`, tolerance 0, and against the GEMM paths
//! (AVX2 with Winograd off, AVX-512 VNNI/IGEMM when supported): spatial sizes 1–9, 14, 56;
//! channels 3, 4, 17, 64 (and stage-size ones); input zero points 0, 255 and in between; bias or
//! none; ReLU or not; `run_add`; 1 and 2 threads. Plus the i16 GEMM kernel vs a scalar matmul.
//!
//! One `#[test]` touches `set_winograd_enabled` (process-wide).

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::{Accumulation, Isa, QParams, WeightQParams, reference as r};
use qkernels_kernels::winograd as wk;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn run_case(rng: &mut StdRng, ic: usize, oc: usize, batch: usize, h: usize, w: usize) -> bool {
    let p = Conv2dParams::square(ic, oc, 3, 1, 1);
    let x: Vec<u8> = (0..batch * h * w * ic).map(|_| rng.r#gen()).collect();
    let wts: Vec<i8> = (0..oc * ic * 9).map(|_| rng.r#gen()).collect();
    let wq = if rng.gen_bool(0.8) {
        WeightQParams::per_channel(
            (0..oc)
                .map(|_| 10f64.powf(rng.gen_range(-3.5..-2.0)))
                .collect(),
            vec![0; oc],
        )
    } else {
        WeightQParams::per_tensor(10f64.powf(rng.gen_range(-3.5..-2.0)), 0)
    };
    let bias: Option<Vec<f32>> = rng
        .gen_bool(0.7)
        .then(|| (0..oc).map(|_| rng.gen_range(-2.0f32..2.0)).collect());
    let zx = [0, 255, rng.gen_range(1..255)][rng.gen_range(0..3)];
    let xq = QParams::new(10f64.powf(rng.gen_range(-2.5..-1.0)), zx);
    let outq = QParams::new(10f64.powf(rng.gen_range(-1.0..0.5)), rng.gen_range(0..=255));
    let relu = rng.r#gen();
    let geo = p.geometry(batch, h, w);
    let want = r::conv2d_nhwc(
        &geo,
        &x,
        xq,
        &wts,
        &wq,
        bias.as_deref(),
        outq,
        relu,
        Accumulation::Exact,
    );
    let n_out = batch * h * w * oc;
    let skip: Vec<u8> = (0..n_out).map(|_| rng.r#gen()).collect();
    let skip_q = QParams::new(10f64.powf(rng.gen_range(-2.0..0.0)), rng.gen_range(0..=255));
    let add_q = QParams::new(10f64.powf(rng.gen_range(-2.0..0.0)), rng.gen_range(0..=255));
    let conv_noact = r::conv2d_nhwc(
        &geo,
        &x,
        xq,
        &wts,
        &wq,
        bias.as_deref(),
        outq,
        false,
        Accumulation::Exact,
    );
    let want_add = r::add(&conv_noact, outq, &skip, skip_q, add_q, relu);
    let mut isas = vec![Isa::Avx2];
    if Isa::Avx512Vnni.is_supported() {
        isas.push(Isa::Avx512Vnni);
    }
    let mut used = false;
    for isa in isas {
        let opts = ConvOptions {
            isa,
            accumulation: Accumulation::Exact,
        };
        let conv = Conv2d::with_options(p, &wts, &wq, bias.as_deref(), &opts).unwrap();
        for on in [true, false] {
            qkernels::winograd::set_winograd_enabled(on);
            let uses = conv.uses_winograd(batch, h, w);
            assert_eq!(uses, on && isa == Isa::Avx2, "{isa}");
            used |= uses;
            for threads in [1, 2] {
                let what = format!(
                    "ic {ic} oc {oc} batch {batch} {h}x{w} isa {isa} wino {on} threads {threads} zx {zx}"
                );
                let mut y = vec![0xA5u8; n_out + 1];
                pool(threads).install(|| {
                    conv.run(&x, batch, h, w, xq, outq, relu, &mut y).unwrap();
                });
                assert_eq!(&y[..n_out], &want[..], "{what}");
                assert_eq!(y[n_out], 0xA5, "wrote past the output: {what}");
                let mut y = vec![0u8; n_out];
                pool(threads).install(|| {
                    conv.run_add(
                        &x, batch, h, w, xq, outq, &skip, skip_q, add_q, relu, &mut y,
                    )
                    .unwrap();
                });
                assert_eq!(y, want_add, "run_add {what}");
            }
        }
    }
    qkernels::winograd::set_winograd_enabled(true);
    used
}

#[test]
fn winograd_matches_reference_and_gemm() {
    if !Isa::Avx2.is_supported() {
        eprintln!("note: AVX2 not supported on this CPU; Winograd tests skipped");
        return;
    }
    // Every size on the engine (its default skips calls with few tiles).
    qkernels::winograd::set_winograd_min_tiles(0);
    let mut rng = StdRng::seed_from_u64(0x3147_0007);
    let mut cases = 0;
    let sizes = [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 14];
    for &ic in &[3usize, 4, 17, 64] {
        for &oc in &[3usize, 4, 17, 64] {
            let h = sizes[rng.gen_range(0..sizes.len())];
            let w = sizes[rng.gen_range(0..sizes.len())];
            let batch = rng.gen_range(1..=2);
            assert!(run_case(&mut rng, ic, oc, batch, h, w));
            cases += 1;
        }
    }
    for &(ic, oc, batch, h, w) in &[
        (64usize, 64usize, 1usize, 56usize, 56usize),
        (128, 128, 1, 28, 28),
        (256, 256, 1, 14, 14),
        (512, 512, 1, 7, 7),
        (64, 64, 2, 9, 14),
        (17, 3, 1, 1, 1),
        (4, 17, 2, 56, 3),
    ] {
        assert!(run_case(&mut rng, ic, oc, batch, h, w));
        cases += 1;
    }
    // Not eligible: weight zero points, stride 2, pad 0.
    let ones = [1i8; 8 * 8 * 9];
    let c = avx2_exact(Conv2dParams::square(8, 8, 3, 1, 1), &ones, 3);
    assert!(!c.uses_winograd(1, 9, 9));
    for p in [
        Conv2dParams::square(8, 8, 3, 2, 1),
        Conv2dParams::square(8, 8, 3, 1, 0),
    ] {
        assert!(!avx2_exact(p, &ones, 0).uses_winograd(1, 9, 9));
    }
    assert!(cases >= 23);
    qkernels::winograd::set_winograd_min_tiles(36);
    let c = avx2_exact(Conv2dParams::square(8, 8, 3, 1, 1), &ones, 0);
    assert!(!c.uses_winograd(1, 7, 7) && c.uses_winograd(1, 14, 14));
}

#[test]
fn i16_gemm_kernel_matches_scalar_matmul() {
    let mut rng = StdRng::seed_from_u64(0x1616_0007);
    for &kc in &[2usize, 16, 64, 256, 1024] {
        for mr in 1..=wk::MR {
            for nr in [1usize, 7, 16] {
                let a: Vec<i16> = (0..wk::MR * kc)
                    .map(|_| rng.gen_range(-1020..=1020))
                    .collect();
                let bm: Vec<i16> = (0..kc * wk::NR)
                    .map(|_| rng.gen_range(-1152..=1152))
                    .collect(); // B[k][j] = bm[k·NR + j]
                let mut packed = vec![0i16; kc * wk::NR];
                for k in 0..kc {
                    for j in 0..wk::NR {
                        packed[(k / 2) * wk::NR * 2 + j * 2 + k % 2] = bm[k * wk::NR + j];
                    }
                }
                let rs = 20;
                let mut want = vec![0x5555i32; wk::MR * rs];
                for i in 0..mr {
                    for j in 0..nr {
                        want[i * rs + j] = (0..kc)
                            .map(|k| i32::from(a[i * kc + k]) * i32::from(bm[k * wk::NR + j]))
                            .fold(0i32, i32::wrapping_add);
                    }
                }
                let mut got = vec![0x5555i32; wk::MR * rs];
                wk::s16s16s32_gemm_scalar(kc, &a, &packed, &mut got, rs, mr, nr);
                assert_eq!(got, want, "scalar kc {kc} mr {mr} nr {nr}");
                #[cfg(target_arch = "x86_64")]
                if Isa::Avx2.is_supported() {
                    let mut got = vec![0x5555i32; wk::MR * rs];
                    // SAFETY: AVX2 checked; `a` holds MR rows of kc, `packed` one panel, `got`
                    // has MR rows of stride 20 ≥ 16 columns.
                    unsafe {
                        wk::s16s16s32_gemm_avx2_6x16c2(
                            kc,
                            a.as_ptr(),
                            packed.as_ptr(),
                            got.as_mut_ptr(),
                            rs,
                            mr,
                            nr,
                        )
                    };
                    assert_eq!(got, want, "avx2 kc {kc} mr {mr} nr {nr}");
                }
            }
        }
    }
}

/// An exact-AVX2 conv with per-tensor weights of zero point `w_zp`, no bias.
fn avx2_exact(p: Conv2dParams, w: &[i8], w_zp: i32) -> Conv2d {
    let opts = ConvOptions {
        isa: Isa::Avx2,
        accumulation: Accumulation::Exact,
    };
    let wq = WeightQParams::per_tensor(0.01, w_zp);
    Conv2d::with_options(p, w, &wq, None, &opts).unwrap()
}
